"""The Parquet lake: immutable, date-partitioned segments with key dedup and compaction.

Layout: ``<data>/<table>/date=YYYY-MM-DD/seg-<ns>-<random>.parquet``, the date being the UTC
day of the table's time column. A segment is written to ``.seg-*.parquet.tmp`` (which no
``*.parquet`` glob matches), fsynced and renamed into place, so readers only ever see whole
files. Writers from different processes (``flywheel serve``, ``flywheel ingest``) serialize
on an exclusive ``flock`` of ``<data>/.lake.lock`` while they dedup and write.

Dedup keeps the first copy of a key: within a batch, the first row; against the lake, the row
already stored. A ``Lake`` remembers a 64-bit hash of every key in the partitions it wrote to
recently (:class:`PartitionKeys`, 12 bytes a row), so a write reads only the keys of segments it
has not seen (those another process wrote) instead of every stored key; a hash that matches is
checked against the keys of the one segment it names, so dedup stays exact. Compaction merges a partition's small segments, renames the merged segment into
place and only then unlinks the inputs, so a crash never loses rows; it may briefly leave both
(readers can see a row twice for that instant), and the next compaction removes such copies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import itertools
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.schema import (
    ALERT_SCHEMA,
    ANNOTATION_SCHEMA,
    BUSINESS_METRIC_SCHEMA,
    EMBEDDING_SCHEMA,
    EVAL_CASE_SCHEMA,
    EVAL_RESULT_SCHEMA,
    EVAL_RUN_SCHEMA,
    FEEDBACK_SCHEMA,
    GUARDRAIL_SCHEMA,
    SPAN_SCHEMA,
)
from store.wal import fsync_dir

log = logging.getLogger(__name__)

LOCK_NAME = ".lake.lock"
PARTITION_PREFIX = "date="
TEMP_GLOB = ".seg-*.parquet.tmp"
ROW_GROUP_ROWS = 128 * 1024
#: Values the Parquet writer takes at a time (its default is 1,024): larger batches cost the
#: attribute maps' nested levels less per value (6% faster segment writes, pages a little
#: larger than the 1 MiB target).
WRITE_BATCH_ROWS = 64 * 1024
COMPRESSION = "zstd"
_NS_PER_DAY = 86_400 * 10**9
_ROW_INDEX = "__flywheel_row"
#: Partitions per table whose key hashes a Lake keeps (the least recently written is dropped).
KEY_INDEX_PARTITIONS = 4


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its name (the folder), schema, unique key and partitioning time column.

    ``free_text`` columns (and everything inside them) are written without Parquet statistics
    or dictionary encoding, ``distinct`` columns (ids, times, measurements) without dictionary
    encoding: neither helps a column whose values rarely repeat, and both cost time to write.
    The attribute maps are free text too: no query prunes by their statistics, and zstd packs
    a resource's map repeated on each of its spans as small as a dictionary does.
    """

    name: str
    schema: pa.Schema
    key_columns: tuple[str, ...]
    time_column: str
    free_text: tuple[str, ...] = ()
    distinct: tuple[str, ...] = ()

    @cached_property
    def parquet_options(self) -> dict[str, Any]:
        """``pq.write_table`` options for this table's segments."""
        if not self.free_text and not self.distinct:
            return {"write_statistics": True}
        leaves = {f.name: _leaf_paths(f.name, f.type) for f in self.schema}
        every = [path for paths in leaves.values() for path in paths]
        plain = {path for name in self.free_text for path in leaves[name]}
        unique = plain | {path for name in self.distinct for path in leaves[name]}
        return {
            "write_statistics": [path for path in every if path not in plain],
            "use_dictionary": [path for path in every if path not in unique],
        }


def _leaf_paths(name: str, type_: pa.DataType) -> list[str]:
    """The Parquet column paths under one Arrow field (a map's keys and values, a list's
    items, a struct's fields)."""
    if isinstance(type_, pa.MapType):
        return [f"{name}.key_value.key", *_leaf_paths(f"{name}.key_value.value", type_.item_type)]
    if isinstance(type_, pa.ListType):
        return _leaf_paths(f"{name}.list.element", type_.value_type)
    if isinstance(type_, pa.StructType):
        return [path for field in type_ for path in _leaf_paths(f"{name}.{field.name}", field.type)]
    return [name]


