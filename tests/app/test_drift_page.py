"""The Drift page on the sample data: the new topic's days are drift, and the topic shows."""

from __future__ import annotations

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
    topics = app.dataframe[0].value
    assert "vector" in topics["examples"].iloc[0].lower()
    assert topics["change"].iloc[0] > 10  # points of share gained
    assert len(app.get("plotly_chart")) == 2  # the daily series and the map


def test_a_quiet_week_is_not_drift(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(
        lake, monkeypatch, range="custom", start="2026-11-18", end="2026-11-21", service="rag-chat"
    )
    assert {m.label: m.value for m in app.metric}["Drift"] == "no"
