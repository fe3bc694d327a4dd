"""The Collector's spans into Flywheel's ``spans`` table, normalized once, as they arrive.

The OpenTelemetry Collector's ClickHouse exporter writes raw OTLP rows to ``otel_traces``;
``ingest.clickhouse_spans.spans_select_sql`` turns them into canonical spans, by the same
conventions file the ingest normalizer is built from. Reading that SELECT as a view would make
ClickHouse analyse its SQL (about 150 KB) and normalize every row again in every query: about
half a second of planning alone, per query. Instead :func:`link_collector` creates a
materialized view ``TO spans`` over ``otel_traces``, so each insert of the exporter's is
normalized once and stored beside the spans Flywheel writes itself, and the analytics read one
table. It also keeps the plain view ``otel_spans`` (the same SELECT, normalizing at read
time), which the copy below reads.

The materialized view's name carries a hash of its SQL. When the conventions change (a Flywheel
upgrade), the old view is dropped first and the new one created, and then every row of
``otel_traces`` whose span is not in ``spans`` yet is copied through the new SELECT: rows stored
before the link existed, and rows the exporter inserted while the views were being replaced.
Spans already stored keep the normalization they were stored with, as in the Parquet lake.

Limits: the copy skips spans by ``(trace_id, span_id)`` with a set of the keys of ``spans``
(about 60 bytes a span in the server's memory, once per link); an insert that lands while the
copy runs can be stored twice. A span sent both to the Collector and to Flywheel's receiver is
stored twice: send each span one way.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from store.catalog import quote_identifier
from store.schema import SPAN_SCHEMA

if TYPE_CHECKING:
    from store.clickhouse.catalog import Engine

__all__ = ["LINK_PREFIX", "OTEL_SPANS_VIEW", "link_collector", "link_name"]

#: The materialized views' name prefix (then 16 hex digits of the SELECT's SHA-256).
LINK_PREFIX = "otel_traces_to_spans_"
#: The plain view of the Collector's spans, normalized at read time.
OTEL_SPANS_VIEW = "otel_spans"

_EXISTING_SQL = (
    "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {p:String})"
)
_HAS_TABLE_SQL = (
    "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = {t:String}"
)


def link_name(select_sql: str) -> str:
    """The materialized view's name for ``select_sql``."""
    return LINK_PREFIX + hashlib.sha256(select_sql.encode()).hexdigest()[:16]


def link_collector(engine: Engine, database: str, select_sql: str) -> bool:
    """Make the Collector's ``otel_traces`` (if the table exists) feed ``spans`` through
    ``select_sql``; True when it does. Cheap when the link is already in place (one query)."""
    exists = engine.query(_HAS_TABLE_SQL, {"db": database, "t": "otel_traces"})
    if not exists["n"][0].as_py():
        return False
    name = link_name(select_sql)
    existing = engine.query(_EXISTING_SQL, {"db": database, "p": LINK_PREFIX})["name"].to_pylist()
    if name in existing:
        return True
    for old in existing:  # another conventions file's: first, so no insert goes through both
        engine.query(f"DROP VIEW IF EXISTS {database}.{old}", {})
    engine.query(f"CREATE OR REPLACE VIEW {database}.{OTEL_SPANS_VIEW} AS {select_sql}", {})
    engine.query(
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{name} TO {database}.spans "
        f"AS {select_sql}",
        {},
    )
    columns = ", ".join(quote_identifier(c) for c in SPAN_SCHEMA.names)
    engine.query(
        f"INSERT INTO {database}.spans ({columns}) SELECT {columns} "
        f"FROM {database}.{OTEL_SPANS_VIEW} "
        f"WHERE (trace_id, span_id) NOT IN (SELECT trace_id, span_id FROM {database}.spans)",
        {},
    )
    return True
