"""The Drift page on the sample data: the new topic's days are drift, and the topic shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.analytics.guardrails_lake import ingest_sample

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "drift.py")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("drift-page"))


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    app = AppTest.from_file(PAGE, default_timeout=300)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_new_topic_days_are_drift_and_the_topic_is_shown(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(
        lake, monkeypatch, range="custom", start="2026-11-24", end="2026-11-26", service="rag-chat"
    )
    tiles = {m.label: m.value for m in app.metric}
    assert tiles["Drift"] == "yes" and tiles["Reference texts"] == "1,000"
    columns = app.dataframe[0].value.set_index("label")
    # system prompt v2 (day 11) makes answers shorter: the first column listed is a drifted one
    assert columns["drift_detected"].iloc[0] == "drift"
    assert columns.loc["Output length (characters)", "drift_detected"] == "drift"
    assert columns.loc["Input length (characters)", "drift_detected"] == "–"
    topics = app.dataframe[1].value
    assert "vector" in topics["examples"].iloc[0].lower()
    assert topics["change"].iloc[0] > 10  # points of share gained
    # a column's distributions, the daily series and the map
    assert len(app.get("plotly_chart")) == 3
    [pick] = [s for s in app.selectbox if s.label == "Distribution of"]
    assert pick.value == "output_chars"  # drifted columns first
    pick.set_value("model").run()
    chart = json.loads(app.get("plotly_chart")[0].proto.spec)
    bars = {
        trace["name"]: dict(zip(trace["x"], trace["y"], strict=True)) for trace in chart["data"]
    }
    # each window's shares add up to 100; gpt-4o's old version (until day 8) is gone now, its
    # new one (day 9 on) is in both: the reference is days 4-10
    assert sum(bars["current"].values()) == pytest.approx(100, abs=1e-6)
    assert bars["reference"]["gpt-4o-2024-11-20"] > 0
    assert bars["current"]["gpt-4o-2024-08-06"] == 0


def test_a_quiet_week_is_not_drift(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(
        lake, monkeypatch, range="custom", start="2026-11-18", end="2026-11-21", service="rag-chat"
    )
    assert {m.label: m.value for m in app.metric}["Drift"] == "no"
