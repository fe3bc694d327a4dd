"""The catalog: an in-memory DuckDB connection with views over the Parquet lake.

Every reader process opens its own catalog; nothing here writes to the lake. The base views
``spans``, ``feedback`` and ``annotations`` (one per ``TableSpec``) scan ``<data>/<table>/date=*/*.parquet``; DuckDB expands that glob
again on every query, so segments written after the catalog was opened show up without a
refresh. A typed empty table is unioned in (by name), so the views exist with the canonical
column types before the first segment is written, and segments written before a column was
added to the schema read that column as NULL. The derived views (``llm_calls``, ``traces``,
``sessions``) and the ``prices`` tables are defined in ``views.sql``.

A DuckDB connection is not safe to share between threads: give each thread ``conn.cursor()``.
"""

from __future__ import annotations

import importlib.resources
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from store.lake import DEFAULT_SPECS, Lake, TableSpec
from store.schema import LLM_OPERATIONS

log = logging.getLogger(__name__)
# query() takes Arrow from a DB-API result on purpose (see its docstring).
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)

VIEWS_SQL = "views.sql"
#: The hive partition column of the lake's folders (``date=YYYY-MM-DD``); not a canonical column.
PARTITION_COLUMN = "date"
PRICES_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("effective_from", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("input_usd_per_mtok", pa.float64(), nullable=False),
        pa.field("output_usd_per_mtok", pa.float64(), nullable=False),
        pa.field("cache_read_usd_per_mtok", pa.float64()),
        pa.field("cache_write_usd_per_mtok", pa.float64()),
    ]
)
PRICE_MODELS_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("price_model", pa.string()),
    ]
)


def quote_identifier(name: str) -> str:
    """Quote an SQL identifier (table, view or column name)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string as an SQL literal (for DDL, where parameters cannot be bound)."""
    return "'" + value.replace("'", "''") + "'"


def read_views_sql() -> list[str]:
    """The statements of ``views.sql``, in order."""
    text = importlib.resources.files("store").joinpath(VIEWS_SQL).read_text(encoding="utf-8")
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip() == ";":
            statements.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    tail = "\n".join(current).strip()
    if any(not ln.strip().startswith("--") for ln in tail.splitlines() if ln.strip()):
        statements.append(tail)
    return [s for s in statements if s]


def base_view_sql(spec: TableSpec, glob: str, empty_table: str) -> str:
    """SQL of a base view: the lake's segments plus a typed empty table, canonical columns only."""
    columns = ", ".join(quote_identifier(name) for name in spec.schema.names)
    return (
        f"CREATE OR REPLACE VIEW {quote_identifier(spec.name)} AS "
        f"SELECT {columns} FROM ("
        f"SELECT * FROM {quote_identifier(empty_table)} "
        f"UNION ALL BY NAME "
        f"SELECT * FROM read_parquet({quote_literal(glob)}, union_by_name = true, "
        f"hive_partitioning = false, allow_empty = true))"
    )


def segments_sql(spec: TableSpec, files: Sequence[str]) -> str:
    """A SELECT of the canonical rows of the given segment files of a table (at least one)."""
    columns = ", ".join(quote_identifier(name) for name in spec.schema.names)
    listed = ", ".join(quote_literal(name) for name in files)
    return (
        f"SELECT {columns} FROM (SELECT * FROM {quote_identifier('_empty_' + spec.name)} "
        f"UNION ALL BY NAME SELECT * FROM read_parquet([{listed}], union_by_name = true, "
        f"hive_partitioning = false))"
    )


def between_macro_sql(spec: TableSpec, glob: str, empty_table: str) -> str:
    """SQL of ``<table>_between(lo, hi)``: the rows whose time column is in ``[lo, hi)``.

    It reads only the date partitions the window touches (hive partition pruning happens
    before any file is opened), where the base view opens every segment's footer: a query
    over one hour of a 30-day lake reads 7 files instead of 229.
    """
    columns = ", ".join(quote_identifier(name) for name in spec.schema.names)
    time_column = quote_identifier(spec.time_column)
    return (
        f"CREATE OR REPLACE MACRO {quote_identifier(spec.name + '_between')}(lo, hi) AS TABLE "
        f"SELECT {columns} FROM ("
        f"SELECT * FROM {quote_identifier(empty_table)} "
        f"UNION ALL BY NAME "
        f"SELECT * FROM read_parquet({quote_literal(glob)}, union_by_name = true, "
        f"hive_partitioning = true, hive_types = {{'date': DATE}}, allow_empty = true)) "
        f"WHERE {PARTITION_COLUMN} >= CAST(lo AS DATE) AND {PARTITION_COLUMN} <= CAST(hi AS DATE) "
        f"AND {time_column} >= lo AND {time_column} < hi"
    )


