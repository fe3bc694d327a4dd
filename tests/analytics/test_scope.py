"""Scopes: the half-open window, filters, bound values, and the filter-widget lists."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from analytics.overview import overview_summary
from analytics.scope import (
    TRACE_MARGIN,
    Scope,
    data_time_range,
    list_models,
    list_projects,
    list_services,
    quote_identifier,
    run_scoped,
)
from store.catalog import open_catalog
from tests.analytics.lake import T0, span, write_lake

START = T0
END = T0 + timedelta(hours=1)
TRICKY_PROJECT = "it's; DROP TABLE spans; --"


def _trace(
    start: datetime, service: str, model: str, project: str = "p"
) -> list[dict[str, object]]:
    root = span(project=project, start_time=start, service_name=service, duration_ms=50.0)
    call = span(
        project=project,
        trace_id=root["trace_id"],
        parent_span_id=root["span_id"],
        start_time=start,
        duration_ms=40.0,
        service_name=service,
        operation="chat",
        provider="openai",
        request_model=model,
        response_model=model,
        input_tokens=10,
        output_tokens=5,
    )
    return [root, call]


ROWS = [
    *_trace(START - timedelta(microseconds=1), "api", "gpt-4o"),  # just before: out
    *_trace(START, "api", "gpt-4o"),  # exactly start: in
    *_trace(START + timedelta(minutes=30), "worker", "gpt-4o-mini"),  # in
    *_trace(END - timedelta(microseconds=1), "api", "gpt-4o-mini"),  # last instant: in
    *_trace(END, "api", "gpt-4o"),  # exactly end: out
    *_trace(START, "api", "gpt-4o", project="q"),  # another project: out
    *_trace(START, "api", "claude-3-5-haiku", project=TRICKY_PROJECT),
]


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    return open_catalog(Path(write_lake(tmp_path_factory.mktemp("scope"), ROWS)))


def _count(conn: duckdb.DuckDBPyConnection, scope: Scope, relation: str) -> int:
    table = run_scoped(conn, scope, f"SELECT count(*) AS n FROM {quote_identifier(relation)}")
    return int(table.column("n")[0].as_py())


@pytest.mark.parametrize("relation", ["scoped_traces", "scoped_llm_calls"])
def test_window_includes_start_and_excludes_end(
    conn: duckdb.DuckDBPyConnection, relation: str
) -> None:
    assert _count(conn, Scope("p", START, END), relation) == 3


def test_scoped_spans_use_the_same_window(conn: duckdb.DuckDBPyConnection) -> None:
    assert _count(conn, Scope("p", START, END), "scoped_spans") == 6


@pytest.mark.parametrize(
    ("services", "models", "expected"),
    [
        (("api",), (), 2),
        (("worker",), (), 1),
        (("api", "worker"), (), 3),
        ((), ("gpt-4o",), 1),
        ((), ("gpt-4o-mini",), 2),
        (("api",), ("gpt-4o-mini",), 1),
        (("nope",), (), 0),
    ],
)
def test_service_and_model_filters(
    conn: duckdb.DuckDBPyConnection,
    services: tuple[str, ...],
    models: tuple[str, ...],
    expected: int,
) -> None:
    scope = Scope("p", START, END, services=services, models=models)
    for relation in ("scoped_traces", "scoped_llm_calls"):
        assert _count(conn, scope, relation) == expected, relation


def test_values_are_bound_not_formatted(conn: duckdb.DuckDBPyConnection) -> None:
    summary = overview_summary(conn, Scope(TRICKY_PROJECT, START, END))
    assert summary.num_requests == 1
    assert "spans" in {row[0] for row in conn.execute("SHOW TABLES").fetchall()}


def test_filter_lists(conn: duckdb.DuckDBPyConnection) -> None:
    assert list_projects(conn) == sorted(["p", "q", TRICKY_PROJECT])
    assert list_services(conn, "p") == ["api", "worker"]
    assert list_models(conn, "p") == ["gpt-4o", "gpt-4o-mini"]
    assert list_services(conn, "absent") == []


def test_data_time_range(conn: duckdb.DuckDBPyConnection) -> None:
    first, last = data_time_range(conn, "p")
    assert first == START - timedelta(microseconds=1)
    assert last == END
    assert data_time_range(conn, "absent") == (None, None)


def test_scope_validates_and_normalises() -> None:
    with pytest.raises(ValueError):
        Scope("p", START.replace(tzinfo=None), END)
    with pytest.raises(ValueError):
        Scope("p", END, START)
    scope = Scope("p", START, END, services=("b", "a", "a"))
    assert scope.services == ("a", "b")
    assert scope == Scope("p", START, END, services=("a", "b"))


def test_quote_identifier() -> None:
    assert quote_identifier("duration_ms") == '"duration_ms"'
    assert quote_identifier('we"ird') == '"we""ird"'


def test_metric_params_cannot_shadow_the_scope(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError):
        run_scoped(conn, Scope("p", START, END), "SELECT 1", {"project": "q"})


def test_scoped_traces_count_spans_within_the_trace_margin(tmp_path: Path) -> None:
    """A trace counts its spans up to TRACE_MARGIN outside the window, and no further."""

    def long_trace(call_offset: timedelta) -> list[dict[str, object]]:
        root = span(project="p", start_time=START + timedelta(minutes=30), duration_ms=10.0)
        call = span(
            project="p",
            trace_id=root["trace_id"],
            parent_span_id=root["span_id"],
            start_time=START + timedelta(minutes=30) + call_offset,
            operation="chat",
            response_model="gpt-4o",
            input_tokens=100,
            output_tokens=10,
        )
        return [root, call]

    # the window ends 30 min after the root; one call lands 2 h later, one beyond the margin
    inside_margin = long_trace(timedelta(hours=2))
    beyond_margin = long_trace(TRACE_MARGIN + timedelta(hours=1))
    before_window = span(project="p", start_time=START - timedelta(hours=3), duration_ms=5.0)
    late_child = span(
        project="p",
        trace_id=before_window["trace_id"],
        parent_span_id=before_window["span_id"],
        start_time=START + timedelta(minutes=1),
    )
    conn = open_catalog(
        write_lake(tmp_path, [*inside_margin, *beyond_margin, before_window, late_child])
    )
    rows = run_scoped(
        conn,
        Scope("p", START, END),
        "SELECT trace_id, input_tokens FROM scoped_traces ORDER BY input_tokens",
    ).to_pylist()
    by_trace = {r["trace_id"]: r["input_tokens"] for r in rows}
    # the trace that began 3 h before the window is not a request of this window
    assert before_window["trace_id"] not in by_trace
    assert by_trace[inside_margin[0]["trace_id"]] == 100
    assert by_trace[beyond_margin[0]["trace_id"]] == 0  # the documented limit of the margin
