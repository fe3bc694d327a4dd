"""The durable writer: WAL first (fsync, then acknowledge), lake segments in batches.

``append`` returns once the rows are fsynced in this process's write-ahead log; they are then
buffered and written to the lake by ``flush`` (explicit, when the buffer passes a row or byte
bound, or from ``maybe_flush`` once the oldest buffered row is older than ``max_age_s``). The
append that fills the buffer is not logged: it is written to the lake, fsynced, with the
buffer before it returns, so it is as durable when acknowledged and costs no log record. A
flush seals the current log and starts a new one, so appends carry on while the lake write
runs; the sealed log is deleted only after its rows are in the lake. Opening a writer replays
every unlocked log in ``<data>/wal/`` (left by this or any crashed process) into the lake
first; replaying twice is harmless because the lake drops keys it already holds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from store.lake import DEFAULT_SPECS, Lake, TableSpec, WriteResult, conform
from store.wal import WalFile, fsync_dir, list_wal_files, replay, try_lock

log = logging.getLogger(__name__)

WAL_DIR_NAME = "wal"


@dataclass(frozen=True)
class Backlog:
    """Rows and bytes acknowledged (in the WAL) but not yet in the lake."""

    num_rows: int
    num_bytes: int
    oldest_age_s: float


@dataclass(frozen=True)
class FlushResult:
    """Per-table results of one flush (or one recovery)."""

    results: dict[str, WriteResult] = field(default_factory=dict)
    num_wal_files_deleted: int = 0

    @property
    def num_written(self) -> int:
        """Rows written to new segments, over all tables."""
        return sum(r.num_written for r in self.results.values())

    @property
    def num_duplicates(self) -> int:
        """Rows dropped as already-seen keys, over all tables."""
        return sum(r.num_duplicates for r in self.results.values())


class _Buffer:
    """Acknowledged rows per table, and the logs that hold them."""

    def __init__(self) -> None:
        self.tables: dict[str, list[pa.Table]] = {}
        self.num_rows = 0
        self.num_bytes = 0
        self.since: float | None = None
        self.wals: list[WalFile] = []

    def add(self, table_name: str, table: pa.Table) -> None:
        self.tables.setdefault(table_name, []).append(table)
        self.num_rows += table.num_rows
        self.num_bytes += table.nbytes
        if self.since is None:
            self.since = time.monotonic()

    def absorb(self, older: _Buffer) -> None:
        """Put an older buffer (a failed flush) back in front of this one."""
        for name, tables in older.tables.items():
            self.tables[name] = tables + self.tables.get(name, [])
        self.num_rows += older.num_rows
        self.num_bytes += older.num_bytes
        self.since = older.since if self.since is None else min(self.since, older.since or 0.0)
        self.wals = older.wals + self.wals


def _merge(results: dict[str, WriteResult], table_name: str, result: WriteResult) -> None:
    prev = results.get(table_name)
    if prev is None:
        results[table_name] = result
    else:
        results[table_name] = WriteResult(
            prev.num_written + result.num_written,
            prev.num_duplicates + result.num_duplicates,
            prev.segments + result.segments,
        )


class LakeWriter:
    """Durable appends to the lake: WAL + fsync per append (or the lake write itself, for the
    append that fills the buffer), batched segment writes.

    ``where`` is a data directory (its Parquet lake) or a :class:`store.lake.Lake` to write
    through, such as another store's tables; the logs go to ``<its data_dir>/wal``.
    """

    def __init__(
        self,
        where: Lake | Path | str,
        *,
        specs: Sequence[TableSpec] = DEFAULT_SPECS,
        max_buffer_rows: int = 50_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        max_age_s: float = 5.0,
        recover: bool = True,
    ) -> None:
        self.lake = where if isinstance(where, Lake) else Lake(where, specs)
        self.wal_dir = self.lake.data_dir / WAL_DIR_NAME
        self.max_buffer_rows = max_buffer_rows
        self.max_buffer_bytes = max_buffer_bytes
        self.max_age_s = max_age_s
        self._lock = threading.Lock()  # guards _buffer and _wal
        self._flush_lock = threading.Lock()  # one lake write at a time
        self._buffer = _Buffer()
        self._in_flight = _Buffer()
        self._wal: WalFile | None = None
        self._closed = False
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.lake.remove_stale_temp_files()
        self.recovered = self.recover() if recover else FlushResult()
        if self.recovered.num_wal_files_deleted:
            log.info(
                "replayed %d log(s) into %s: %d rows written, %d already there",
                self.recovered.num_wal_files_deleted,
                self.lake.describe(),
                self.recovered.num_written,
                self.recovered.num_duplicates,
            )

    def __enter__(self) -> LakeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def append(self, table_name: str, table: pa.Table) -> None:
        """Durably log rows (fsynced on return), then buffer them for the lake."""
        self.append_many([(table_name, table)])

    def append_many(self, records: Iterable[tuple[str, pa.Table]]) -> None:
        """Make several tables durable with one fsync, then buffer them for the lake.

        Rows are durable when this returns: fsynced in the log, or, when they fill the buffer,
        in the lake's segments, which are written with the buffer before this returns. Those
        need no log record of their own (a log covers the time between acknowledgement and the
        lake write, and here there is none); if the lake write fails, they are not kept and
        the error is raised.
        """
        conformed = [
            (name, conformed)
            for name, table in records
            if (conformed := self._conform(name, table)).num_rows
        ]
        if not conformed:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("LakeWriter is closed")
            full = (
                self._buffer.num_rows + sum(t.num_rows for _, t in conformed)
                >= self.max_buffer_rows
                or self._buffer.num_bytes + sum(t.nbytes for _, t in conformed)
                >= self.max_buffer_bytes
            )
            if not full:
                if self._wal is None:
                    self._wal = WalFile.create(self.wal_dir)
                    self._buffer.wals.append(self._wal)
                self._wal.append_many(conformed)
                for name, table in conformed:
                    self._buffer.add(name, table)
        if full:
            self.flush(unlogged=conformed)

    def maybe_flush(self) -> FlushResult | None:
        """Flush if the oldest buffered row is older than ``max_age_s`` (call from a timer)."""
        with self._lock:
            since = self._buffer.since
        if since is None or time.monotonic() - since < self.max_age_s:
            return None
        return self.flush()

    def flush(self, *, unlogged: Sequence[tuple[str, pa.Table]] = ()) -> FlushResult:
        """Write every buffered row to the lake, then delete the logs that held them.
        ``unlogged`` rows (in no log) are written after the buffered ones; if the write fails,
        the buffered rows are kept and these are not."""
        with self._flush_lock:
            with self._lock:
                sealed, self._buffer = self._buffer, _Buffer()
                self._wal = None
                self._in_flight = sealed
            tables = {name: list(parts) for name, parts in sealed.tables.items()}
            for name, table in unlogged:
                tables.setdefault(name, []).append(table)
            results: dict[str, WriteResult] = {}
            try:
                for name, parts in tables.items():
                    _merge(results, name, self.lake.write(name, pa.concat_tables(parts)))
            except BaseException:
                with self._lock:
                    self._buffer.absorb(sealed)
                    self._in_flight = _Buffer()
                raise
            for wal in sealed.wals:
                wal.close(delete=True)
            with self._lock:
                self._in_flight = _Buffer()
            return FlushResult(results, len(sealed.wals))

    def backlog(self) -> Backlog:
        """Rows/bytes acknowledged but not yet in the lake (for backpressure)."""
        with self._lock:
            buffers = (self._buffer, self._in_flight)
            since = [b.since for b in buffers if b.since is not None]
            return Backlog(
                num_rows=sum(b.num_rows for b in buffers),
                num_bytes=sum(b.num_bytes for b in buffers),
                oldest_age_s=time.monotonic() - min(since) if since else 0.0,
            )

    def recover(self) -> FlushResult:
        """Replay every unlocked WAL file into the lake and delete it."""
        results: dict[str, WriteResult] = {}
        deleted = 0
        for stale in self.wal_dir.glob(".wal-*.tmp"):
            if (handle := try_lock(stale)) is not None:
                stale.unlink(missing_ok=True)
                handle.close()
        for path in list_wal_files(self.wal_dir):
            handle = try_lock(path)
            if handle is None:
                continue  # a live writer owns it
            with handle:
                if self._replay_file(path, results):
                    path.unlink(missing_ok=True)
                    fsync_dir(self.wal_dir)
                    deleted += 1
        return FlushResult(results, deleted)

    def _replay_file(self, path: Path, results: dict[str, WriteResult]) -> bool:
        """Write one log's records to the lake; False if it must be kept (unknown table)."""
        pending: dict[str, list[pa.Table]] = {}
        num_pending = 0
        complete = True

        def drain() -> None:
            for name, tables in pending.items():
                _merge(results, name, self.lake.write(name, pa.concat_tables(tables)))
            pending.clear()

        for record in replay(path):
            if record.table_name not in self.lake.specs:
                log.error("WAL %s: record for unknown table %r kept", path, record.table_name)
                complete = False
                continue
            pending.setdefault(record.table_name, []).append(record.table)
            num_pending += record.table.num_rows
            if num_pending >= self.max_buffer_rows:
                drain()
                num_pending = 0
        drain()
        return complete

    def _conform(self, table_name: str, table: pa.Table) -> pa.Table:
        return conform(self.lake.spec(table_name), table)

    def close(self) -> None:
        """Flush and release the WAL; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.flush()
        finally:
            with self._lock, contextlib.suppress(OSError):
                for wal in self._buffer.wals:
                    wal.close()  # kept on disk: the next writer replays it
