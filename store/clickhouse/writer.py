"""The receiver's writer for a ClickHouse store: the same write-ahead log, flushed into ClickHouse.

:class:`ClickHouseWriter` is a :class:`store.writer.LakeWriter` whose lake is a ClickHouse
database (:class:`ClickHouseTables`, the tables of :func:`store.clickhouse.catalog.create_tables`).
Appends are logged and fsynced exactly as for the Parquet lake, so an acknowledgement still means
"fsynced here"; a flush (same triggers: age, size) sends each table's buffered rows with one
INSERT instead of writing Parquet segments, and deletes the logs only once every insert of the
flush was acknowledged. When an insert fails (server down, timeout) the flush raises, the rows
stay logged and buffered, and the next flush sends them again with whatever came since; the
receiver's flusher retries with backoff and its backpressure bounds what waits. Opening the
writer replays every log a dead process left (``kill -9``) into ClickHouse. The logs live in
``<data>/clickhouse/<database>/wal/``, apart from the lake's, so that a Parquet writer on the same
folder (``flywheel ingest``) never replays them into Parquet, nor this one theirs into ClickHouse.

Re-sending adds nothing for readers. Rows can arrive twice three ways: a flush retried after an
insert that failed on the client but committed on the server, a log replayed after a crash
between ClickHouse's acknowledgement and the log's deletion, and a sender re-sending a request
whose answer it lost, whose rows then come in another batch, among other rows. So each flush does
what the lake does: it keeps the first row of each key (``TableSpec.key_columns``) within the
batch and drops rows whose key is already stored with the same time. That check is one SELECT
per table per flush (per :data:`CHECK_CHUNK_ROWS` rows) on the tables' sort key, ``project`` and
the time column, with the batch's distinct times as a set: ClickHouse reads only the granules
holding those instants, so it costs about as much as the batch, not the table, and readers need
nothing (no ``FINAL``). Rejected alternatives: insert de-duplication tokens only recognise a
repeated *block*, not a re-sent request's rows inside a new batch; ReplacingMergeTree leaves
duplicates to background merges, so every reader would need ``FINAL`` (a slower read and a change
to every query) to see each row once.

Limits: a key stored with another time counts as new (a real re-send repeats the time; the lake
too only looks within the row's day). Two writers on one database may both store a row re-sent
to each of them within the same instant (the lake serializes its writers with a lock; ClickHouse
has none): run one receiver per database, or accept that rare double.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.catalog import quote_identifier
from store.clickhouse.catalog import Engine, clickhouse_type, create_tables
from store.lake import (
    DEFAULT_SPECS,
    CompactResult,
    Lake,
    TableSpec,
    WriteResult,
    conform,
    dedup_first,
)
from store.writer import LakeWriter

__all__ = ["CHECK_CHUNK_ROWS", "ClickHouseTables", "ClickHouseWriter", "log_dir"]

#: Distinct times per de-duplication query. They are written into the statement, which travels
#: in the request's body (parameters would travel in its URL, which servers and proxies cap):
#: 2,000 times are about 60 KB of the 256 KiB ClickHouse parses (``max_query_size``).
CHECK_CHUNK_ROWS = 2_000
_ROW = "__flywheel_row"


def log_dir(data_dir: Path | str, database: str) -> Path:
    """The folder whose ``wal/`` holds the logs of a writer into ``database``."""
    return Path(data_dir) / "clickhouse" / database


#: Keys of a table stored at the given times (and projects): the flush's de-duplication probe.
STORED_KEYS_SQL = "SELECT {keys} FROM {table} WHERE {time} IN CAST([{times}], {time_type})"
PROJECT_FILTER_SQL = " AND project IN ({projects})"


class ClickHouseTables(Lake):
    """The lake's tables in a ClickHouse database: ``write`` inserts instead of writing segments.

    The tables are created in ``database`` if missing. ``data_dir`` is the local folder whose
    ``clickhouse/<database>/`` (:func:`log_dir`) holds what must stay local: writers' logs and
    the locks that serialize a read-then-write (:meth:`Lake.locked`) on this machine.
    """

    def __init__(
        self,
        engine: Engine,
        database: str,
        data_dir: Path | str,
        specs: Sequence[TableSpec] = DEFAULT_SPECS,
        *,
        display: str | None = None,
    ) -> None:
        create_tables(engine, database, specs)
        super().__init__(log_dir(data_dir, database), specs)
        self.engine = engine
        self.database = database
        self.display = display or f"ClickHouse database {database}"

    def describe(self) -> str:
        """The store, for people (never its password)."""
        return self.display

    def has_data(self, table_name: str) -> bool:
        """Whether the table holds at least one row."""
        spec = self.spec(table_name)
        table = f"{self.database}.{quote_identifier(spec.name)}"
        found = self.engine.query(f"SELECT 1 AS found FROM {table} LIMIT 1", {})
        return bool(found.num_rows)

    def compact(self, table_name: str, **_: int) -> CompactResult:
        """Nothing to do: ClickHouse merges a table's parts itself."""
        self.spec(table_name)
        return CompactResult(0, 0, 0, 0, 0)

    def write(self, table_name: str, table: pa.Table) -> WriteResult:
        """Conform, drop keys seen in the batch or stored at the same time, insert the rest."""
        spec = self.spec(table_name)
        rows = dedup_first(conform(spec, table), spec.key_columns)
        fresh = rows.filter(self._not_stored(spec, rows))
        if fresh.num_rows:
            self.engine.insert(spec.name, fresh)
        return WriteResult(fresh.num_rows, table.num_rows - fresh.num_rows)

    def _not_stored(self, spec: TableSpec, rows: pa.Table) -> pa.Array:
        """Which rows have a key that no stored row with the same time holds."""
        fresh = np.ones(rows.num_rows, dtype=bool)
        keys = list(spec.key_columns)
        candidates = rows.select(keys).append_column(
            _ROW, pa.array(np.arange(rows.num_rows, dtype=np.int64))
        )
        times = pc.unique(rows.column(spec.time_column)).sort()
        for start in range(0, len(times), CHECK_CHUNK_ROWS):
            stored = self._stored_keys(spec, rows, times[start : start + CHECK_CHUNK_ROWS])
            if stored.num_rows:
                present = candidates.join(
                    stored, keys=keys, join_type="left semi", use_threads=False
                )
                fresh[present.column(_ROW).to_numpy()] = False
        return pa.array(fresh)

    def _stored_keys(self, spec: TableSpec, rows: pa.Table, times: pa.Array) -> pa.Table:
        """The keys stored at ``times`` (for the batch's projects), typed as the batch's."""
        time_field = spec.schema.field(spec.time_column)
        sql = STORED_KEYS_SQL.format(
            keys=", ".join(quote_identifier(c) for c in spec.key_columns),
            table=f"{self.database}.{quote_identifier(spec.name)}",
            time=quote_identifier(spec.time_column),
            times=_literals(pc.strftime(times, "%Y-%m-%d %H:%M:%S").to_pylist()),
            time_type=_literals([f"Array({clickhouse_type(time_field.type, nullable=False)})"]),
        )
        if "project" in spec.schema.names and not spec.schema.field("project").nullable:
            projects = pc.unique(rows.column("project")).to_pylist()
            sql += PROJECT_FILTER_SQL.format(projects=_literals(projects))
        stored = self.engine.query(sql, {})
        return pa.table(
            {
                name: stored.column(name).cast(spec.schema.field(name).type)
                for name in spec.key_columns
            }
        )

    def remove_stale_temp_files(self, min_age_s: float = 60.0) -> int:
        """Nothing to remove: no segment is written locally."""
        return 0


def _literals(values: Sequence[str]) -> str:
    """String literals, quoted and escaped, comma-separated."""
    return ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


class ClickHouseWriter(LakeWriter):
    """Durable appends to ClickHouse: WAL + fsync per append, one INSERT per table per flush.

    ``data_dir`` is the local folder for the logs (``<data_dir>/clickhouse/<database>/wal``);
    the tables are created in ``database`` if missing, then the logs of dead writers replayed.
    ``options`` are :class:`LakeWriter`'s (buffer bounds, ``max_age_s``, ``recover``).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        engine: Engine,
        database: str,
        specs: Sequence[TableSpec] = DEFAULT_SPECS,
        **options: Any,
    ) -> None:
        super().__init__(ClickHouseTables(engine, database, data_dir, specs), **options)
