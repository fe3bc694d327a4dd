"""The Parquet lake: immutable, date-partitioned segments with key dedup and compaction.

Layout: ``<data>/<table>/date=YYYY-MM-DD/seg-<ns>-<random>.parquet``, the date being the UTC
day of the table's time column. A segment is written to ``.seg-*.parquet.tmp`` (which no
``*.parquet`` glob matches), fsynced and renamed into place, so readers only ever see whole
files. Writers from different processes (``flywheel serve``, ``flywheel ingest``) serialize
on an exclusive ``flock`` of ``<data>/.lake.lock`` while they dedup and write.

Dedup keeps the first copy of a key: within a batch, the first row; against the lake, the row
already stored. Compaction merges a partition's small segments, renames the merged segment into
place and only then unlinks the inputs, so a crash never loses rows; it may briefly leave both
(readers can see a row twice for that instant), and the next compaction removes such copies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from store.schema import ANNOTATION_SCHEMA, FEEDBACK_SCHEMA, SPAN_SCHEMA
from store.wal import fsync_dir

log = logging.getLogger(__name__)

LOCK_NAME = ".lake.lock"
PARTITION_PREFIX = "date="
TEMP_GLOB = ".seg-*.parquet.tmp"
ROW_GROUP_ROWS = 128 * 1024
COMPRESSION = "zstd"
_NS_PER_DAY = 86_400 * 10**9
_ROW_INDEX = "__flywheel_row"


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its name (the folder), schema, unique key and partitioning time column."""

    name: str
    schema: pa.Schema
    key_columns: tuple[str, ...]
    time_column: str


SPANS = TableSpec("spans", SPAN_SCHEMA, ("trace_id", "span_id"), "start_time")
FEEDBACK = TableSpec("feedback", FEEDBACK_SCHEMA, ("feedback_id",), "time")
ANNOTATIONS = TableSpec("annotations", ANNOTATION_SCHEMA, ("annotation_id",), "time")
DEFAULT_SPECS: tuple[TableSpec, ...] = (SPANS, FEEDBACK, ANNOTATIONS)


@dataclass(frozen=True)
class WriteResult:
    """Rows written to new segments and rows dropped as already-seen keys."""

    num_written: int
    num_duplicates: int
    segments: tuple[Path, ...] = ()


@dataclass(frozen=True)
class CompactResult:
    """What one compaction pass did."""

    num_partitions: int
    num_segments_in: int
    num_segments_out: int
    num_rows: int
    num_duplicates: int


def conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """Cast a table to the spec's schema: columns reordered and cast, missing ones null, extras dropped."""
    columns = []
    for field in spec.schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            if not column.type.equals(field.type):
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(
                        f"{spec.name}.{field.name}: cannot cast {column.type} to {field.type}: {exc}"
                    ) from exc
        else:
            column = pa.nulls(table.num_rows, field.type)
        if not field.nullable and column.null_count:
            raise ValueError(f"{spec.name}.{field.name}: {column.null_count} null value(s)")
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=spec.schema)


