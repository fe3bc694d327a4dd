"""The trace list: every filter against a Python reference, sorting, stable paging, sampling."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.cost import install_prices
from analytics.scope import Scope
from analytics.traces import (
    FEEDBACK_SIGNALS,
    SORT_COLUMNS,
    TRACE_COLUMNS,
    Range,
    TraceFilter,
    list_labels,
    list_operations,
    list_traces,
    read_trace_rows,
    sample_traces,
    sessions_by_user,
)
from store.catalog import open_catalog
from tests.analytics.traces_lake import WINDOW, RefTrace, call_costs, make_lake, reference_traces

SCOPE = Scope("default", *WINDOW)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[RefTrace]]:
    data_dir, rows, feedback = make_lake(tmp_path_factory.mktemp("traces"))
    conn = open_catalog(data_dir)
    labels: dict[str, set[str]] = defaultdict(set)
    for trace_id, label in conn.execute("SELECT trace_id, label FROM annotations").fetchall():
        labels[trace_id].add(label)
    return data_dir, reference_traces(rows, feedback, call_costs(data_dir), labels)


@pytest.fixture(scope="module")
def conn(lake: tuple[Path, list[RefTrace]]) -> duckdb.DuckDBPyConnection:
    connection = open_catalog(lake[0])
    install_prices(connection)
    return connection


@pytest.fixture(scope="module")
def in_window(lake: tuple[Path, list[RefTrace]]) -> list[RefTrace]:
    return [t for t in lake[1] if SCOPE.start <= t.start_time < SCOPE.end]


def _ids(conn: duckdb.DuckDBPyConnection, filters: TraceFilter, scope: Scope = SCOPE) -> set[str]:
    page = list_traces(conn, scope, filters, limit=10_000)
    assert page.num_total == page.rows.height
    return set(page.rows["trace_id"].to_list())


def _in(low: float | None, value: float | None, high: float | None) -> bool:
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value <= high)


FILTER_CASES: list[tuple[str, TraceFilter, Callable[[RefTrace], bool]]] = [
    ("none", TraceFilter(), lambda t: True),
    ("error", TraceFilter(status="error"), lambda t: t.has_error),
    ("ok", TraceFilter(status="ok"), lambda t: not t.has_error),
    ("user", TraceFilter(user_id="u2"), lambda t: "u2" in t.users),
    ("session", TraceFilter(session_id="s1"), lambda t: "s1" in t.sessions),
    (
        "operation",
        TraceFilter(operations=("execute_tool",)),
        lambda t: "execute_tool" in t.operations,
    ),
    ("guardrail", TraceFilter(guardrail=True), lambda t: t.guardrail_triggered),
    ("no guardrail", TraceFilter(guardrail=False), lambda t: not t.guardrail_triggered),
    ("thumbs down", TraceFilter(feedback=("thumbs_down",)), lambda t: "thumbs_down" in t.feedback),
    (
        "edited or commented",
        TraceFilter(feedback=("edited", "commented")),
        lambda t: bool({"edited", "commented"} & t.feedback),
    ),
    ("low rating", TraceFilter(feedback=("low_rating",)), lambda t: "low_rating" in t.feedback),
    ("label", TraceFilter(label="hallucination"), lambda t: "hallucination" in t.labels),
    (
        "search",
        TraceFilter(search="REFUND"),
        lambda t: any("refund" in x.lower() for x in t.texts),
    ),
    (
        "search is literal",
        TraceFilter(search="100%_s"),
        lambda t: any("100%_s" in x for x in t.texts),
    ),
    (
        "search unicode",
        TraceFilter(search="ünïcode"),
        lambda t: any("Ünïcode" in x for x in t.texts),
    ),
    (
        "latency",
        TraceFilter(ranges=(Range("duration_ms", 500.0, 2500.0),)),
        lambda t: _in(500.0, t.duration_ms, 2500.0),
    ),
    (
        "ttft",
        TraceFilter(ranges=(Range("ttft_ms", 200.0, None),)),
        lambda t: _in(200.0, t.ttft_ms, None),
    ),
    (
        "cost",
        TraceFilter(ranges=(Range("total_cost_usd", None, 0.01),)),
        lambda t: _in(None, t.total_cost_usd, 0.01),
    ),
    (
        "tokens",
        TraceFilter(ranges=(Range("total_tokens", 3000, 9000),)),
        lambda t: _in(3000, t.total_tokens, 9000),
    ),
    (
        "input tokens",
        TraceFilter(ranges=(Range("input_tokens", 4000, None),)),
        lambda t: _in(4000, t.input_tokens, None),
    ),
    (
        "combined",
        TraceFilter(
            status="ok",
            user_id="u1",
            search="how",
            ranges=(Range("duration_ms", 100.0, None), Range("output_tokens", 1, None)),
        ),
        lambda t: (
            not t.has_error
            and "u1" in t.users
            and any("how" in x.lower() for x in t.texts)
            and t.duration_ms >= 100.0
            and t.output_tokens >= 1
        ),
    ),
]


@pytest.mark.parametrize(
    ("name", "filters", "keep"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES]
)
def test_each_filter_matches_the_reference(
    conn: duckdb.DuckDBPyConnection,
    in_window: list[RefTrace],
    name: str,
    filters: TraceFilter,
    keep: Callable[[RefTrace], bool],
) -> None:
    expected = {t.trace_id for t in in_window if keep(t)}
    assert len(expected) > 0 or name in ("low rating",), f"{name}: the fixture should exercise it"
    assert _ids(conn, filters) == expected


def test_the_list_is_requests_whose_root_started_in_the_window(
    conn: duckdb.DuckDBPyConnection, lake: tuple[Path, list[RefTrace]]
) -> None:
    listed = _ids(conn, TraceFilter())
    every = {t.trace_id for t in lake[1]}
    # Roots before the window, rootless traces and other projects are not listed.
    assert listed < every
    assert not _ids(conn, TraceFilter(search="orphan"))
    assert not _ids(conn, TraceFilter(search="edge refund"))


def test_scope_filters_apply_to_the_root(
    conn: duckdb.DuckDBPyConnection, in_window: list[RefTrace]
) -> None:
    scope = Scope("default", *WINDOW, services=("worker",))
    assert _ids(conn, TraceFilter(), scope) == {
        t.trace_id for t in in_window if t.service_name == "worker"
    }
    scope = Scope("default", *WINDOW, models=("gpt-4o-2024-08-06",))
    assert _ids(conn, TraceFilter(), scope) == {
        t.trace_id for t in in_window if "gpt-4o-2024-08-06" in t.models
    }
    scope = Scope("default", *WINDOW, routes=("POST /search",))
    assert _ids(conn, TraceFilter(), scope) == {
        t.trace_id for t in in_window if t.name == "POST /search"
    }


def test_trace_ids_filter(conn: duckdb.DuckDBPyConnection, in_window: list[RefTrace]) -> None:
    wanted = {t.trace_id for t in in_window[:5]} | {"not-a-trace"}
    assert _ids(conn, TraceFilter(trace_ids=tuple(wanted))) == wanted - {"not-a-trace"}
    assert _ids(conn, TraceFilter(trace_ids=())) == set()


def test_rows_have_the_reference_values(
    conn: duckdb.DuckDBPyConnection, in_window: list[RefTrace]
) -> None:
    rows = list_traces(conn, SCOPE, limit=10_000).rows
    assert tuple(rows.columns) == TRACE_COLUMNS
    expected = {t.trace_id: t for t in in_window}
    for row in rows.iter_rows(named=True):
        ref = expected[row["trace_id"]]
        assert row["start_time"] == ref.start_time
        assert row["name"] == ref.name and row["service_name"] == ref.service_name
        assert row["duration_ms"] == pytest.approx(ref.duration_ms)
        assert row["ttft_ms"] == pytest.approx(ref.ttft_ms)
        assert (row["input_tokens"], row["output_tokens"]) == (ref.input_tokens, ref.output_tokens)
        assert row["total_tokens"] == ref.total_tokens
        assert row["total_cost_usd"] == pytest.approx(ref.total_cost_usd)
        assert row["has_error"] == ref.has_error
        assert row["guardrail_triggered"] == ref.guardrail_triggered
        assert tuple(row["models"]) == ref.models
        assert set(row["labels"]) == ref.labels
        assert (row["thumbs_down"] > 0) == ("thumbs_down" in ref.feedback)
        assert (row["num_edits"] > 0) == ("edited" in ref.feedback)
        assert row["user_id"] in ref.users | {None}


def _sort_key(column: str) -> Callable[[RefTrace], Any]:
    return {
        "start_time": lambda t: t.start_time,
        "duration_ms": lambda t: t.duration_ms,
        "ttft_ms": lambda t: t.ttft_ms,
        "total_cost_usd": lambda t: t.total_cost_usd,
        "total_tokens": lambda t: t.total_tokens,
    }[column]


@pytest.mark.parametrize("sort", SORT_COLUMNS)
@pytest.mark.parametrize("descending", [True, False])
def test_pages_are_stable_and_in_order(
    conn: duckdb.DuckDBPyConnection, in_window: list[RefTrace], sort: str, descending: bool
) -> None:
    key = _sort_key(sort)
    present = sorted(
        (t for t in in_window if key(t) is not None),
        key=lambda t: (key(t), t.trace_id),
        reverse=descending,
    )
    missing = sorted(
        (t for t in in_window if key(t) is None), key=lambda t: t.trace_id, reverse=descending
    )
    expected = [t.trace_id for t in present + missing]  # missing values sort last either way
    size = 16
    seen: list[str] = []
    for number in range(math.ceil(len(expected) / size) + 1):
        page = list_traces(
            conn, SCOPE, sort=sort, descending=descending, limit=size, offset=number * size
        )
        assert page.num_total == len(expected)
        seen += page.rows["trace_id"].to_list()
    assert seen == expected


def test_sampling_is_seeded_and_draws_from_the_filtered_set(
    conn: duckdb.DuckDBPyConnection, in_window: list[RefTrace]
) -> None:
    filters = TraceFilter(status="ok")
    pool = sorted(t.trace_id for t in in_window if not t.has_error)
    for seed in (1, 2, 99):
        drawn = sample_traces(conn, SCOPE, filters, num=10, seed=seed)["trace_id"].to_list()
        expected = sorted(pool, key=lambda i: (hashlib.md5(f"{i}{seed}".encode()).hexdigest(), i))
        assert drawn == expected[:10]
    first = sample_traces(conn, SCOPE, filters, num=10, seed=1)["trace_id"].to_list()
    assert sample_traces(conn, SCOPE, filters, num=10, seed=1)["trace_id"].to_list() == first
    assert sample_traces(conn, SCOPE, filters, num=10, seed=2)["trace_id"].to_list() != first
    assert sample_traces(conn, SCOPE, TraceFilter(search="no such text"), num=10).is_empty()


def test_sessions_by_user(conn: duckdb.DuckDBPyConnection, in_window: list[RefTrace]) -> None:
    sessions = sessions_by_user(conn, SCOPE, "u3")
    mine = [t for t in in_window if "u3" in t.users]
    by_session: dict[str | None, list[RefTrace]] = defaultdict(list)
    for t in mine:
        by_session[min(t.sessions) if t.sessions else None].append(t)
    shown = {row["session_id"]: row for row in sessions.iter_rows(named=True)}
    assert set(shown) == set(by_session)
    for session, traces in by_session.items():
        row = shown[session]
        assert row["num_traces"] == len(traces)
        assert row["num_errors"] == sum(t.has_error for t in traces)
        assert row["start_time"] == min(t.start_time for t in traces)
        assert row["total_cost_usd"] == pytest.approx(sum(t.total_cost_usd or 0 for t in traces))
    assert sessions_by_user(conn, SCOPE, "nobody").is_empty()


def test_filter_lists(conn: duckdb.DuckDBPyConnection) -> None:
    assert {"chat", "execute_tool", "guardrail"} <= set(list_operations(conn, SCOPE))
    assert list_labels(conn, SCOPE) == ["good", "hallucination"]


def test_values_are_bound_not_formatted(conn: duckdb.DuckDBPyConnection) -> None:
    nasty = "'; DROP VIEW spans; --"
    assert _ids(conn, TraceFilter(search=nasty, user_id=nasty, label=nasty)) == set()
    assert list_traces(conn, SCOPE, limit=1).num_total > 0


def test_bad_arguments_are_refused(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="sort"):
        list_traces(conn, SCOPE, sort="name")
    with pytest.raises(ValueError, match="limit"):
        list_traces(conn, SCOPE, limit=0)
    with pytest.raises(ValueError, match="filter on"):
        Range("name", 1.0)
    with pytest.raises(ValueError, match="feedback"):
        TraceFilter(feedback=("angry",))
    assert set(FEEDBACK_SIGNALS) >= {"thumbs_down", "edited"}


def test_empty_pages(conn: duckdb.DuckDBPyConnection) -> None:
    page = list_traces(conn, SCOPE, TraceFilter(search="no such text"))
    assert page.num_total == 0 and page.rows.is_empty()
    assert tuple(page.rows.columns) == TRACE_COLUMNS
    assert read_trace_rows(conn, "default", [], []).columns == list(TRACE_COLUMNS)
