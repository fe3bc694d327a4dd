"""The navigation entry point opens on the Overview."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.analytics.lake import random_traces, write_lake

DASHBOARD = str(Path(__file__).resolve().parents[2] / "app" / "dashboard.py")


def test_dashboard_opens_on_the_overview(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(write_lake(tmp_path, random_traces(seed=3))))
    app = AppTest.from_file(DASHBOARD, default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title[0].value == "Overview"
    assert {metric.label for metric in app.metric} >= {"Requests", "Error rate", "Cost"}
