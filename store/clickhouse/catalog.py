"""A ClickHouse catalog that the analytics query exactly as they query DuckDB's.

:class:`ClickHouseCatalog` stands where :func:`store.catalog.open_catalog`'s DuckDB connection
stands: ``cursor()``, ``execute(sql, params)`` then ``fetchall()`` / ``to_arrow_table()``. It
takes the analytics' DuckDB-dialect SQL, rewrites it (:mod:`store.clickhouse.transpile`, with
the table macros of ``views.sql`` expanded) and runs it on an :class:`Engine`: a chdb session
(ClickHouse in-process, for tests) or a ClickHouse server through ``clickhouse-connect``.

Tables, in one database: one per lake table (``spans``, ``feedback``, ``annotations``,
``guardrails``, …; columns and types from ``store.schema``, MergeTree ordered by project and
time), the small ``prices``, ``price_models``, ``llm_operations`` and ``_catalog_settings``,
and the views ``llm_calls``, ``traces`` and ``sessions`` from ``views.sql``. ClickHouse has no
table macros: ``<table>_between(lo, hi)`` and the macros of ``views.sql`` are expanded into
each statement instead.

Result values are the DuckDB catalog's: timestamps in UTC (nanoseconds for the lake's span times, microseconds for computed ones), every integer column
``int64``; a boolean expression comes back as 0/1 (``uint8`` in ClickHouse, ``int64`` here).
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.catalog import PRICE_MODELS_SCHEMA, PRICES_SCHEMA, quote_identifier, read_views_sql
from store.clickhouse.link import link_collector
from store.clickhouse.transpile import SETTINGS, Macro, parse_macros, to_clickhouse
from store.lake import DEFAULT_SPECS, TableSpec
from store.schema import LLM_OPERATIONS

__all__ = [
    "ChdbEngine",
    "ClickHouseCatalog",
    "Engine",
    "clickhouse_type",
    "create_tables",
    "open_clickhouse_catalog",
]


class Engine(Protocol):
    """Runs one ClickHouse statement with ``{name:Type}`` parameters (text values)."""

    def query(self, sql: str, params: Mapping[str, str]) -> pa.Table: ...

    def insert(self, table: str, rows: pa.Table) -> None: ...


#: The database each chdb session (one per process) is using.
_CURRENT_DATABASE: dict[int, str] = {}


@dataclass
class ChdbEngine:
    """ClickHouse in-process (``chdb``): one session per process, a database per catalog."""

    session: Any  # chdb.session.Session
    database: str

    def query(self, sql: str, params: Mapping[str, str]) -> pa.Table:
        self._use()
        try:
            result = self.session.query(sql, "ArrowTable", params=dict(params))
        except Exception as exc:
            raise type(exc)(f"{exc}\n-- in:\n{sql}") from None
        return result if isinstance(result, pa.Table) else pa.table({})

    def _use(self) -> None:
        """Make this engine's database the session's current one, with the settings on."""
        if _CURRENT_DATABASE.get(id(self.session)) == self.database:
            return
        self.session.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self.session.query(f"USE {self.database}")
        for name, value in SETTINGS.items():
            self.session.query(f"SET {name} = {value!r}")
        _CURRENT_DATABASE[id(self.session)] = self.database

    def insert(self, table: str, rows: pa.Table) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = f"{folder}/rows.parquet"
            pq.write_table(rows, path)
            self.session.query(
                f"INSERT INTO {self.database}.{quote_identifier(table)} "
                f"SELECT * FROM file('{path}', Parquet)"
            )


# --- types --------------------------------------------------------------------------------------


def clickhouse_type(arrow: pa.DataType, nullable: bool = True) -> str:
    """The ClickHouse column type holding values of an Arrow type as the lake holds them."""
    if pa.types.is_list(arrow):
        return f"Array({clickhouse_type(arrow.value_type, nullable=False)})"
    if pa.types.is_map(arrow):
        return f"Map(String, {clickhouse_type(arrow.item_type)})"
    if pa.types.is_struct(arrow):
        fields = ", ".join(f"{f.name} {clickhouse_type(f.type)}" for f in arrow)
        return f"Tuple({fields})"
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        base = "String"
    elif pa.types.is_boolean(arrow):
        base = "Bool"
    elif pa.types.is_integer(arrow):
        base = "Int64"
    elif pa.types.is_floating(arrow):
        base = "Float64"
    elif pa.types.is_timestamp(arrow):
        base = "DateTime64(9, 'UTC')" if arrow.unit == "ns" else "DateTime64(6, 'UTC')"
    elif pa.types.is_date(arrow):
        base = "Date32"
    else:
        raise TypeError(f"no ClickHouse type for {arrow}")
    return f"Nullable({base})" if nullable else base


def _table_ddl(spec: TableSpec, database: str) -> str:
    columns = ",\n    ".join(
        f"{quote_identifier(f.name)} {clickhouse_type(f.type, f.nullable)}" for f in spec.schema
    )
    order = ", ".join(
        quote_identifier(c)
        for c in ("project", spec.time_column)
        if c in spec.schema.names and not spec.schema.field(c).nullable
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{quote_identifier(spec.name)} (\n    {columns}\n)"
        f" ENGINE = MergeTree ORDER BY ({order or 'tuple()'})"
        " SETTINGS allow_nullable_key = 1"
    )


_SMALL_TABLES = (
    "CREATE TABLE IF NOT EXISTS {db}.prices (model String, effective_from DateTime64(6, 'UTC'), "
    "input_usd_per_mtok Float64, output_usd_per_mtok Float64, "
    "cache_read_usd_per_mtok Nullable(Float64), cache_write_usd_per_mtok Nullable(Float64)) "
    "ENGINE = MergeTree ORDER BY (model, effective_from)",
    "CREATE TABLE IF NOT EXISTS {db}.price_models (model String, price_model Nullable(String)) "
    "ENGINE = MergeTree ORDER BY model",
    "CREATE TABLE IF NOT EXISTS {db}.llm_operations (operation String) "
    "ENGINE = MergeTree ORDER BY operation",
    "CREATE TABLE IF NOT EXISTS {db}._catalog_settings (name String, value String) "
    "ENGINE = MergeTree ORDER BY name",
)


def _between_macros(specs: Iterable[TableSpec]) -> list[Macro]:
    return [
        Macro(
            f"{spec.name}_between",
            ("lo", "hi"),
            f"SELECT * FROM {spec.name} WHERE {spec.time_column} >= lo AND {spec.time_column} < hi",
        )
        for spec in specs
    ]


def _view_statements() -> tuple[dict[str, Macro], list[tuple[str, str]]]:
    """The table macros and the views (name, select) of ``views.sql``."""
    statements = read_views_sql()
    macros = parse_macros(statements)
    views = []
    for statement in statements:
        statement = "\n".join(
            ln for ln in statement.splitlines() if not ln.lstrip().startswith("--")
        ).strip()
        match = re.match(r"CREATE\s+VIEW\s+(\w+)\s+AS\s+(.*)", statement, re.DOTALL | re.I)
        if match:
            views.append((match.group(1), match.group(2)))
    return macros, views


# --- the catalog --------------------------------------------------------------------------------


class ClickHouseCatalog:
    """The DuckDB-connection surface the analytics use, over ClickHouse."""

    def __init__(
        self,
        engine: Engine,
        database: str,
        specs: Sequence[TableSpec] = DEFAULT_SPECS,
        cache_dir: Path | None = None,
    ) -> None:
        self.engine = engine
        self.database = database
        #: Whether the Collector's ``otel_traces`` feeds ``spans`` (and ``otel_spans`` exists).
        self.reads_collector = False
        #: A local folder for caches (computed embeddings), or None.
        self.cache_dir = cache_dir
        self.specs = tuple(specs)
        macros, self.views = _view_statements()
        for macro in _between_macros(self.specs):
            macros[macro.name] = macro
        self.macros = macros
        self._result: pa.Table | None = None

    # DB-API-like surface -----------------------------------------------------------------
    def cursor(self) -> ClickHouseCatalog:
        """A catalog of its own for one thread (results are per cursor; the engine is
        shared)."""
        other = copy.copy(self)
        other._result = None
        return other

    def close(self) -> None:
        self._result = None

    def execute(
        self, sql: str, params: Mapping[str, Any] | Sequence[Any] | None = None
    ) -> ClickHouseCatalog:
        if re.fullmatch(r"\s*SET\s+TimeZone\s*=\s*'UTC'\s*;?\s*", sql, re.IGNORECASE):
            self._result = pa.table({})
            return self
        if re.fullmatch(r"\s*SHOW\s+TABLES\s*;?\s*", sql, re.IGNORECASE):
            sql = "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name"
            self._result = _normalise(self.engine.query(sql, {}))
            return self
        text, bound = to_clickhouse(sql, params, self.macros, self.database)
        self._result = _normalise(self.engine.query(text, bound))
        return self

    def to_arrow_table(self) -> pa.Table:
        if self._result is None:
            raise RuntimeError("no result: execute a query first")
        return self._result

    fetch_arrow_table = to_arrow_table
    arrow = to_arrow_table

    def fetchall(self) -> list[tuple[Any, ...]]:
        table = self.to_arrow_table()
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        return list(zip(*columns, strict=True))

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    # catalog upkeep ------------------------------------------------------------------------
    def set_prices(
        self, prices: pa.Table, price_models: pa.Table | None = None, *, mapping_rules: str = ""
    ) -> None:
        """Replace the prices (and the model mapping); ClickHouse has no transaction: the
        tables are tiny and replaced whole."""
        del mapping_rules  # only kept per-segment work (DuckDB's store.derived) depends on it
        self._replace("prices", prices.select(PRICES_SCHEMA.names))
        if price_models is not None:
            self._replace("price_models", price_models.select(PRICE_MODELS_SCHEMA.names))

    def _replace(self, table: str, rows: pa.Table) -> None:
        self.engine.query(f"TRUNCATE TABLE {table}", {})
        if rows.num_rows:
            self.engine.insert(table, rows)

    def load(self, table: str, rows: pa.Table) -> None:
        """Append rows (in the table's lake schema) to one of the catalog's tables."""
        spec = next(s for s in self.specs if s.name == table)
        self.engine.insert(table, rows.select(spec.schema.names))


def create_tables(engine: Engine, database: str, specs: Sequence[TableSpec]) -> None:
    """Create the catalog's tables and views in ``database`` (idempotent)."""
    for spec in specs:
        engine.query(_table_ddl(spec, database), {})
    for ddl in _SMALL_TABLES:
        engine.query(ddl.format(db=database), {})


def open_clickhouse_catalog(
    engine: Engine,
    database: str,
    specs: Sequence[TableSpec] = DEFAULT_SPECS,
    cache_dir: Path | str | None = None,
    collector_spans: str | None = None,
) -> ClickHouseCatalog:
    """A catalog over ``database`` (its tables and views created if missing); computed
    embeddings are cached in ``cache_dir`` (a local folder) if given.

    ``collector_spans`` is a ``SELECT`` of canonical spans over the Collector's ``otel_traces``
    table in ``database`` (``ingest.clickhouse_spans.spans_select_sql``, generated from the
    conventions file; the store does not import ingest): when that table exists, a
    materialized view feeds its rows, normalized once, into ``spans`` (and copies those stored
    before), so the analytics read the Collector's spans and Flywheel's from the one table
    (:func:`store.clickhouse.link.link_collector`). The dashboard reopens its catalog every
    minute, so a Collector that starts later is linked then.
    """
    create_tables(engine, database, specs)
    catalog = ClickHouseCatalog(
        engine, database, specs, Path(cache_dir) if cache_dir is not None else None
    )
    if collector_spans is not None:
        catalog.reads_collector = link_collector(engine, database, collector_spans)
    if not catalog.engine.query("SELECT count() AS n FROM llm_operations", {})["n"][0].as_py():
        engine.insert(
            "llm_operations", pa.table({"operation": pa.array(sorted(LLM_OPERATIONS), pa.string())})
        )
    for name, select in catalog.views:
        text, _ = to_clickhouse(select, {}, catalog.macros, database)
        engine.query(f"CREATE OR REPLACE VIEW {database}.{name} AS {text}", {})
    return catalog


# --- results ------------------------------------------------------------------------------------


def _normalise_type(arrow: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(arrow):
        return _normalise_type(arrow.value_type)
    if pa.types.is_unsigned_integer(arrow) or pa.types.is_signed_integer(arrow):
        return pa.int64()
    if pa.types.is_timestamp(arrow):
        return pa.timestamp(arrow.unit, tz="UTC")
    if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow):
        return pa.string()
    if pa.types.is_large_string(arrow):
        return pa.string()
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return pa.list_(_normalise_type(arrow.value_type))
    if pa.types.is_struct(arrow):
        return pa.struct([pa.field(f.name, _normalise_type(f.type)) for f in arrow])
    if pa.types.is_map(arrow):
        return pa.map_(_normalise_type(arrow.key_type), _normalise_type(arrow.item_type))
    return arrow


def _normalise(table: pa.Table) -> pa.Table:
    columns = []
    for column in table.columns:
        target = _normalise_type(column.type)
        if pa.types.is_dictionary(column.type):
            column = pc.cast(column, column.type.value_type)
        columns.append(column if column.type == target else column.cast(target))
    return pa.Table.from_arrays(columns, names=table.column_names)
