"""What both receiver transports share: backpressure, decoding in worker processes, group commit.

A request goes: authorize (token -> project) -> refuse when the log's backlog is over its bound
-> decode (in a pool of worker processes, because decoding is pure-Python CPU work and the GIL
would otherwise cap the receiver at one core) -> commit. Commits from all requests go through
one queue to one thread that writes every waiting batch to the WAL with a single fsync and only
then resolves each request's future, so concurrent senders share fsyncs and a 2xx/OK always
means "fsynced". A second thread flushes the log to the store (the Parquet lake, or ClickHouse
with ``store.clickhouse.writer.ClickHouseWriter``) when it is old or large; a failed flush leaves
the rows in the log and is retried with backoff (1 s, doubling, at most
:data:`FLUSH_RETRY_MAX_S`), while the backlog bound turns senders away.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from ingest.metrics import ReceiverMetrics
from ingest.receiver_config import Limits, TokenTable, check_project
from ingest.receiver_decode import BodyKind, DecodeOutcome, decode_body, warm_up, watch_parent
from ingest.redaction import RedactionPolicy
from store.schema import DEFAULT_PROJECT
from store.writer import Backlog, LakeWriter

log = logging.getLogger(__name__)

_NEVER = 2**62  # buffer bounds handed to LakeWriter: the flusher thread decides, not append
#: The longest wait between two attempts of a failing flush (the store is down).
FLUSH_RETRY_MAX_S = 30.0


class OpenWriter(Protocol):
    """Opens the writer commits go through: ``LakeWriter`` (Parquet) or a subclass of it."""

    def __call__(
        self,
        data_dir: Path | str,
        /,
        *,
        max_buffer_rows: int,
        max_buffer_bytes: int,
        max_age_s: float,
    ) -> LakeWriter: ...


class Overloaded(Exception):
    """The log's backlog is over its bound: answer 429 / UNAVAILABLE with a retry delay."""


class Unavailable(Exception):
    """The receiver cannot take this request now (overloaded, closing, log write failed): retry."""


@dataclass
class _Commit:
    tables: list[tuple[str, pa.Table]]
    num_rows: int
    num_bytes: int
    future: concurrent.futures.Future[None]


