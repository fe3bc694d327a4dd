"""The Latency & goodput page renders each tab and shows exactly what the analytics return."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from analytics.cost import install_prices
from analytics.goodput import goodput_summary
from analytics.latency import latency_by_dimension, latency_percentiles
from analytics.scope import Scope, data_time_range
from analytics.slos import load_slo_config
from analytics.throughput import throughput_summary
from app import components as ui
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import ingest_sample
from tests.analytics.lake import random_traces, write_lake

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "latency.py")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = random_traces(seed=5, num_traces=150, span_hours=24 * 10)
    return write_lake(tmp_path_factory.mktemp("latency-page"), rows)


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=60)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _scope(data_dir: Path, preset: str, **filters: Any) -> tuple[Any, Scope]:
    conn = open_catalog(data_dir)
    install_prices(conn)
    first, last = data_time_range(conn, "default")
    assert first is not None and last is not None
    window = ui.preset_window(preset, first, last)
    return conn, Scope("default", window.start, window.end, **filters)


def _tiles(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def test_tiles_show_the_latency_and_goodput_numbers(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch, range="all")
    conn, scope = _scope(lake, "all")
    request = latency_percentiles(conn, scope, "duration_ms", "scoped_traces")
    ttft = latency_percentiles(conn, scope, "ttft_ms", "scoped_llm_calls")
    tpot = latency_percentiles(conn, scope, "tpot_ms", "scoped_llm_calls")
    goodput = goodput_summary(conn, scope, load_slo_config())
    tiles = _tiles(app)
    assert tiles["Requests"] == ui.format_count(request.n)
    assert tiles["Latency p95"] == ui.format_ms(request.p95)
    assert tiles["TTFT p95"] == ui.format_ms(ttft.p95)
    assert tiles["TPOT p95"] == ui.format_ms(tpot.p95)
    assert tiles["Good requests"] == ui.format_percent(goodput.good_fraction)
    # the Latency tab: percentile chart, histogram, and the by-model table
    assert len(app.get("plotly_chart")) == 2
    table = app.dataframe[0].value
    expected = latency_by_dimension(conn, scope, "request", "model")
    assert list(table["n"]) == expected["n"].to_list()
    assert list(table["p95_ms"]) == pytest.approx(expected["p95_ms"].to_list())
    links = [link for link in table["traces"] if link is not None]  # none for "(no model call)"
    assert len(links) >= len(table) - 1 and all(link.startswith("/traces?") for link in links)


def test_the_measure_and_grouping_come_from_the_url(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch, range="all", measure="ttft", by="provider", split="model")
    conn, scope = _scope(lake, "all")
    table = app.dataframe[0].value
    expected = latency_by_dimension(conn, scope, "ttft", "provider")
    assert list(table["n"]) == expected["n"].to_list()
    assert "provider" in table.columns


@pytest.mark.parametrize(
    ("tab", "charts", "tables"),
    [("Prefill & decode", 2, 1), ("Throughput", 3, 0), ("Goodput", 2, 2)],
)
def test_each_tab_renders(
    lake: Path, monkeypatch: pytest.MonkeyPatch, tab: str, charts: int, tables: int
) -> None:
    app = _run(lake, monkeypatch, range="all", tab=tab)
    assert len(app.get("plotly_chart")) == charts
    assert len(app.dataframe) == tables
    conn, scope = _scope(lake, "all")
    if tab == "Throughput":
        summary = throughput_summary(conn, scope)
        assert _tiles(app)["Peak concurrency"] == ui.format_count(summary.peak_concurrency)
    if tab == "Goodput":
        slos = app.dataframe[0].value
        assert list(slos["slo"]) == [slo.name for slo in load_slo_config().slos]
        assert all("missed_slo=" in link for link in slos["traces"])


def test_a_user_slo_file_changes_the_goodput(
    lake: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    strict = tmp_path / "strict.toml"
    strict.write_text(
        'target = 0.5\n[[slo]]\nname = "instant"\nmetric = "latency_ms"\nmax_ms = 1\n'
    )
    monkeypatch.setenv("FLYWHEEL_SLO_FILE", str(strict))
    app = _run(lake, monkeypatch, range="all", tab="Goodput")
    assert _tiles(app)["Good requests"] == "0%"
    assert list(app.dataframe[0].value["slo"]) == ["instant"]


def test_the_route_filter_is_in_the_url(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, range="all", route="POST /search")
    assert app.sidebar.multiselect(key="filter_routes").value == ["POST /search"]
    conn, scope = _scope(lake, "all", routes=("POST /search",))
    request = latency_percentiles(conn, scope, "duration_ms", "scoped_traces")
    assert _tiles(app)["Requests"] == ui.format_count(request.n)
    assert app.query_params.get("route") in ("POST /search", ["POST /search"])


def test_empty_lake_explains_how_to_load_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(tmp_path / "nothing-here", monkeypatch)
    assert "flywheel ingest" in " ".join(info.value for info in app.info)
    assert not app.metric


def test_the_latency_and_goodput_charts_mark_the_model_version_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the sample's gpt-4o answers come from a new version from 2026-11-22 (scenario 1)
    lake = ingest_sample(tmp_path / "sample")
    window = {"range": "custom", "start": "2026-11-20", "end": "2026-11-24"}
    latency = _run(lake, monkeypatch, **window)
    goodput = _run(lake, monkeypatch, **window, tab="Goodput")
    marked = []
    for chart in [*latency.get("plotly_chart"), *goodput.get("plotly_chart")]:
        spec = json.loads(chart.proto.spec)
        markers = [
            t for t in spec["data"] if (t.get("customdata") or [[None]])[0][0] == ui.CHANGE_MARKER
        ]
        if any("gpt-4o-2024-11-20" in t["hovertext"][0] for t in markers):
            marked.append(spec["layout"]["title"]["text"])
    assert any(title.startswith("Request latency per") for title in marked), marked
    assert any(title.startswith("Goodput vs throughput") for title in marked), marked
