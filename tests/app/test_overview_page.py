"""The Overview page renders on a small lake and shows exactly what the analytics return."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from analytics.cost import install_prices
from analytics.overview import OverviewSummary, overview_summary
from analytics.scope import Scope, data_time_range
from app import components as ui
from store.catalog import open_catalog
from tests.analytics.lake import random_traces, write_lake

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "overview.py")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = random_traces(seed=5, num_traces=120, span_hours=24 * 10)
    rows += random_traces(seed=6, num_traces=10, project="other")
    return write_lake(tmp_path_factory.mktemp("page"), rows)


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=60)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _expected(data_dir: Path, preset: str, **filters: tuple[str, ...]) -> OverviewSummary:
    conn = open_catalog(data_dir)
    install_prices(conn)
    first, last = data_time_range(conn, "default")
    assert first is not None and last is not None
    window = ui.preset_window(preset, first, last)
    return overview_summary(conn, Scope("default", window.start, window.end, **filters))


def _expected_tiles(summary: OverviewSummary) -> dict[str, str]:
    return {
        "Requests": ui.format_count(summary.num_requests),
        "Traces": ui.format_count(summary.num_traces),
        "Users": ui.format_count(summary.num_users),
        "Error rate": ui.format_percent(summary.error_rate),
        "Latency p50": ui.format_ms(summary.latency_p50_ms),
        "Latency p95": ui.format_ms(summary.latency_p95_ms),
        "Latency p99": ui.format_ms(summary.latency_p99_ms),
        "TTFT p50": ui.format_ms(summary.ttft_p50_ms),
        "TTFT p95": ui.format_ms(summary.ttft_p95_ms),
        "TTFT p99": ui.format_ms(summary.ttft_p99_ms),
        "LLM calls": ui.format_count(summary.num_llm_calls),
        "Input tokens": ui.format_count(summary.input_tokens),
        "Output tokens": ui.format_count(summary.output_tokens),
        "Cost": ui.format_usd(summary.total_cost_usd),
    }


def _url(app: AppTest, key: str) -> list[str]:
    value = app.query_params.get(key)
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _shown_tiles(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def test_page_shows_the_overview_summary(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch)
    expected = _expected(lake, ui.DEFAULT_PRESET)
    assert expected.num_requests > 0
    assert _shown_tiles(app) == _expected_tiles(expected)
    assert len(app.get("plotly_chart")) == 3  # volume, latency, top-models bars
    assert len(app.dataframe) == 1
    # The view is in the URL.
    assert _url(app, "project") == ["default"]
    assert _url(app, "range") == [ui.DEFAULT_PRESET]


def test_url_reproduces_the_view(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, range="all", service=["worker"])
    assert app.sidebar.selectbox(key="filter_range").value == "all"
    assert app.sidebar.multiselect(key="filter_services").value == ["worker"]
    assert _shown_tiles(app) == _expected_tiles(_expected(lake, "all", services=("worker",)))
    assert _url(app, "service") == ["worker"]


def test_changing_a_filter_updates_tiles_and_url(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch)
    app.sidebar.selectbox(key="filter_range").set_value("24h").run()
    assert not app.exception
    assert _shown_tiles(app) == _expected_tiles(_expected(lake, "24h"))
    assert _url(app, "range") == ["24h"]


def test_empty_lake_explains_how_to_load_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(tmp_path / "nothing-here", monkeypatch)
    text = " ".join(info.value for info in app.info)
    assert "flywheel ingest" in text and "flywheel demo" in text
    assert not app.metric


def test_the_overview_links_into_the_traces_list(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch, range="all", service=["worker"])
    urls = [parse_qs(urlsplit(b.proto.url).query) for b in app.get("link_button")]
    assert [urlsplit(b.proto.url).path for b in app.get("link_button")] == ["/traces"] * 2
    assert all(u["range"] == ["all"] and u["service"] == ["worker"] for u in urls)
    assert "status" not in urls[0] and urls[1]["status"] == ["error"]
    table = app.dataframe[0].value
    for model, link in zip(table["model"], table["traces"], strict=True):
        if model == "(unknown)":  # calls that name no model: the list cannot select them
            assert link is None
        else:
            assert parse_qs(urlsplit(link).query)["model"] == [model]
    assert table["traces"].notna().sum() >= 3