class Ingestor:
    """Auth, backpressure, decoding and durable group commits for the HTTP and gRPC servers."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        tokens: Mapping[str, str] | None = None,
        project: str = DEFAULT_PROJECT,
        limits: Limits | None = None,
        metrics: ReceiverMetrics | None = None,
        redaction: RedactionPolicy | None = None,
        open_writer: OpenWriter = LakeWriter,
    ) -> None:
        """``open_writer`` opens the store's writer in ``data_dir`` (default: the Parquet lake)."""
        self.redaction = redaction or RedactionPolicy()
        self.limits = (limits or Limits()).validated()
        self.tokens = TokenTable(tokens or {}, check_project(project, "project", 1))
        self.metrics = metrics or ReceiverMetrics()
        self.writer = open_writer(
            data_dir,
            max_buffer_rows=_NEVER,
            max_buffer_bytes=_NEVER,
            max_age_s=self.limits.flush_max_age_s,
        )
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pending_rows = 0
        self._pending_bytes = 0
        self._inflight_bytes = 0
        self._closed = False
        self._pool = self._new_pool()
        self._queue: queue.SimpleQueue[_Commit | None] = queue.SimpleQueue()
        self._stop_flusher = threading.Event()
        self._committer = threading.Thread(target=self._commit_loop, name="flywheel-commit")
        self._flusher = threading.Thread(target=self._flush_loop, name="flywheel-flush")
        self._committer.start()
        self._flusher.start()
        self.metrics.watch(self.writer.backlog, lambda: self._pending_rows)

    def _new_pool(self) -> concurrent.futures.Executor:
        workers = self.limits.decode_workers
        if workers == 0:
            return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flywheel-decode")
        # spawn: the gRPC server's threads make fork unsafe.
        pool = concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=watch_parent,
            initargs=(os.getpid(),),
        )
        for future in [pool.submit(warm_up) for _ in range(workers)]:
            future.result()
        return pool

    # -- admission ---------------------------------------------------------------------------

    def project_for(self, authorization: str | None) -> str | None:
        """The project a request's credentials map to; None means 401/UNAUTHENTICATED."""
        return self.tokens.project_for(authorization)

    def overload_reason(self, extra_bytes: int = 0) -> str | None:
        """Why a request of ``extra_bytes`` must wait (backlog over its bound), or None."""
        backlog = self.writer.backlog()
        with self._lock:
            return self._overload(backlog, extra_bytes)

    def _overload(self, backlog: Backlog, extra_bytes: int) -> str | None:
        rows = backlog.num_rows + self._pending_rows
        queued = backlog.num_bytes + self._pending_bytes + self._inflight_bytes
        if rows >= self.limits.max_backlog_rows:
            return f"{rows} rows wait to be written (bound {self.limits.max_backlog_rows}); retry"
        # A request that fits nowhere is still taken when nothing else waits.
        if queued and queued + extra_bytes >= self.limits.max_backlog_bytes:
            return (
                f"{queued} bytes wait to be written (bound {self.limits.max_backlog_bytes}); retry"
            )
        return None

    @contextlib.contextmanager
    def admitted(self, num_bytes: int) -> Iterator[None]:
        """Count a request body against the backlog bound while it is read and decoded.

        Raises Overloaded (429 / UNAVAILABLE) when the backlog, with this body, is over it.
        """
        backlog = self.writer.backlog()
        with self._lock:
            if (reason := self._overload(backlog, num_bytes)) is not None:
                raise Overloaded(reason)
            self._inflight_bytes += num_bytes
        try:
            yield
        finally:
            with self._lock:
                self._inflight_bytes -= num_bytes

    @property
    def retry_after_s(self) -> int:
        """Seconds a throttled sender should wait: about one flush."""
        return max(1, math.ceil(self.limits.flush_max_age_s))

    # -- work --------------------------------------------------------------------------------

    def decode(
        self, body: bytes, encoding: str, kind: BodyKind, project: str, source: str
    ) -> concurrent.futures.Future[DecodeOutcome]:
        """Decode a body in the worker pool; a dead worker fails the future with Unavailable."""
        args = (
            body,
            encoding,
            kind,
            project,
            self.limits.max_decoded_bytes,
            source,
            self.redaction,
        )
        with self._lock:
            pool = self._pool
        try:
            inner = pool.submit(decode_body, *args)
        except BrokenProcessPool:
            self._replace_pool(pool)
            raise Unavailable("a decode worker died; retry") from None
        except RuntimeError as exc:  # the pool is shut down
            raise Unavailable(f"receiver is shutting down ({exc}); retry") from None
        outer: concurrent.futures.Future[DecodeOutcome] = concurrent.futures.Future()

        def relay(done: concurrent.futures.Future[DecodeOutcome]) -> None:
            if done.cancelled():
                outer.set_exception(Unavailable("receiver is shutting down; retry"))
            elif isinstance(done.exception(), BrokenProcessPool):
                # Not from this callback's thread: it belongs to the pool being replaced.
                threading.Thread(target=self._replace_pool, args=(pool,), daemon=True).start()
                outer.set_exception(Unavailable("a decode worker died; retry"))
            elif (exc := done.exception()) is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(done.result())

        inner.add_done_callback(relay)
        return outer

    def _replace_pool(self, broken: concurrent.futures.Executor) -> None:
        with self._pool_lock:
            with self._lock:
                if self._pool is not broken or self._closed:
                    return
            log.error("a decode worker process died; starting a new pool")
            broken.shutdown(wait=False, cancel_futures=True)
            fresh = self._new_pool()
            with self._lock:
                self._pool = fresh

    def commit(self, tables: list[tuple[str, pa.Table]]) -> concurrent.futures.Future[None]:
        """Queue rows for the next group commit; the future resolves after their fsync."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        num_rows = sum(t.num_rows for _, t in tables)
        if not num_rows:
            future.set_result(None)
            return future
        num_bytes = sum(t.nbytes for _, t in tables)
        with self._lock:  # held while queueing, so nothing lands behind close()'s sentinel
            if self._closed:
                raise Unavailable("receiver is shutting down; retry")
            self._pending_rows += num_rows
            self._pending_bytes += num_bytes
            self._queue.put(_Commit(tables, num_rows, num_bytes, future))
        return future

    def backlog(self) -> Backlog:
        """The writer's backlog (acknowledged rows not yet in the store)."""
        return self.writer.backlog()

    @property
    def pending_rows(self) -> int:
        """Rows queued for the next group commit."""
        return self._pending_rows

    def healthy(self) -> bool:
        """Whether the commit and flush threads are running."""
        return self._committer.is_alive() and self._flusher.is_alive() and not self._closed

    # -- threads ---------------------------------------------------------------------------

    def _commit_loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            num_rows = first.num_rows
            while num_rows < self.limits.max_group_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                group.append(item)
                num_rows += item.num_rows
            self._write_group(group)

    def _write_group(self, group: list[_Commit]) -> None:
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            by_table: dict[str, list[pa.Table]] = {}
            for commit in group:
                for name, table in commit.tables:
                    by_table.setdefault(name, []).append(table)
            records = [(name, pa.concat_tables(tables)) for name, tables in by_table.items()]
            self.writer.append_many(records)
        except BaseException as exc:  # handed to every waiting request; the thread lives on
            log.exception("group commit of %d rows failed", sum(c.num_rows for c in group))
            failure = exc
        else:
            self.metrics.fsync_seconds.observe(time.perf_counter() - started)
            self.metrics.group_requests.observe(len(group))
        with self._lock:
            self._pending_rows -= sum(c.num_rows for c in group)
            self._pending_bytes -= sum(c.num_bytes for c in group)
        for commit in group:
            if failure is None:
                commit.future.set_result(None)
            else:
                commit.future.set_exception(Unavailable(f"could not write the log: {failure}"))

    def _flush_loop(self) -> None:
        interval = min(0.25, self.limits.flush_max_age_s / 4)
        failures = 0
        while not self._stop_flusher.wait(interval):
            try:
                self.flush_if_due()
            except Exception:
                failures += 1
                delay = min(FLUSH_RETRY_MAX_S, 2.0 ** (failures - 1))
                self.metrics.flush_errors.inc()
                log.exception(
                    "flush failed (%d in a row); the rows stay in the WAL, retrying in %.0f s",
                    failures,
                    delay,
                )
                self._stop_flusher.wait(delay)
            else:
                failures = 0

    def flush_if_due(self) -> None:
        """Flush to the store if the backlog is old (``maybe_flush``) or big."""
        backlog = self.writer.backlog()
        if backlog.num_rows == 0:
            return
        started = time.perf_counter()
        if (
            backlog.num_rows >= self.limits.flush_rows
            or backlog.num_bytes >= self.limits.flush_bytes
        ):
            result = self.writer.flush()
        else:
            maybe = self.writer.maybe_flush()
            if maybe is None:
                return
            result = maybe
        self.metrics.flush_seconds.observe(time.perf_counter() - started)
        self.metrics.flush_rows.inc(result.num_written)

    def close(self) -> None:
        """Finish queued commits, stop the threads and the pool, flush and close the writer."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._committer.join()
        self._stop_flusher.set()
        self._flusher.join()
        self._pool.shutdown(wait=True, cancel_futures=True)
        started = time.perf_counter()
        self.writer.close()
        log.info("writer flushed and closed in %.2f s", time.perf_counter() - started)
