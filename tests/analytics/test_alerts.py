"""Alert rules: parsing with clear errors, each metric against a count made by hand, recording."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from analytics.alerts import (
    ALERT_METRICS,
    AlertConfigError,
    evaluate_alerts,
    load_alert_config,
    parse_alert_config,
    read_alerts,
    record_alerts,
)
from analytics.drift import embedding_drift
from analytics.scope import Scope
from analytics.slos import parse_slo_config
from ingest.loader import ingest_paths
from store.catalog import open_catalog
from store.writer import LakeWriter
from tests.analytics.guardrails_lake import SAMPLE_TRACES, flat_span, ingest_lines

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ERROR_ONLY = parse_slo_config('target = 0.9\n[[slo]]\nname = "ok"\nmetric = "error"\n', "test")


def _rules(*rules: str) -> Any:
    return parse_alert_config("\n".join(rules), "rules.toml")


def _rule(name: str, metric: str, window: str, threshold: float, **extra: Any) -> str:
    lines = ["[[rule]]", f'name = "{name}"', f'metric = "{metric}"', f'window = "{window}"']
    lines.append(f"threshold = {threshold}")
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines)


def test_the_built_in_rules_load_and_cover_every_metric_but_drift() -> None:
    config = load_alert_config()
    # drift embeds texts on first use: documented in the file, off by default
    assert {rule.metric for rule in config.rules} == set(ALERT_METRICS) - {"drift_score"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_rule("a", "latency", "1h", 1), "metric 'latency' is not one of"),
        (_rule("a", "error_rate", "soon", 1), "window 'soon'"),
        (_rule("a", "error_rate", "1h", 1, severity="urgent"), "severity must be one of"),
        (_rule("a", "error_rate", "1h", 1, direction="up"), "direction must be above or below"),
        (_rule("a", "error_rate", "1h", 1, colour="red"), "unknown key(s) ['colour']"),
        (_rule("a", "error_rate", "1h", 1) + "\n" + _rule("a", "cost_per_day", "1d", 5), "unique"),
        ('[[rule]]\nname = "a"\nmetric = "error_rate"\nwindow = "1h"\nthreshold = "high"', "threshold must be a number"),
        ("[[rule]\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_rule_errors_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(AlertConfigError) as info:
        parse_alert_config(text, "rules.toml")
    assert str(info.value).startswith("rules.toml")
    assert message in str(info.value)


def _request(
    trace: int, at_s: float, *, error: bool = False, cost: float | None = None
) -> list[dict[str, Any]]:
    root = flat_span(trace, trace * 10, at_s, {"user.id": "u"}, name="POST /chat",
                     status="ERROR" if error else "UNSET")  # fmt: skip
    call_attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    if cost is not None:
        call_attrs["gen_ai.usage.cost"] = cost
    call = flat_span(trace, trace * 10 + 1, at_s + 0.01, call_attrs, parent=trace * 10)
    return [root, call]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = []
    # hour 0: 30 requests, 3 failed; hour 1: 10 requests, 5 failed (too few to judge)
    for i in range(30):
        lines += _request(i + 1, i * 100, error=i % 10 == 0, cost=0.25)
    for i in range(10):
        lines += _request(100 + i, 3600 + i * 100, error=i % 2 == 0, cost=0.25)
    return ingest_lines(tmp_path_factory.mktemp("alerts") / "lake", lines)


def test_error_rate_and_burn_rate_over_a_window(lake: Path) -> None:
    config = _rules(
        _rule("errors", "error_rate", "1h", 0.05, severity="page"),
        _rule("burn", "burn_rate", "1h", 1.0),
        _rule("quiet hour", "error_rate", "1h", 0.05, min_requests=11),
    )
    conn = open_catalog(lake)
    errors, burn, _ = evaluate_alerts(conn, "default", T0 + timedelta(hours=1), config, ERROR_ONLY)
    assert (errors.value, errors.fired) == (pytest.approx(3 / 30), True)
    assert errors.evidence == {"num_requests": 30, "num_errors": 3}
    assert errors.start == T0 and errors.end == T0 + timedelta(hours=1)
    # burn = bad share ÷ (1 − target) = (3/30) ÷ 0.1 = 1.0, at the threshold: fires
    assert (burn.value, burn.fired) == (pytest.approx(1.0), True)
    # the next hour has 10 requests: below min_requests, not judged, not fired
    *_, quiet = evaluate_alerts(conn, "default", T0 + timedelta(hours=2), config, ERROR_ONLY)
    assert (
        quiet.value is None and not quiet.fired and "10 requests < 11" in quiet.evidence["reason"]
    )


def test_cost_per_day_scales_the_window_to_a_day(lake: Path) -> None:
    config = _rules(_rule("spend", "cost_per_day", "2h", 100.0))
    [spend] = evaluate_alerts(
        open_catalog(lake), "default", T0 + timedelta(hours=2), config, ERROR_ONLY
    )
    assert spend.evidence["cost_usd"] == pytest.approx(40 * 0.25)
    assert spend.value == pytest.approx(40 * 0.25 * 12)  # 2 h is a twelfth of a day
    assert spend.fired


@pytest.fixture(scope="module")
def sample_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("alerts-sample")
    with LakeWriter(data_dir) as writer:
        ingest_paths([SAMPLE_TRACES, SAMPLE_TRACES.parent / "feedback.jsonl.gz"], writer)
    return data_dir


def test_guardrail_spike_rule_fires_on_the_injection_day_only(sample_lake: Path) -> None:
    config = _rules(_rule("spike", "guardrail_spikes", "1d", 1))
    conn = open_catalog(sample_lake)
    [day6] = evaluate_alerts(
        conn, "default", datetime(2026, 11, 20, tzinfo=UTC), config, ERROR_ONLY
    )
    assert day6.fired and day6.value is not None and day6.value >= 1
    assert any(s["category"] == "prompt_injection" for s in day6.evidence["spikes"])
    [day3] = evaluate_alerts(
        conn, "default", datetime(2026, 11, 17, tzinfo=UTC), config, ERROR_ONLY
    )
    assert not day3.fired and day3.value == 0


def _feedback_per_request(data_dir: Path, start: datetime, end: datetime) -> tuple[int, int]:
    spans = [
        r for f in (data_dir / "spans").rglob("*.parquet") for r in pq.read_table(f).to_pylist()
    ]
    roots = {
        r["trace_id"]
        for r in spans
        if r["parent_span_id"] is None and start <= r["start_time"] < end
    }
    feedback = [
        r for f in (data_dir / "feedback").rglob("*.parquet") for r in pq.read_table(f).to_pylist()
    ]
    return len(roots), sum(1 for r in feedback if r["trace_id"] in roots)


def test_feedback_rate_is_a_share_of_the_baseline(sample_lake: Path) -> None:
    at = datetime(2026, 11, 25, tzinfo=UTC)
    config = _rules(_rule("feedback", "feedback_rate", "1d", 0.5, direction="below", baseline="7d"))
    [result] = evaluate_alerts(open_catalog(sample_lake), "default", at, config, ERROR_ONLY)
    requests, feedback = _feedback_per_request(sample_lake, at - timedelta(days=1), at)
    base_requests, base_feedback = _feedback_per_request(
        sample_lake, at - timedelta(days=8), at - timedelta(days=1)
    )
    assert (result.evidence["num_requests"], result.evidence["num_feedback"]) == (
        requests,
        feedback,
    )
    expected = (feedback / requests) / (base_feedback / base_requests)
    assert result.value == pytest.approx(expected)
    assert result.fired == (expected <= 0.5)


def test_fired_alerts_are_recorded_once(lake: Path, tmp_path: Path) -> None:
    config = _rules(
        _rule("errors", "error_rate", "1h", 0.05), _rule("calm", "error_rate", "1h", 0.5)
    )
    conn = open_catalog(lake)
    at = T0 + timedelta(hours=1)
    results = evaluate_alerts(conn, "default", at, config, ERROR_ONLY)
    assert record_alerts(lake, results) == 1
    assert record_alerts(lake, results) == 0  # the same check again adds nothing
    stored = read_alerts(open_catalog(lake), "default", T0, T0 + timedelta(days=1)).to_pylist()
    assert [(r["rule"], r["severity"], r["value"]) for r in stored] == [
        ("errors", "ticket", pytest.approx(0.1))
    ]
    assert json.loads(stored[0]["evidence"]) == {"num_errors": 3, "num_requests": 30}


def test_drift_score_rule_is_score_over_its_calibrated_threshold(sample_lake: Path) -> None:
    config = _rules(_rule("drift", "drift_score", "3d", 1.0, baseline="7d"))
    at = datetime(2026, 11, 27, tzinfo=UTC)  # the new topic's days
    conn = open_catalog(sample_lake)
    [result] = evaluate_alerts(conn, "default", at, config, ERROR_ONLY)
    direct = embedding_drift(
        conn, Scope("default", at - timedelta(days=10), at - timedelta(days=3)),
        Scope("default", at - timedelta(days=3), at),
    )  # fmt: skip
    assert result.value == pytest.approx(direct.score / direct.threshold)
    assert result.fired == direct.drift_detected
    assert result.evidence["method"] == "mmd" and result.evidence["num_reference"] == 1000
