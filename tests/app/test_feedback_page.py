"""The Feedback & business page on the seeded world: every tab renders and shows what the
analytics return."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analytics.feedback import feedback_summary
from analytics.scope import Scope
from app import components as ui
from store.catalog import open_catalog
from tests.analytics.feedback_world import DAYS, REGEN_ROUTE, START, ingest_world

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "feedback.py")
WINDOW = {"range": "custom", "start": "2026-10-01", "end": "2026-10-28"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("feedback-page") / "lake"
    ingest_world(data_dir, num_sessions=1200)
    return data_dir


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = AppTest.from_file(PAGE, default_timeout=300)
    for key, value in {**WINDOW, **params}.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_feedback_tab_shows_the_votes_segments_and_drivers(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch, fb_by="prompt")
    scope = Scope("default", START, START + timedelta(days=DAYS))
    summary = feedback_summary(open_catalog(lake), scope)
    tiles = {m.label: m.value for m in app.metric}
    assert tiles["Thumbs down"] == ui.format_count(summary.thumbs_down)
    assert tiles["Thumbs-down rate"] == ui.format_percent(summary.thumbs_down_rate)
    segments = app.dataframe[0].value
    assert len(segments) == 2  # the two system prompts
    assert segments["diff_vs_rest"].abs().min() > 5  # points: the prompt change shows
    for prompt, link in zip(segments["segment"], segments["traces"], strict=True):
        assert f"prompt={prompt}" in link and "feedback=thumbs_down" in link
    assert float(tiles["Held-out ROC AUC"]) > 0.6
    assert len(app.get("plotly_chart")) == 2  # votes over time, the driver effects
    by_model = _run(lake, monkeypatch, fb_by="model").dataframe[0].value
    assert set(by_model["segment"]) == {"model-a", "model-b"}
    for model, link in zip(by_model["segment"], by_model["traces"], strict=True):
        assert f"model={model}" in link and "feedback=thumbs_down" in link


def test_implicit_tab_shows_rates_by_route_and_examples(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch, tab="Implicit signals", signal="regenerated")
    by_route = app.dataframe[0].value.set_index("route")
    assert (
        by_route.loc[REGEN_ROUTE, "regenerated_rate"]
        > 3 * by_route["regenerated_rate"].drop(REGEN_ROUTE).max()
    )
    examples = app.dataframe[1].value
    assert 0 < len(examples) <= 10
    # a regenerated turn's follow-up is the same message
    assert (examples["input_text"] == examples["next_input"]).all()
    assert all("session=" in link for link in examples["conversation"])


def test_business_and_correlation_tabs(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    business = _run(lake, monkeypatch, tab="Business")
    cohorts = business.dataframe[0].value
    assert len(cohorts) == 28  # the custom range covers whole days: 1-28 October
    assert cohorts["d7_retention"].iloc[-1] == "not yet"
    correlation = _run(lake, monkeypatch, tab="Correlation", lag="0")
    table = correlation.dataframe[0].value
    assert set(table["quality"]) >= {"thumbs-down rate", "p95 TTFT"}
    assert ((table["low"] <= table["rho"]) & (table["rho"] <= table["high"])).all()


def test_an_empty_lake_says_how_to_load_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(tmp_path / "empty", monkeypatch)
    assert "No spans yet" in app.info[0].value
