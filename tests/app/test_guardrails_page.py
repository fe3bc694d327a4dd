"""The Guardrails & quality page renders on the sample data and shows what the analytics return."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analytics.guardrails import guardrail_latency, guardrail_rate_by_guardrail
from analytics.quality import quality_rates
from analytics.scope import Scope
from app import components as ui
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import ingest_sample

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "guardrails.py")
ALL = Scope("default", datetime(2026, 11, 13, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("guardrails-page"))


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=90)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_page_shows_the_numbers(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, range="all")
    conn = open_catalog(lake)
    tiles = {metric.label: metric for metric in app.metric}
    for row in quality_rates(conn, ALL).iter_rows(named=True):
        assert tiles[row["label"]].value == ui.format_percent(row["rate"])
        assert f"{row['num_flagged']:,} of {row['num_checked']:,}" in tiles[row["label"]].help
    latency = guardrail_latency(conn, ALL)
    assert tiles["Added p50"].value == ui.format_ms(latency.added_p50_ms)
    by_guardrail = app.dataframe[0].value
    expected = guardrail_rate_by_guardrail(conn, ALL)
    assert list(by_guardrail["guardrail"]) == expected["guardrail"].to_list()
    assert list(by_guardrail["num_triggered"]) == expected["num_triggered"].to_list()
    assert list(by_guardrail["trigger_rate"]) == pytest.approx(
        (expected["trigger_rate"] * 100).to_list()
    )
    # every triggered guardrail links to its traces
    links = [link for link in by_guardrail["traces"] if link]
    assert len(links) == (expected["num_triggered"] > 0).sum()
    assert all(link.startswith("/traces?") and "gr=" in link for link in links)
    assert len(app.get("plotly_chart")) == 1
    # the whole range holds the injection day, but no window to compare: no spike banner
    assert not [w for w in app.warning if "Spike" in w.value]


def test_the_injection_day_shows_a_spike_banner(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(lake, monkeypatch, range="custom", start="2026-11-19", end="2026-11-19")
    banners = [w.value.replace("\\", "") for w in app.warning if "Spike" in w.value]
    assert any("prompt_injection on Amazon Bedrock Guardrails" in b for b in banners), banners
    assert all("gr_category=prompt_injection" in b for b in banners)


def test_an_empty_window_says_so(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    day = datetime(2026, 11, 26, tzinfo=UTC) + timedelta(days=400)
    app = _run(
        lake, monkeypatch, range="custom", start=day.date().isoformat(), end=day.date().isoformat()
    )
    assert any("No guardrail results" in info.value for info in app.info)
