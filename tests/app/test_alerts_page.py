"""The Alerts page and the Overview's alert banner, on the sample data's injection day."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analytics.alerts import evaluate_alerts, load_alert_config, record_alerts
from analytics.cost import install_prices
from analytics.slos import load_slo_config
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import ingest_sample

SCREENS = Path(__file__).resolve().parents[2] / "app" / "screens"
DAY6 = {"range": "custom", "start": "2026-11-19", "end": "2026-11-19"}
DAY6_END = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("alerts-page"))


def _run(page: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    monkeypatch.delenv("FLYWHEEL_ALERTS_FILE", raising=False)
    app = AppTest.from_file(str(SCREENS / page), default_timeout=90)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_alerts_page_shows_the_rules_at_the_end_of_the_range(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = open_catalog(lake)
    install_prices(conn)  # as the dashboard does: spend is priced when read
    expected = evaluate_alerts(conn, "default", DAY6_END, load_alert_config(), load_slo_config())
    firing = [r.rule.name for r in expected if r.fired]
    assert firing == ["guardrail spike"]
    record_alerts(lake, expected)
    app = _run("alerts.py", lake, monkeypatch, **DAY6)
    assert any("1 of 6 rules firing — guardrail spike" in e.value for e in app.error)
    rules, recorded = app.dataframe[0].value, app.dataframe[1].value
    assert rules["rule"].iloc[0] == "guardrail spike"  # firing rules first
    by_rule = dict(zip(rules["rule"], rules["value"], strict=True))
    for result in expected:
        if result.value is None:  # not judged: an empty cell
            assert by_rule[result.rule.name] != by_rule[result.rule.name]  # NaN
        else:
            assert by_rule[result.rule.name] == pytest.approx(result.value)
    assert list(recorded["rule"]) == ["guardrail spike"]
    assert "prompt_injection on Amazon Bedrock Guardrails" in recorded["evidence"][0]


def test_overview_puts_firing_alerts_first(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run("overview.py", lake, monkeypatch, **DAY6)
    banner = app.error[0].value.replace("\\", "") if app.error else ""
    assert "Alert [ticket] guardrail spike: FIRING" in banner
    assert "gr_category=prompt_injection" in banner
    calm = _run(
        "overview.py", lake, monkeypatch, range="custom", start="2026-11-16", end="2026-11-16"
    )
    assert not calm.error


def test_what_changed_lists_the_scenario_changes_and_their_impact(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run("alerts.py", lake, monkeypatch, range="all")
    [picker] = [box for box in app.selectbox if box.label == "Change"]
    labels = list(picker.options)  # as shown
    assert [label.split(" · ")[1] for label in labels] == [
        "gpt-4o: gpt-4o-2024-08-06 → gpt-4o-2024-11-20",
        "system prompt of rag-chat: cafea20f13a747cf → adf60cd49aad9692",
    ]
    impact = app.dataframe[-1].value
    moved = dict(zip(impact["metric"], impact["moved"], strict=True))
    assert moved["p95 TTFT (ms)"] == "yes"  # the new version's TTFT doubled
    overview = _run("overview.py", lake, monkeypatch, range="all")
    captions = [c.value.replace("\\", "") for c in overview.caption]  # markdown-escaped
    assert any("What changed" in c and "gpt-4o-2024-11-20" in c for c in captions), captions