def dedup_first(table: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """Keep the first row of each key, in the original order."""
    if table.num_rows == 0:
        return table
    indexed = table.select(list(key_columns)).append_column(
        _ROW_INDEX, pa.array(np.arange(table.num_rows, dtype=np.int64))
    )
    firsts = indexed.group_by(list(key_columns), use_threads=False).aggregate([(_ROW_INDEX, "min")])
    keep = pc.sort_indices(firsts.column(f"{_ROW_INDEX}_min"))
    if len(keep) == table.num_rows:
        return table
    return table.take(pc.take(firsts.column(f"{_ROW_INDEX}_min"), keep))


def partition_of(day: int) -> str:
    """Partition folder name for a day number since the Unix epoch."""
    return PARTITION_PREFIX + (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def split_by_day(table: pa.Table, time_column: str) -> Iterator[tuple[str, pa.Table]]:
    """Split rows by the UTC date of ``time_column``, yielding (partition name, rows)."""
    if table.num_rows == 0:
        return
    ns = table.column(time_column).cast(pa.int64()).to_numpy()
    days = np.floor_divide(ns, _NS_PER_DAY)
    for day in np.unique(days):
        yield partition_of(int(day)), table.filter(pa.array(days == day))


class Lake:
    """The lake under one data directory; write and compact tables described by TableSpecs."""

    def __init__(self, data_dir: Path | str, specs: Sequence[TableSpec] = DEFAULT_SPECS) -> None:
        self.data_dir = Path(data_dir)
        self.specs = {spec.name: spec for spec in specs}

    def spec(self, table_name: str) -> TableSpec:
        """The spec of a table, or a ValueError naming the known ones."""
        try:
            return self.specs[table_name]
        except KeyError:
            raise ValueError(
                f"unknown lake table {table_name!r}; known: {sorted(self.specs)}"
            ) from None

    def table_dir(self, table_name: str) -> Path:
        """The folder holding a table's partitions."""
        return self.data_dir / self.spec(table_name).name

    def glob(self, table_name: str) -> str:
        """The glob matching every segment of a table (what readers scan)."""
        return str(self.table_dir(table_name).resolve() / f"{PARTITION_PREFIX}*" / "*.parquet")

    def partitions(self, table_name: str) -> list[str]:
        """Partition folder names of a table, sorted."""
        root = self.table_dir(table_name)
        if not root.is_dir():
            return []
        return sorted(
            p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(PARTITION_PREFIX)
        )

    def list_segments(self, table_name: str, partition: str | None = None) -> list[Path]:
        """Segment files of a table (or one partition), oldest name first."""
        parts = [partition] if partition is not None else self.partitions(table_name)
        root = self.table_dir(table_name)
        segments: list[Path] = []
        for part in parts:
            segments.extend(sorted((root / part).glob("*.parquet")))
        return segments

    def has_data(self, table_name: str) -> bool:
        """Whether the table has at least one segment."""
        root = self.table_dir(table_name)
        return root.is_dir() and next(root.glob(f"{PARTITION_PREFIX}*/*.parquet"), None) is not None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lake's exclusive writer lock (across processes and threads)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A fresh open file description per acquisition: flock then excludes threads too.
        with open(self.data_dir / LOCK_NAME, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def write(self, table_name: str, table: pa.Table) -> WriteResult:
        """Conform, dedup (in batch and against the lake) and write rows as new segments."""
        spec = self.spec(table_name)
        rows = dedup_first(conform(spec, table), spec.key_columns)
        num_duplicates = table.num_rows - rows.num_rows
        num_written = 0
        segments: list[Path] = []
        with self.locked():
            for partition, part_rows in split_by_day(rows, spec.time_column):
                existing = self.list_segments(table_name, partition)
                fresh = _drop_existing(part_rows, existing, spec.key_columns)
                num_duplicates += part_rows.num_rows - fresh.num_rows
                if fresh.num_rows == 0:
                    continue
                segments.append(self._write_segment(spec, partition, fresh))
                num_written += fresh.num_rows
        return WriteResult(num_written, num_duplicates, tuple(segments))

    def compact(
        self,
        table_name: str,
        *,
        min_segments: int = 4,
        max_segment_bytes: int = 256 * 1024 * 1024,
    ) -> CompactResult:
        """Merge each partition's small segments into one when there are at least ``min_segments``."""
        spec = self.spec(table_name)
        num_partitions = num_in = num_out = num_rows = num_duplicates = 0
        with self.locked():
            for partition in self.partitions(table_name):
                small = [
                    p
                    for p in self.list_segments(table_name, partition)
                    if p.stat().st_size < max_segment_bytes
                ]
                if len(small) < max(min_segments, 2):
                    continue
                # Segments are read oldest first, so the first-written copy of a key survives.
                merged = pa.concat_tables([conform(spec, pq.read_table(p)) for p in small])
                rows = dedup_first(merged, spec.key_columns)
                self._write_segment(spec, partition, rows)
                for path in small:
                    path.unlink()
                fsync_dir(self.table_dir(table_name) / partition)
                num_partitions += 1
                num_in += len(small)
                num_out += 1
                num_rows += rows.num_rows
                num_duplicates += merged.num_rows - rows.num_rows
        return CompactResult(num_partitions, num_in, num_out, num_rows, num_duplicates)

    def remove_stale_temp_files(self, min_age_s: float = 60.0) -> int:
        """Delete segment temp files left by killed writers; returns how many were removed."""
        removed = 0
        cutoff = time.time() - min_age_s
        with self.locked():
            for name in self.specs:
                root = self.table_dir(name)
                if not root.is_dir():
                    continue
                for tmp in root.glob(f"*/{TEMP_GLOB}"):
                    with contextlib.suppress(FileNotFoundError):
                        if tmp.stat().st_mtime <= cutoff:
                            tmp.unlink()
                            removed += 1
                            log.info("removed stale temp segment %s", tmp)
        return removed

    def _write_segment(self, spec: TableSpec, partition: str, rows: pa.Table) -> Path:
        part_dir = self.table_dir(spec.name) / partition
        if not part_dir.is_dir():
            part_dir.mkdir(parents=True, exist_ok=True)
            fsync_dir(part_dir.parent)
            fsync_dir(self.data_dir)
        stem = f"seg-{time.time_ns():020d}-{secrets.token_hex(4)}"
        tmp = part_dir / f".{stem}.parquet.tmp"
        final = part_dir / f"{stem}.parquet"
        rows = rows.sort_by(spec.time_column)
        try:
            with open(tmp, "xb") as handle:
                pq.write_table(
                    rows,
                    handle,
                    compression=COMPRESSION,
                    row_group_size=ROW_GROUP_ROWS,
                    write_statistics=True,
                )
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(part_dir)
        return final


def _drop_existing(
    rows: pa.Table, segments: Sequence[Path], key_columns: Sequence[str]
) -> pa.Table:
    """Rows whose key is in none of ``segments`` (reads only the key columns)."""
    if not segments or rows.num_rows == 0:
        return rows
    keys = list(key_columns)
    stored = ds.dataset([str(p) for p in segments], format="parquet").to_table(columns=keys)
    if stored.num_rows == 0:
        return rows
    indexed = rows.select(keys).append_column(
        _ROW_INDEX, pa.array(np.arange(rows.num_rows, dtype=np.int64))
    )
    fresh = indexed.join(stored, keys=keys, join_type="left anti", use_threads=False)
    if fresh.num_rows == rows.num_rows:
        return rows
    index = fresh.column(_ROW_INDEX)
    return rows.take(pc.take(index, pc.sort_indices(index)))
