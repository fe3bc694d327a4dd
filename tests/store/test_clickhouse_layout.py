"""The sample data in the Collector ClickHouse exporter's ``otel_traces`` table, on real ClickHouse.

chdb runs the ClickHouse engine in-process; one session serves the whole test run (chdb allows one
data path per process) and each test works in its own database.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from chdb import session as chdb_session

from ingest.files import iter_file
from store.clickhouse import (
    PROJECT_ATTRIBUTE,
    SPAN_KIND_NAMES,
    STATUS_CODE_NAMES,
    collector_rows,
    otel_traces_ddl,
)
from store.schema import SPAN_SCHEMA
from tests.clickhouse_session import clickhouse_fixture, database_fixture  # noqa: F401

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "data" / "traces.pb.gz"


@pytest.fixture(scope="module")
def spans() -> pa.Table:
    return pa.concat_tables(batch.spans for batch in iter_file(SAMPLE, project="shop"))


def _load(session: chdb_session.Session, database: str, rows: pa.Table, tmp: Path) -> None:
    path = tmp / "rows.parquet"
    pq.write_table(rows, path)
    session.query(otel_traces_ddl(database))
    session.query(f"INSERT INTO {database}.otel_traces SELECT * FROM file('{path}', Parquet)")


def _one(session: chdb_session.Session, sql: str) -> list[str]:
    return str(session.query(sql, "TSV")).strip().split("\t")


def test_the_exporters_ddl_creates_the_table(clickhouse, database) -> None:  # type: ignore[no-untyped-def]
    clickhouse.query(otel_traces_ddl(database))
    columns = str(
        clickhouse.query(
            f"SELECT name, type FROM system.columns WHERE database = '{database}' "
            "AND table = 'otel_traces' ORDER BY position",
            "TSV",
        )
    ).splitlines()
    assert columns[0] == "Timestamp\tDateTime64(9)"
    assert "Duration\tUInt64" in columns
    assert "Events.Attributes\tArray(Map(LowCardinality(String), String))" in columns


def test_the_sample_data_loads_in_the_collector_layout(  # type: ignore[no-untyped-def]
    clickhouse, database, spans: pa.Table, tmp_path: Path
) -> None:
    _load(clickhouse, database, collector_rows(spans), tmp_path)
    table = f"{database}.otel_traces"
    count, traces, duration_ns = _one(
        clickhouse, f"SELECT count(), uniqExact(TraceId), sum(Duration) FROM {table}"
    )
    assert int(count) == spans.num_rows
    assert int(traces) == len(pc.unique(spans.column("trace_id")))
    expected_ns = pc.sum(
        pc.subtract(
            spans.column("end_time").cast(pa.int64()), spans.column("start_time").cast(pa.int64())
        )
    ).as_py()
    assert int(duration_ns) == expected_ns  # nanoseconds survive, unrounded
    roots, projects = _one(
        clickhouse,
        f"SELECT countIf(ParentSpanId = ''), uniqExact(ResourceAttributes['{PROJECT_ATTRIBUTE}']) "
        f"FROM {table}",
    )
    assert int(roots) == pc.sum(pc.is_null(spans.column("parent_span_id"))).as_py()
    assert projects == "1"
    kinds = dict(
        line.split("\t")
        for line in str(
            clickhouse.query(f"SELECT SpanKind, count() FROM {table} GROUP BY SpanKind", "TSV")
        ).splitlines()
    )
    expected_kinds = Counter(SPAN_KIND_NAMES[k] for k in spans.column("kind").to_pylist())
    assert {k: int(v) for k, v in kinds.items()} == dict(expected_kinds)
    errors = _one(clickhouse, f"SELECT countIf(StatusCode = 'Error') FROM {table}")[0]
    assert int(errors) == spans.column("status_code").to_pylist().count("ERROR")
    num_events = _one(clickhouse, f"SELECT sum(length(Events.Name)) FROM {table}")[0]
    assert int(num_events) == sum(len(e or []) for e in spans.column("events").to_pylist())


def test_attributes_read_back_as_the_lake_stores_them(  # type: ignore[no-untyped-def]
    clickhouse, database, spans: pa.Table, tmp_path: Path
) -> None:
    _load(clickhouse, database, collector_rows(spans), tmp_path)
    calls = spans.filter(pc.equal(spans.column("operation"), "chat")).slice(0, 20)
    for row in calls.to_pylist():
        got = _one(
            clickhouse,
            "SELECT SpanAttributes['gen_ai.request.model'], SpanAttributes['gen_ai.usage.input_tokens'], "
            f"ScopeName, SpanName FROM {database}.otel_traces WHERE SpanId = '{row['span_id']}'",
        )
        attributes = dict(row["attributes"])
        assert got == [
            attributes.get("gen_ai.request.model", ""),
            attributes.get("gen_ai.usage.input_tokens", ""),
            row["scope_name"] or "",
            row["name"],
        ]


def test_names_the_exporter_would_not_write_are_refused(spans: pa.Table) -> None:
    kind = SPAN_SCHEMA.get_field_index("kind")
    odd = spans.slice(0, 3).set_column(kind, "kind", pa.array(["SERVER", "SIDEWAYS", None]))
    with pytest.raises(ValueError, match="kind: no exporter name for \\['SIDEWAYS'\\]"):
        collector_rows(odd)
    status = SPAN_SCHEMA.get_field_index("status_code")
    fine = spans.slice(0, 3).set_column(status, "status_code", pa.array(["OK", None, "ERROR"]))
    assert collector_rows(fine).column("StatusCode").to_pylist() == [
        STATUS_CODE_NAMES["OK"],
        "Unset",
        "Error",
    ]