SPANS = TableSpec(
    "spans",
    SPAN_SCHEMA,
    ("trace_id", "span_id"),
    "start_time",
    free_text=(
        "status_message", "input_text", "output_text", "attributes", "resource_attributes",
        "events", "links",
    ),
    distinct=(
        "trace_id", "span_id", "parent_span_id", "start_time", "end_time", "duration_ms",
        "input_tokens", "output_tokens", "ttft_ms", "cost_usd",
    ),
)  # fmt: skip
FEEDBACK = TableSpec("feedback", FEEDBACK_SCHEMA, ("feedback_id",), "time")
ANNOTATIONS = TableSpec("annotations", ANNOTATION_SCHEMA, ("annotation_id",), "time")
GUARDRAILS = TableSpec("guardrails", GUARDRAIL_SCHEMA, ("result_id",), "time")
ALERTS = TableSpec("alerts", ALERT_SCHEMA, ("alert_id",), "time")
EMBEDDINGS = TableSpec("embeddings", EMBEDDING_SCHEMA, ("model", "text_hash"), "time")
BUSINESS_METRICS = TableSpec("business_metrics", BUSINESS_METRIC_SCHEMA, ("metric_id",), "time")
EVAL_CASES = TableSpec(
    "eval_cases", EVAL_CASE_SCHEMA, ("project", "dataset", "version", "case_id"), "time"
)
EVAL_RUNS = TableSpec("eval_runs", EVAL_RUN_SCHEMA, ("run_id",), "time")
EVAL_RESULTS = TableSpec("eval_results", EVAL_RESULT_SCHEMA, ("result_id",), "time")
DEFAULT_SPECS: tuple[TableSpec, ...] = (
    SPANS,
    FEEDBACK,
    ANNOTATIONS,
    GUARDRAILS,
    ALERTS,
    EMBEDDINGS,
    BUSINESS_METRICS,
    EVAL_CASES,
    EVAL_RUNS,
    EVAL_RESULTS,
)


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


def sort_by_time(table: pa.Table, time_column: str) -> pa.Table:
    """Rows in ``time_column`` order (a stable sort); a table already in order is not copied."""
    order = pc.sort_indices(table, sort_keys=[(time_column, "ascending")])
    if np.array_equal(order.to_numpy(), np.arange(table.num_rows)):
        return table
    return table.take(order)


#: Most runs of one day a batch may be split into before its rows are moved instead.
MAX_DAY_RUNS = 64


def split_by_day(table: pa.Table, time_column: str) -> Iterator[tuple[str, pa.Table]]:
    """Split rows by the UTC date of ``time_column``, yielding (partition name, rows) in day
    order; within a day, rows stay in the order they came.

    Nothing is copied when the rows come in runs of one day (a batch from one day, or in time
    order give or take the traces that straddle midnight): a day's rows are zero-copy slices
    of its runs. Rows that alternate between days more than ``MAX_DAY_RUNS`` times are moved
    once, by a stable sort on the day. Moving every row (the attribute maps above all) costs
    about as much as writing its Parquet, so a full sort by time is left to the segments that
    need one (``Lake._write_segment``).
    """
    if table.num_rows == 0:
        return
    days = np.floor_divide(table.column(time_column).cast(pa.int64()).to_numpy(), _NS_PER_DAY)
    starts = np.flatnonzero(np.diff(days)) + 1
    if len(starts) >= MAX_DAY_RUNS:
        order = np.argsort(days, kind="stable")
        table, days = table.take(pa.array(order)), days[order]
        starts = np.flatnonzero(np.diff(days)) + 1
    bounds = [0, *starts.tolist(), len(days)]
    runs: dict[int, list[pa.Table]] = {}
    for first, end in itertools.pairwise(bounds):
        runs.setdefault(int(days[first]), []).append(table.slice(first, end - first))
    for day in sorted(runs):
        yield partition_of(day), pa.concat_tables(runs[day])


