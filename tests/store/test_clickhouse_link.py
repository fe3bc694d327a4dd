"""The Collector's ``otel_traces`` feeding ``spans`` through a materialized view (chdb).

The reference is the plain view ``otel_spans``: the same SELECT, evaluated when read. Whatever
reached ``spans`` (copied when the link was made, or normalized on insert by the materialized
view) must equal it row for row, once each, across a change of the SELECT (new conventions).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from ingest.clickhouse_rows import otel_traces_rows
from ingest.clickhouse_spans import spans_select_sql
from store.clickhouse import otel_traces_ddl
from store.clickhouse.catalog import ChdbEngine, create_tables
from store.clickhouse.link import LINK_PREFIX, link_collector, link_name
from store.lake import DEFAULT_SPECS
from store.schema import SPAN_SCHEMA
from tests.clickhouse_session import clickhouse_fixture, database_fixture  # noqa: F401
from tests.engines import sample_requests

COLUMNS = ", ".join(f"`{c}`" for c in SPAN_SCHEMA.names)


@pytest.fixture
def engine(clickhouse: Any, database: str) -> ChdbEngine:
    engine = ChdbEngine(clickhouse, database)
    create_tables(engine, database, DEFAULT_SPECS)
    return engine


def _insert(engine: ChdbEngine, requests: list[Any]) -> None:
    engine.insert("otel_traces", pa.concat_tables(otel_traces_rows(r) for r in requests))


def _rows(engine: ChdbEngine, relation: str) -> list[dict[str, Any]]:
    sql = f"SELECT {COLUMNS} FROM {engine.database}.{relation} ORDER BY trace_id, span_id"
    return engine.query(sql, {}).to_pylist()


def _links(engine: ChdbEngine) -> list[str]:
    found = engine.query(
        "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": engine.database},
    )
    return [n for n in found["name"].to_pylist() if n.startswith(LINK_PREFIX)]


def test_without_the_collectors_table_nothing_is_linked(engine: ChdbEngine) -> None:
    select = spans_select_sql(f"{engine.database}.otel_traces")
    assert not link_collector(engine, engine.database, select)
    assert _links(engine) == []


def test_spans_stored_before_and_after_the_link_equal_the_view(engine: ChdbEngine) -> None:
    requests = sample_requests()
    engine.query(otel_traces_ddl(engine.database), {})
    _insert(engine, requests[:10])  # before: copied when the link is made
    select = spans_select_sql(f"{engine.database}.otel_traces")
    assert link_collector(engine, engine.database, select)
    assert _links(engine) == [link_name(select)]
    _insert(engine, requests[10:])  # after: normalized on insert
    assert link_collector(engine, engine.database, select)  # again: nothing to do
    stored, expected = _rows(engine, "spans"), _rows(engine, "otel_spans")
    assert len(expected) > 1000 and len({(r["trace_id"], r["span_id"]) for r in expected}) == len(
        expected
    )
    assert stored == expected


def test_new_conventions_replace_the_link_without_storing_a_span_twice(
    engine: ChdbEngine,
) -> None:
    requests = sample_requests()
    engine.query(otel_traces_ddl(engine.database), {})
    old = spans_select_sql(f"{engine.database}.otel_traces")
    link_collector(engine, engine.database, old)
    _insert(engine, requests[:5])
    # A new conventions file: the same spans under another service name, say.
    new = f"SELECT * REPLACE ('renamed' AS service_name) FROM ({old})"
    assert link_collector(engine, engine.database, new)
    assert _links(engine) == [link_name(new)]  # the old one is gone
    _insert(engine, requests[5:8])
    stored = _rows(engine, "spans")
    keys = [(r["trace_id"], r["span_id"]) for r in stored]
    assert len(keys) == len(set(keys))
    everything = engine.query(f"SELECT count() AS n FROM {engine.database}.otel_traces", {})
    assert len(stored) == everything["n"][0].as_py()
    # Spans stored before the change keep their normalization; later ones take the new one.
    first = {(r["trace_id"], r["span_id"]) for r in _rows_of(engine, requests[:5])}
    for row in stored:
        renamed = row["service_name"] == "renamed"
        assert renamed == ((row["trace_id"], row["span_id"]) not in first)


def _rows_of(engine: ChdbEngine, requests: list[Any]) -> list[dict[str, Any]]:
    rows = pa.concat_tables(otel_traces_rows(r) for r in requests)
    return [{"trace_id": t, "span_id": s} for t, s in zip(
        rows.column("TraceId").to_pylist(), rows.column("SpanId").to_pylist(), strict=True
    )]  # fmt: skip
