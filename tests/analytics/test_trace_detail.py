"""Opening one trace or session: the span tree, span details, time hints, implicit signals."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analytics.cost import install_prices
from analytics.scope import Scope
from analytics.trace_detail import (
    REGENERATE_WITHIN,
    mark_regenerated,
    read_session,
    read_trace,
    span_category,
)
from analytics.traces import list_traces
from store.catalog import open_catalog
from tests.analytics.lake import T0, new_id, span, write_lake
from tests.analytics.traces_lake import call_costs


def _tree_rows() -> list[dict[str, Any]]:
    trace = new_id(32)
    root = span(
        trace_id=trace, name="POST /chat", kind="SERVER", duration_ms=900.0, session_id="s-9"
    )
    agent = span(
        trace_id=trace,
        parent_span_id=root["span_id"],
        name="invoke_agent",
        operation="invoke_agent",
        start_time=T0 + timedelta(milliseconds=10),
        duration_ms=800.0,
    )
    second = span(
        trace_id=trace,
        parent_span_id=agent["span_id"],
        name="chat second",
        operation="chat",
        response_model="gpt-4o-2024-08-06",
        provider="openai",
        input_tokens=1000,
        output_tokens=101,
        ttft_ms=100.0,
        start_time=T0 + timedelta(milliseconds=300),
        duration_ms=400.0,
        attributes=[
            ("gen_ai.request.temperature", "0.2"),
            ("gen_ai.request.model", "gpt-4o"),
            ("llm.invocation_parameters", '{"max_tokens": 600, "stream": true}'),
        ],
        events=[{"time": T0, "name": "exception", "attributes": [("exception.type", "X")]}],
        status_code="ERROR",
        status_message="boom",
    )
    first = span(
        trace_id=trace,
        parent_span_id=agent["span_id"],
        name="retrieval first",
        operation="retrieval",
        start_time=T0 + timedelta(milliseconds=20),
        duration_ms=50.0,
    )
    guard = span(
        trace_id=trace,
        parent_span_id=root["span_id"],
        name="guardrail",
        operation="guardrail",
        start_time=T0 + timedelta(milliseconds=850),
        duration_ms=5.0,
    )
    late = span(  # its parent never arrived: a tree of its own
        trace_id=trace,
        parent_span_id="ffffffffffffffff",
        name="stray",
        start_time=T0 + timedelta(milliseconds=5),
    )
    return [guard, second, root, late, first, agent]


@pytest.fixture(scope="module")
def tree_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    rows = _tree_rows()
    # Another trace far away in time and one in another project with the same id.
    other = span(start_time=T0 + timedelta(days=30))
    twin = span(project="other", trace_id=rows[0]["trace_id"], name="twin")
    return write_lake(tmp_path_factory.mktemp("tree"), [*rows, other, twin]), rows


@pytest.fixture(scope="module")
def conn(tree_lake: tuple[Path, list[dict[str, Any]]]) -> duckdb.DuckDBPyConnection:
    connection = open_catalog(tree_lake[0])
    install_prices(connection)
    return connection


def test_the_tree_is_depth_first_with_children_by_start(
    conn: duckdb.DuckDBPyConnection, tree_lake: tuple[Path, list[dict[str, Any]]]
) -> None:
    rows = tree_lake[1]
    trace = read_trace(conn, "default", rows[0]["trace_id"], T0)
    assert trace is not None
    names = trace.tree.select("name", "depth").rows()
    assert names == [
        ("POST /chat", 0),
        ("invoke_agent", 1),
        ("retrieval first", 2),
        ("chat second", 2),
        ("guardrail", 1),
        ("stray", 0),
    ]
    assert trace.tree["category"].to_list() == [
        "other",
        "agent",
        "retrieval",
        "llm",
        "guardrail",
        "other",
    ]
    assert trace.tree["num_children"].to_list() == [2, 2, 0, 0, 0, 0]
    assert trace.tree["offset_ms"].to_list() == pytest.approx([0, 10, 20, 300, 850, 5])
    assert trace.duration_ms == pytest.approx(900.0)
    assert trace.root.name == "POST /chat"


def test_span_detail_has_cost_params_events_and_status(
    conn: duckdb.DuckDBPyConnection, tree_lake: tuple[Path, list[dict[str, Any]]]
) -> None:
    rows = tree_lake[1]
    trace = read_trace(conn, "default", rows[0]["trace_id"])
    assert trace is not None
    chat = trace.span(rows[1]["span_id"])
    assert chat is not None
    assert chat.category == "llm" and chat.model == "gpt-4o-2024-08-06"
    assert chat.cost_usd == pytest.approx(call_costs(tree_lake[0])[chat.span_id])
    assert chat.cost_usd is not None and chat.cost_usd > 0
    assert chat.tpot_ms == pytest.approx((400.0 - 100.0) / 100)
    assert chat.request_parameters() == {
        "gen_ai.request.temperature": "0.2",
        "llm.invocation_parameters.max_tokens": 600,
        "llm.invocation_parameters.stream": True,
    }
    assert [(e.name, e.attributes) for e in chat.events] == [("exception", {"exception.type": "X"})]
    assert chat.status_code == "ERROR" and chat.status_message == "boom"
    assert trace.tree.filter(pl.col("span_id") == chat.span_id)["cost_usd"][0] == chat.cost_usd
    assert trace.span("nope") is None


def test_time_hint_narrows_the_read_and_a_wrong_one_falls_back(
    conn: duckdb.DuckDBPyConnection, tree_lake: tuple[Path, list[dict[str, Any]]]
) -> None:
    trace_id = tree_lake[1][0]["trace_id"]
    exact = read_trace(conn, "default", trace_id, T0)
    no_hint = read_trace(conn, "default", trace_id, None)
    wrong = read_trace(conn, "default", trace_id, T0 + timedelta(days=300))
    assert exact is not None and no_hint is not None and wrong is not None
    assert exact.tree.equals(no_hint.tree) and exact.tree.equals(wrong.tree)
    assert read_trace(conn, "default", "0" * 32, T0) is None
    other = read_trace(conn, "other", trace_id)
    assert other is not None and other.tree["name"].to_list() == ["twin"]


def test_a_parent_cycle_shows_each_span_once(tmp_path: Path) -> None:
    trace = new_id(32)
    a_id, b_id = new_id(), new_id()
    rows = [
        span(trace_id=trace, span_id=a_id, parent_span_id=b_id, name="a"),
        span(trace_id=trace, span_id=b_id, parent_span_id=a_id, name="b"),
    ]
    detail = read_trace(open_catalog(write_lake(tmp_path, rows)), "default", trace, T0)
    assert detail is not None and sorted(detail.tree["name"].to_list()) == ["a", "b"]


def test_span_categories() -> None:
    assert span_category("chat") == "llm"
    assert span_category("EMBEDDINGS") == "embedding"
    assert span_category("chain") == "agent"
    assert span_category("apply_guardrail") == "guardrail"
    assert span_category("something_new") == "other"


def _turns(rows: list[tuple[int, float, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "trace_id": [f"t{i}" for i in range(len(rows))],
            "start_time": [T0 + timedelta(seconds=s) for s, _, _ in rows],
            "duration_ms": [d for _, d, _ in rows],
            "input_preview": [text for _, _, text in rows],
        }
    )


def test_regenerated_turns() -> None:
    within = REGENERATE_WITHIN.total_seconds()
    turns = _turns(
        [
            (0, 1000.0, "Where is my order?\nContext: a"),
            (1 + within, 1000.0, "Where is  my order?\nContext: b"),  # same line, 30 s after end
            (100, 1000.0, "Where is my order?"),  # same text but much later
            (102, 500.0, "Something else"),
            (200, 0.0, None),
        ]
    )
    marked = mark_regenerated(turns)
    assert marked["regenerated"].to_list() == [True, False, False, False, False]
    assert marked["turn"].to_list() == [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def sample_conn(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    from app.cli import load_sample_data
    from app.settings import Settings

    data_dir = tmp_path_factory.mktemp("sample")
    assert load_sample_data(Settings(data_dir=data_dir))
    connection = open_catalog(data_dir)
    install_prices(connection)
    return connection


SAMPLE_SCOPE = Scope(
    "default", datetime(2026, 11, 13, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC), ("rag-chat",)
)


def test_regenerations_match_the_sample_facts(sample_conn: duckdb.DuckDBPyConnection) -> None:
    rows = list_traces(sample_conn, SAMPLE_SCOPE, limit=10_000).rows
    assert rows.height == 2698  # rag_chat_traces
    count = 0
    by_session: dict[str, list[int]] = defaultdict(list)
    for index, session in enumerate(rows["session_id"].to_list()):
        by_session[session].append(index)
    for indexes in by_session.values():
        count += int(mark_regenerated(rows[indexes])["regenerated"].sum())
    assert count == 133  # sample_data/README.md, fact `regenerations`


def test_a_session_reads_its_turns_in_order_with_feedback(
    sample_conn: duckdb.DuckDBPyConnection,
) -> None:
    rows = list_traces(sample_conn, SAMPLE_SCOPE, limit=10_000).rows
    with_feedback = rows.filter(pl.col("thumbs_down") > 0)["session_id"][0]
    expected = rows.filter(pl.col("session_id") == with_feedback).sort("start_time")
    session = read_session(sample_conn, "default", with_feedback, expected["start_time"][0])
    assert session is not None
    assert session.turns["trace_id"].to_list() == expected["trace_id"].to_list()
    assert session.turns["turn"].to_list() == list(range(1, expected.height + 1))
    thumbs = session.feedback.filter(pl.col("kind") == "thumbs")
    assert (thumbs["value"] < 0).sum() == expected["thumbs_down"].sum()
    assert set(session.feedback["trace_id"]) <= set(expected["trace_id"])
    assert session.user_ids == sorted(set(expected["user_id"].drop_nulls()))
    again = read_session(sample_conn, "default", with_feedback)  # no hint: the whole lake
    assert again is not None
    assert_frame_equal(again.turns, session.turns, check_exact=False)  # sums may round apart
    assert read_session(sample_conn, "default", "no-such-session") is None