def key_hashes(table: pa.Table, key_columns: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each row's key (stable within a process, which is all it is used for)."""
    if table.num_rows == 0:
        return np.empty(0, dtype=np.uint64)
    frame = pl.from_arrow(table.select(list(key_columns)), rechunk=False)
    assert isinstance(frame, pl.DataFrame)
    return frame.hash_rows(seed=0).to_numpy().astype(np.uint64, copy=False)


class PartitionKeys:
    """Hashes of the keys stored in one partition, each with the segment that holds it.

    ``segments`` are the files indexed so far. Hashes live in a sorted ``base`` plus a few sorted
    recent runs that are merged into it once they reach a quarter of its size, so adding a
    segment costs about its own size and a lookup is a binary search per run.
    """

    def __init__(self) -> None:
        self.segments: list[str] = []
        self.indexed: set[str] = set()
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, segment numbers)
        self._base_size = 0

    @property
    def num_keys(self) -> int:
        """How many stored keys are indexed."""
        return sum(len(hashes) for hashes, _ in self._runs)

    def add(self, segment: str, hashes: np.ndarray) -> None:
        """Index a segment's key hashes."""
        number = len(self.segments)
        self.segments.append(segment)
        self.indexed.add(segment)
        order = np.argsort(hashes, kind="stable")
        self._runs.append((hashes[order], np.full(len(hashes), number, dtype=np.int32)))
        recent = sum(len(h) for h, _ in self._runs[1:])
        if len(self._runs) > 8 or recent > max(self._base_size // 4, 65_536):
            hashes_all = np.concatenate([h for h, _ in self._runs])
            numbers_all = np.concatenate([n for _, n in self._runs])
            order = np.argsort(hashes_all, kind="stable")
            self._runs = [(hashes_all[order], numbers_all[order])]
            self._base_size = len(hashes_all)

    def matches(self, hashes: np.ndarray) -> dict[str, np.ndarray]:
        """Segments holding a key with one of ``hashes``, each with the positions of those."""
        found: dict[int, set[int]] = {}
        for run_hashes, run_numbers in self._runs:
            lo = np.searchsorted(run_hashes, hashes, side="left")
            hi = np.searchsorted(run_hashes, hashes, side="right")
            for position in np.flatnonzero(hi > lo):  # rare: a re-sent batch, or a collision
                for number in run_numbers[lo[position] : hi[position]]:
                    found.setdefault(int(number), set()).add(int(position))
        return {
            self.segments[number]: np.array(sorted(positions), dtype=np.int64)
            for number, positions in found.items()
        }


class Lake:
    """The lake under one data directory; write and compact tables described by TableSpecs."""

    def __init__(self, data_dir: Path | str, specs: Sequence[TableSpec] = DEFAULT_SPECS) -> None:
        self.data_dir = Path(data_dir)
        self._keys: dict[tuple[str, str], PartitionKeys] = {}
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

    def _key_index(self, spec: TableSpec, partition: str) -> PartitionKeys:
        """The partition's key index, brought up to date with its segments (call it locked)."""
        on_disk = {path.name: path for path in self.list_segments(spec.name, partition)}
        index = self._keys.pop((spec.name, partition), None)
        if index is None or not index.indexed <= on_disk.keys():
            index = PartitionKeys()  # first write here, or segments were compacted away
        for name, path in on_disk.items():
            if name not in index.indexed:  # written by another process (or before this one)
                stored = pq.read_table(path, columns=list(spec.key_columns))
                index.add(name, key_hashes(stored, spec.key_columns))
        self._keys[(spec.name, partition)] = index  # the most recently used last
        mine = [key for key in self._keys if key[0] == spec.name]
        for key in mine[: max(0, len(mine) - KEY_INDEX_PARTITIONS)]:
            del self._keys[key]
        return index

    def has_data(self, table_name: str) -> bool:
        """Whether the table has at least one segment."""
        root = self.table_dir(table_name)
        return root.is_dir() and next(root.glob(f"{PARTITION_PREFIX}*/*.parquet"), None) is not None

    @contextlib.contextmanager
    def locked(self, name: str = LOCK_NAME) -> Iterator[None]:
        """Hold an exclusive lock of the lake (across processes and threads): by default the
        writers' lock; another ``name`` serializes a read-then-write of its own (it must not be
        the writers' lock, which :meth:`write` takes itself)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A fresh open file description per acquisition: flock then excludes threads too.
        with open(self.data_dir / name, "a+b") as handle:
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
                index = self._key_index(spec, partition)
                hashes = key_hashes(part_rows, spec.key_columns)
                fresh_mask = _not_stored(
                    part_rows, hashes, index, self.table_dir(spec.name) / partition, spec
                )
                fresh = part_rows if fresh_mask is None else part_rows.filter(fresh_mask)
                num_duplicates += part_rows.num_rows - fresh.num_rows
                if fresh.num_rows == 0:
                    continue
                segment = self._write_segment(spec, partition, fresh)
                segments.append(segment)
                index.add(segment.name, hashes if fresh_mask is None else hashes[fresh_mask])
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
                self._write_segment(spec, partition, rows, in_time_order=True)
                for path in small:
                    path.unlink()
                fsync_dir(self.table_dir(table_name) / partition)
                num_partitions += 1
                num_in += len(small)
                num_out += 1
                num_rows += rows.num_rows
                num_duplicates += merged.num_rows - rows.num_rows
        return CompactResult(num_partitions, num_in, num_out, num_rows, num_duplicates)

    def describe(self) -> str:
        """Where the tables are, for people (messages, reports)."""
        return str(self.data_dir)

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

    def _write_segment(
        self, spec: TableSpec, partition: str, rows: pa.Table, *, in_time_order: bool = False
    ) -> Path:
        """Write ``rows`` as a new segment of ``partition``; sorted by time when it holds more
        than one row group (for pruning by their statistics) or ``in_time_order`` says so (a
        merged segment, read many times and written once). A writer's flush is one row group,
        which a sort gains nothing."""
        part_dir = self.table_dir(spec.name) / partition
        if not part_dir.is_dir():
            part_dir.mkdir(parents=True, exist_ok=True)
            fsync_dir(part_dir.parent)
            fsync_dir(self.data_dir)
        stem = f"seg-{time.time_ns():020d}-{secrets.token_hex(4)}"
        tmp = part_dir / f".{stem}.parquet.tmp"
        final = part_dir / f"{stem}.parquet"
        if in_time_order or rows.num_rows > ROW_GROUP_ROWS:
            rows = sort_by_time(rows, spec.time_column)
        try:
            with open(tmp, "xb") as handle:
                pq.write_table(
                    rows,
                    handle,
                    compression=COMPRESSION,
                    row_group_size=ROW_GROUP_ROWS,
                    write_batch_size=WRITE_BATCH_ROWS,
                    **spec.parquet_options,
                )
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(part_dir)
        return final


def as_lake(where: Lake | Path | str) -> Lake:
    """The tables at ``where``: a data directory's Parquet lake, or a :class:`Lake` given as is
    (another store's tables, such as ``store.clickhouse.writer.ClickHouseTables``)."""
    return where if isinstance(where, Lake) else Lake(where)


def _not_stored(
    rows: pa.Table, hashes: np.ndarray, index: PartitionKeys, part_dir: Path, spec: TableSpec
) -> np.ndarray | None:
    """Which rows have a key that no segment of the partition holds (None: all of them).

    Only the segments the index names for a matching hash are read, and only their keys.
    """
    hits = index.matches(hashes)
    if not hits:
        return None
    keys = list(spec.key_columns)
    fresh = np.ones(rows.num_rows, dtype=bool)
    for segment, positions in hits.items():
        candidates = (
            rows.select(keys)
            .take(pa.array(positions))
            .append_column(_ROW_INDEX, pa.array(positions))
        )
        stored = pq.read_table(part_dir / segment, columns=keys)
        present = candidates.join(stored, keys=keys, join_type="left semi", use_threads=False)
        fresh[present.column(_ROW_INDEX).to_numpy()] = False
    return fresh
