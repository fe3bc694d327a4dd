"""The Traces page: list → trace → span → session, filters in the URL, paging, sampling, notes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import duckdb
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from analytics.cost import install_prices
from analytics.scope import Scope, data_time_range
from analytics.trace_detail import read_session, read_trace
from analytics.traces import Range, TraceFilter, list_traces, sample_traces, sessions_by_user
from app import components as ui
from app.trace_view import BAR_WIDTH
from store.catalog import open_catalog, query
from tests.analytics.traces_lake import make_lake

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "traces.py")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lake(tmp_path_factory.mktemp("traces-page"))[0]


@pytest.fixture(scope="module")
def conn(lake: Path) -> duckdb.DuckDBPyConnection:
    connection = open_catalog(lake)
    install_prices(connection)
    return connection


@pytest.fixture(scope="module")
def scope(conn: duckdb.DuckDBPyConnection) -> Scope:
    """What the sidebar selects with ``range=all``."""
    first, last = data_time_range(conn, "default")
    assert first is not None and last is not None
    window = ui.preset_window("all", first, last)
    return Scope("default", window.start, window.end)


def _run(lake: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(lake))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.query_params["range"] = "all"
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    _ok(app)
    return app


def _ok(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]


def _shown_ids(app: AppTest, index: int = 0) -> list[str]:
    links = app.dataframe[index].value["open"].to_list()
    return [parse_qs(urlsplit(link).query)["trace"][0] for link in links]


def _url(app: AppTest, key: str) -> list[str]:
    value = app.query_params.get(key)
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _button(app: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in app.button if b.label == label)


def test_the_list_shows_the_newest_requests(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    app = _run(lake, monkeypatch)
    expected = list_traces(conn, scope, limit=50)
    assert _shown_ids(app) == expected.rows["trace_id"].to_list()
    header = " ".join(m.value for m in app.markdown)
    assert f"{ui.format_count(expected.num_total)} requests" in header
    table = app.dataframe[0].value
    first = expected.rows.row(0, named=True)
    assert table["name"][0] == first["name"]
    assert table["duration_ms"][0] == pytest.approx(first["duration_ms"])
    assert table["total_tokens"][0] == first["total_tokens"]
    assert table["status"][0] == ("❌ failed" if first["has_error"] else table["status"][0])


def test_filters_come_from_the_url_and_combine(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    app = _run(
        lake,
        monkeypatch,
        status="ok",
        q="how do",
        feedback=["thumbs_up", "edited"],
        lat_min="100",
        sort="cost",
    )
    filters = TraceFilter(
        status="ok",
        search="how do",
        feedback=("edited", "thumbs_up"),
        ranges=(Range("duration_ms", 100.0),),
    )
    expected = list_traces(conn, scope, filters, sort="total_cost_usd", limit=50)
    assert expected.num_total > 0
    assert _shown_ids(app) == expected.rows["trace_id"].to_list()
    assert app.text_input(key="tf_q").value == "how do"
    assert app.selectbox(key="tf_status").value == "ok"
    assert sorted(app.multiselect(key="tf_feedback").value) == ["edited", "thumbs_up"]
    assert app.selectbox(key="tf_sort").value == "cost"


def test_changing_a_filter_updates_the_url_and_the_rows(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    app = _run(lake, monkeypatch)
    app.selectbox(key="tf_status").set_value("error").run()
    app.text_input(key="tf_q").set_value("refund").run()
    _ok(app)
    assert _url(app, "status") == ["error"] and _url(app, "q") == ["refund"]
    expected = list_traces(conn, scope, TraceFilter(status="error", search="refund"), limit=50)
    assert _shown_ids(app) == expected.rows["trace_id"].to_list()


def test_pages_move_with_the_buttons(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    app = _run(lake, monkeypatch)
    total = list_traces(conn, scope, limit=1).num_total
    assert total > 50, "the fixture needs two pages"
    _button(app, "Older →").click().run()
    _ok(app)
    assert _url(app, "page") == ["2"]
    assert (
        _shown_ids(app) == list_traces(conn, scope, limit=50, offset=50).rows["trace_id"].to_list()
    )
    assert _button(app, "Older →").disabled
    _button(app, "← Newer").click().run()
    assert _url(app, "page") == ["1"]
    assert _shown_ids(app) == list_traces(conn, scope, limit=50).rows["trace_id"].to_list()


def test_random_sample_is_seeded_by_the_url(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    app = _run(lake, monkeypatch, status="ok")
    _button(app, "Read 10 random traces").click().run()
    _ok(app)
    seed = _url(app, "sample")
    assert len(seed) == 1 and seed[0].isdigit()
    expected = sample_traces(conn, scope, TraceFilter(status="ok"), num=10, seed=int(seed[0]))
    assert _shown_ids(app) == expected["trace_id"].to_list()
    # The same link shows the same sample to a colleague.
    again = _run(lake, monkeypatch, status="ok", sample=seed[0])
    assert _shown_ids(again) == expected["trace_id"].to_list()


def test_list_to_trace_to_span_to_session(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    first_page = list_traces(conn, scope, limit=50).rows
    index = next(
        i
        for i, row in enumerate(first_page.iter_rows(named=True))
        if row["session_id"] == "s1" and row["num_spans"] > 2
    )
    pick = first_page.row(index, named=True)
    app = _run(lake, monkeypatch)
    assert _shown_ids(app)[index] == pick["trace_id"]
    # Selecting a row opens the trace (selection state is how a click reaches the page).
    app.session_state["trace_list_0"] = {"selection": {"rows": [index], "columns": [], "cells": []}}
    app.run()
    _ok(app)
    assert _url(app, "trace") == [pick["trace_id"]]
    assert _url(app, "t"), "the link carries the trace's start time"

    trace = read_trace(conn, "default", pick["trace_id"])
    assert trace is not None
    assert [t.value for t in app.title] == [trace.root.name]
    metrics: dict[str, str] = {}
    for m in app.metric:  # the trace's tiles come first, then the span's
        metrics.setdefault(m.label, m.value)
    assert metrics["Spans"] == ui.format_count(trace.tree.height)
    assert metrics["Duration"] == ui.format_ms(trace.duration_ms)
    nav = app.session_state["traces_nav"]
    spans = app.selectbox(key=f"trace_span_{nav}")
    assert spans.options == ["\u2003" * d + n for d, n in trace.tree.select("depth", "name").rows()]
    assert len(app.get("plotly_chart")) == 1  # the waterfall
    figure = json.loads(app.get("plotly_chart")[0].proto.spec)
    bars = [t for t in figure["data"] if t["type"] == "bar"]
    # One bar per span, each on its own row and one row thick, whatever the gap between rows
    # of the same kind.
    assert sorted(y for t in bars for y in t["y"]) == list(range(trace.tree.height))
    assert {w for t in bars for w in t["width"]} == {BAR_WIDTH}

    # Pick another span: its detail shows and the URL names it.
    target = trace.tree.row(trace.tree.height - 1, named=True)
    spans.set_value(target["span_id"]).run()
    _ok(app)
    assert _url(app, "span") == [target["span_id"]]
    headers = [h.value for h in app.subheader]
    assert any(target["name"].replace("_", "\\_") in h or target["name"] in h for h in headers)

    # On to the conversation.
    _button(app, "Conversation").click().run()
    _ok(app)
    assert _url(app, "session") == ["s1"] and not _url(app, "trace")
    session = read_session(conn, "default", "s1")
    assert session is not None
    turns = [c.value for c in app.caption if c.value.startswith("Turn ")]
    assert len(turns) == session.turns.height
    texts = [t.value for t in app.text]
    for preview in session.turns["input_preview"].drop_nulls().to_list()[:5]:
        assert preview in texts


def test_a_deep_link_opens_the_span(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    pick = list_traces(conn, scope, TraceFilter(operations=("chat",)), limit=1).rows.row(
        0, named=True
    )
    trace = read_trace(conn, "default", pick["trace_id"])
    assert trace is not None
    chat = trace.tree.filter(pl.col("category") == "llm").row(0, named=True)
    app = _run(lake, monkeypatch, trace=pick["trace_id"], span=chat["span_id"])
    assert app.selectbox(key="trace_span_0").value == chat["span_id"]
    span = trace.span(chat["span_id"])
    assert span is not None
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Input tokens"] == ui.format_count(span.input_tokens)
    if span.input_text:
        assert any(span.input_text in t.value for t in app.text)


def test_annotating_a_trace_writes_it_to_the_lake(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    rows = list_traces(conn, scope, limit=50).rows
    pick = rows.filter(pl.col("labels").list.len() == 0)["trace_id"][0]
    app = _run(lake, monkeypatch, trace=pick)
    form_inputs = {t.label: t for t in app.text_input}
    form_inputs["Label"].input("needs review")
    form_inputs["Author"].input("tester")
    next(b for b in app.button if b.label == "Save annotation").click().run()
    _ok(app)
    assert any("Saved" in s.value for s in app.success)
    stored = query(
        open_catalog(lake),
        "SELECT label, author FROM annotations WHERE trace_id = $t",
        {"t": pick},
    ).to_pylist()
    assert stored == [{"label": "needs review", "author": "tester"}]
    shown = app.dataframe[-1].value  # the trace's annotations, reread after saving
    assert shown["label"].to_list() == ["needs review"]


def test_user_view_lists_their_sessions(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    app = _run(lake, monkeypatch, user="u2")
    sessions = sessions_by_user(conn, scope, "u2")
    assert sessions.height > 0
    table = app.dataframe[0].value
    assert table["num_traces"].to_list() == sessions["num_traces"].to_list()
    expected = list_traces(conn, scope, TraceFilter(user_id="u2"), limit=50)
    assert _shown_ids(app, 1) == expected.rows["trace_id"].to_list()


def test_an_unknown_trace_says_so(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, trace="0" * 32)
    assert any("No trace" in w.value for w in app.warning)


def test_a_link_window_overrides_the_range(
    lake: Path, monkeypatch: pytest.MonkeyPatch, conn: duckdb.DuckDBPyConnection, scope: Scope
) -> None:
    app = _run(lake, monkeypatch, **{"from": "2025-03-01T10:00:00Z", "to": "2025-03-01T20:00:00Z"})
    narrow = Scope(
        "default",
        datetime(2025, 3, 1, 10, tzinfo=UTC),
        datetime(2025, 3, 1, 20, tzinfo=UTC),
    )
    expected = list_traces(conn, narrow, limit=50)
    assert _shown_ids(app) == expected.rows["trace_id"].to_list()
    assert any("Window from the link" in c.value for c in app.caption)
