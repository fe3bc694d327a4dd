"""A ClickHouse catalog (chdb) holding a Parquet lake's rows, for running analytics tests on it.

:func:`open_clickhouse_lake` is :func:`store.catalog.open_catalog`'s stand-in: it opens a
ClickHouse catalog in a fresh database of the process's chdb session and copies the lake's
segments into its tables. Before every statement the copy catches up with the lake (segments
written since are appended; when one was removed, by compaction, the table is loaded again), so a
test that writes more rows after opening the catalog reads them as it would from DuckDB.

``FLYWHEEL_TEST_ENGINE=clickhouse`` makes the analytics tests open this catalog wherever they
open DuckDB's (``tests/analytics/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from store.clickhouse.catalog import ChdbEngine, ClickHouseCatalog, open_clickhouse_catalog
from store.lake import DEFAULT_SPECS, Lake, TableSpec, conform
from tests.clickhouse_session import new_database, process_session


@dataclass
class _MirroredEngine:
    """A chdb engine whose tables follow a lake's segments."""

    engine: ChdbEngine
    lake: Lake
    specs: Sequence[TableSpec]
    loaded: dict[str, set[str]] = field(default_factory=dict)
    syncing: bool = False

    def query(self, sql: str, params: Mapping[str, str]) -> pa.Table:
        self.sync()
        return self.engine.query(sql, params)

    def insert(self, table: str, rows: pa.Table) -> None:
        self.engine.insert(table, rows)

    def sync(self) -> None:
        if self.syncing:
            return
        self.syncing = True
        try:
            for spec in self.specs:
                folder = self.lake.table_dir(spec.name)
                files = (
                    {str(p) for p in folder.glob("date=*/*.parquet")} if folder.exists() else set()
                )
                known = self.loaded.setdefault(spec.name, set())
                if known - files:  # a segment was compacted away: load the table again
                    self.engine.query(f"TRUNCATE TABLE {spec.name}", {})
                    known.clear()
                new = sorted(files - known)
                if new:
                    rows = pa.concat_tables([conform(spec, pq.read_table(path)) for path in new])
                    self.engine.insert(spec.name, rows)
                    known.update(new)
        finally:
            self.syncing = False


def open_clickhouse_lake(
    data_dir: Path | str, specs: Sequence[TableSpec] = DEFAULT_SPECS
) -> ClickHouseCatalog:
    """A ClickHouse catalog with the rows of the lake in ``data_dir`` (kept up to date)."""
    database = new_database()
    engine = _MirroredEngine(ChdbEngine(process_session(), database), Lake(data_dir, specs), specs)
    engine.syncing = True  # the tables do not exist yet
    catalog = open_clickhouse_catalog(engine, database, specs, cache_dir=data_dir)
    engine.syncing = False
    return catalog