def open_catalog(
    data_dir: Path | str, specs: Sequence[TableSpec] = DEFAULT_SPECS
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with views over the lake in ``data_dir`` (which need not exist yet)."""
    lake = Lake(data_dir, specs)
    conn = duckdb.connect(":memory:")
    conn.execute("SET TimeZone = 'UTC'")
    # Segments are immutable (new data is a new file name), so their footers can be cached:
    # every query binds the views again, and without the cache it rereads every footer. GLOBAL:
    # queries run on cursors, which a session setting would not reach.
    conn.execute("SET GLOBAL parquet_metadata_cache = true")
    for spec in specs:
        empty_table = f"_empty_{spec.name}"
        conn.register("_empty_arrow", spec.schema.empty_table())
        conn.execute(
            f"CREATE TABLE {quote_identifier(empty_table)} AS "
            f"SELECT *, NULL::DATE AS {PARTITION_COLUMN} FROM _empty_arrow"
        )
        conn.unregister("_empty_arrow")
        conn.execute(base_view_sql(spec, lake.glob(spec.name), empty_table))
        conn.execute(between_macro_sql(spec, lake.glob(spec.name), empty_table))
    for statement in read_views_sql():
        conn.execute(statement)
    conn.execute("CREATE TABLE _catalog_settings (name VARCHAR PRIMARY KEY, value VARCHAR)")
    conn.execute(
        "INSERT INTO _catalog_settings VALUES ('data_dir', ?)", [str(Path(data_dir).resolve())]
    )
    conn.executemany(
        "INSERT INTO llm_operations VALUES (?)", [[operation] for operation in LLM_OPERATIONS]
    )
    return conn


def data_dir_of(conn: duckdb.DuckDBPyConnection) -> Path | None:
    """The data directory a catalog reads (None for a catalog not opened on a lake).

    Another engine's catalog (ClickHouse) names the local folder its caches go to (embeddings),
    if any, as ``cache_dir``."""
    if not isinstance(conn, duckdb.DuckDBPyConnection):
        cache_dir: Path | None = getattr(conn, "cache_dir", None)
        return cache_dir
    try:
        rows = conn.execute(
            "SELECT value FROM _catalog_settings WHERE name = 'data_dir'"
        ).fetchall()
    except duckdb.CatalogException:
        return None
    return Path(rows[0][0]) if rows else None


def set_prices(
    conn: duckdb.DuckDBPyConnection,
    prices: pa.Table,
    price_models: pa.Table | None = None,
    *,
    mapping_rules: str = "",
) -> None:
    """Replace the ``prices`` (and, if given, ``price_models``) tables' rows.

    ``mapping_rules`` describes how data model names were mapped to price models besides the
    price rows (aliases, prefixes): kept per-segment work depends on it (store.derived).
    """
    prices = _select(prices, PRICES_SCHEMA, "prices")
    if not isinstance(conn, duckdb.DuckDBPyConnection):  # another engine's catalog
        conn.set_prices(prices, price_models, mapping_rules=mapping_rules)
        return
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            "INSERT OR REPLACE INTO _catalog_settings VALUES ('price_mapping_rules', ?)",
            [mapping_rules],
        )
        conn.register("_prices_arrow", prices)
        conn.execute("DELETE FROM prices")
        conn.execute("INSERT INTO prices SELECT * FROM _prices_arrow")
        conn.unregister("_prices_arrow")
        if price_models is not None:
            conn.register(
                "_price_models_arrow", _select(price_models, PRICE_MODELS_SCHEMA, "price_models")
            )
            conn.execute("DELETE FROM price_models")
            conn.execute("INSERT INTO price_models SELECT * FROM _price_models_arrow")
            conn.unregister("_price_models_arrow")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def query(
    conn: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    retries: int = 2,
    backoff_s: float = 0.02,
) -> pa.Table:
    """Run a query and return Arrow; retry when a segment vanished under it (compaction).

    It runs through ``execute`` rather than ``sql``: the relational API binds a statement twice
    (once to build the relation), which costs a scoped query over the lake about 0.07 s of its
    0.21 s; the extra copy of the (small) result that ``execute`` makes costs nothing here.
    """
    attempt = 0
    while True:
        try:
            return conn.execute(sql, params).to_arrow_table()
        except duckdb.IOException as exc:
            # Compaction unlinks its inputs one by one: give it a moment to finish.
            if attempt >= retries:
                raise
            attempt += 1
            log.debug("query hit a vanished segment, retry %d: %s", attempt, exc)
            time.sleep(backoff_s * attempt)


def _select(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    missing = [name for name in schema.names if name not in table.column_names]
    required = [f.name for f in schema if not f.nullable]
    if any(name in required for name in missing):
        raise ValueError(f"{what}: missing column(s) {missing}")
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
