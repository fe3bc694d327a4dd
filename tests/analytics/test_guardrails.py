"""Guardrail and quality metrics against references computed in Python from the lake's files."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from analytics.guardrails import (
    blocks_followed_by_pass,
    guardrail_latency,
    guardrail_rate_by_dimension,
    guardrail_rate_by_guardrail,
    guardrail_rate_by_time,
    guardrail_results,
    guardrail_spikes,
    two_proportion_p_value,
)
from analytics.quality import quality_rates, wilson_interval
from analytics.scope import Scope
from analytics.traces import TraceFilter, list_traces
from ingest.detectors import find_phrase
from store.catalog import open_catalog
from store.schema import GENERATION_OPERATIONS
from tests.analytics.guardrails_lake import flat_span, ingest_lines, ingest_sample

WINDOW = Scope("default", datetime(2026, 11, 13, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))
SPIKE_DAY = datetime(2026, 11, 19, tzinfo=UTC)  # sample_data scenario 3


@pytest.fixture(scope="module")
def sample_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("guardrails-sample"))


def _rows(data_dir: Path, table: str) -> list[dict[str, Any]]:
    files = sorted((data_dir / table).rglob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _in(scope: Scope, moment: datetime) -> bool:
    return scope.start <= moment < scope.end


def reference_rates(data_dir: Path, scope: Scope) -> dict[tuple[Any, ...], tuple[int, int]]:
    """(guardrail, stage, source) -> (checks, triggered), counted row by row."""
    calls = sum(
        1
        for s in _rows(data_dir, "spans")
        if s["operation"] in GENERATION_OPERATIONS and _in(scope, s["start_time"])
    )
    checked: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    triggered: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    per_row: dict[tuple[Any, ...], bool] = defaultdict(bool)
    for r in _rows(data_dir, "guardrails"):
        if not _in(scope, r["time"]):
            continue
        key = (r["guardrail"], r["stage"], r["source"])
        checked[key].add(r["span_id"])
        per_row[key] |= r["source"] == "detector" and r["category"] == "format"
        if r["action"] not in (None, "pass"):
            triggered[key].add(r["span_id"])
    return {
        key: (
            calls if key[2] == "detector" and not per_row[key] else len(spans),
            len(triggered[key]),
        )
        for key, spans in checked.items()
    }


@pytest.mark.parametrize("days", [(0, 14), (6, 7), (10, 12)])
def test_rate_by_guardrail_matches_the_reference(sample_lake: Path, days: tuple[int, int]) -> None:
    scope = Scope(
        "default", WINDOW.start + timedelta(days=days[0]), WINDOW.start + timedelta(days=days[1])
    )
    table = guardrail_rate_by_guardrail(open_catalog(sample_lake), scope)
    got = {
        (r["guardrail"], r["stage"], r["source"]): (r["num_checks"], r["num_triggered"])
        for r in table.iter_rows(named=True)
    }
    assert got == reference_rates(sample_lake, scope)
    for r in table.iter_rows(named=True):
        assert r["trigger_rate"] == pytest.approx(r["num_triggered"] / r["num_checks"])
    bedrock = table.filter(table["guardrail"] == "Amazon Bedrock Guardrails").row(0, named=True)
    durations = [
        s["duration_ms"]
        for s in _rows(sample_lake, "spans")
        if s["name"] == "apply_guardrail Amazon Bedrock Guardrails" and _in(scope, s["start_time"])
    ]
    assert bedrock["latency_p95_ms"] == pytest.approx(np.percentile(durations, 95), rel=1e-6)


def test_rate_by_time_adds_up_to_the_totals(sample_lake: Path) -> None:
    conn = open_catalog(sample_lake)
    series = guardrail_rate_by_time(conn, WINDOW, timedelta(days=1))
    totals = guardrail_rate_by_guardrail(conn, WINDOW)
    assert series["bucket_start"].n_unique() == 14
    summed = series.group_by("guardrail", "stage", "source").agg(
        pl.col("num_checks").sum().alias("checks"), pl.col("num_triggered").sum().alias("triggered")
    )
    for r in totals.iter_rows(named=True):
        row = summed.filter(
            (summed["guardrail"] == r["guardrail"]) & (summed["stage"] == r["stage"])
        ).row(0, named=True)
        assert (row["checks"], row["triggered"]) == (r["num_checks"], r["num_triggered"])


def test_quality_rates_match_counts_from_the_spans(sample_lake: Path) -> None:
    calls = [
        s
        for s in _rows(sample_lake, "spans")
        if s["operation"] in GENERATION_OPERATIONS and _in(WINDOW, s["start_time"])
    ]

    def has(span: dict[str, Any], reasons: set[str]) -> bool:
        return bool({r.lower() for r in span["finish_reasons"] or ()} & reasons)

    expected = {
        "truncation": sum(has(s, {"length", "max_tokens"}) for s in calls),
        "content_filter": sum(has(s, {"content_filter", "safety"}) for s in calls),
        "refusal": sum(
            bool(s["output_text"] and find_phrase("refusal", s["output_text"])) for s in calls
        ),
        "empty_output": sum(
            s["status_code"] != "ERROR"
            and (
                (s["output_text"] is not None and not s["output_text"].strip())
                or (s["output_text"] is None and s["output_tokens"] == 0)
            )
            for s in calls
        ),
        "format_error": 0,
    }
    rates = quality_rates(open_catalog(sample_lake), WINDOW)
    got = {r["signal"]: r for r in rates.iter_rows(named=True)}
    for signal, count in expected.items():
        assert got[signal]["num_flagged"] == count, signal
    assert got["truncation"]["num_checked"] == len(calls) and expected["truncation"] > 10
    assert got["format_error"]["num_checked"] == 0 and got["format_error"]["rate"] is None
    low, high = proportion_confint(expected["truncation"], len(calls), method="wilson")
    assert (got["truncation"]["rate_low"], got["truncation"]["rate_high"]) == pytest.approx(
        (low, high)
    )


def test_the_sample_injection_spike_is_found(sample_lake: Path) -> None:
    conn = open_catalog(sample_lake)
    day = Scope("default", SPIKE_DAY, SPIKE_DAY + timedelta(days=1))
    spikes = guardrail_spikes(conn, day)
    flagged = {
        (r["guardrail"], r["category"])
        for r in spikes.filter(spikes["is_spike"]).iter_rows(named=True)
    }
    assert ("Amazon Bedrock Guardrails", "prompt_injection") in flagged
    assert {category for _, category in flagged} == {"prompt_injection"}
    row = spikes.filter(
        (spikes["guardrail"] == "Amazon Bedrock Guardrails")
        & (spikes["category"] == "prompt_injection")
    ).row(0, named=True)
    # the same counts through statsmodels' two-proportion z-test
    _, p = proportions_ztest(
        [row["num_triggered"], row["baseline_triggered"]],
        [row["num_checks"], row["baseline_checks"]],
        alternative="larger",
    )
    assert row["p_value"] == pytest.approx(p, rel=1e-6)
    # on ordinary days nothing spikes
    for offset in (3, 9, 12):
        other = Scope(
            "default",
            WINDOW.start + timedelta(days=offset),
            WINDOW.start + timedelta(days=offset + 1),
        )
        assert not guardrail_spikes(conn, other)["is_spike"].any(), offset


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"), [(30, 100, 10, 100), (3, 50, 1, 400), (5, 9, 0, 30)]
)
def test_p_value_agrees_with_statsmodels(k1: int, n1: int, k2: int, n2: int) -> None:
    _, p = proportions_ztest([k1, k2], [n1, n2], alternative="larger")
    assert two_proportion_p_value(k1, n1, k2, n2) == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 1), (7, 40), (500, 1000)])
def test_wilson_interval_agrees_with_statsmodels(k: int, n: int) -> None:
    assert wilson_interval(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"))


def _guard_span(trace: int, span: int, at: float, action: str, **extra: Any) -> dict[str, Any]:
    return flat_span(
        trace,
        span,
        at,
        {"gen_ai.operation.name": "apply_guardrail", "flywheel.guardrail.name": extra.pop("name", "in-guard"),
         "flywheel.guardrail.stage": "input", "flywheel.guardrail.action": action},
        parent=trace * 100,
        duration_s=extra.pop("duration_s", 0.05),
    )  # fmt: skip


def _root(
    trace: int, at: float, session: str | None, user: str, duration_s: float = 1.0
) -> dict[str, Any]:
    attrs = {"user.id": user} | ({"session.id": session} if session else {})
    return flat_span(trace, trace * 100, at, attrs, name="POST /chat", duration_s=duration_s)


def _answer(trace: int, at: float, model: str) -> dict[str, Any]:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
             "gen_ai.output.messages": '[{"role":"assistant","content":"ok"}]'}  # fmt: skip
    return flat_span(trace, trace * 100 + 9, at, attrs, parent=trace * 100)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = [
        # session s1: blocked, then passes 2 minutes later -> a false-positive signal
        _root(1, 0, "s1", "u1"), _guard_span(1, 11, 0.01, "block"),
        _root(2, 120, "s1", "u1"), _guard_span(2, 21, 120.01, "pass"), _answer(2, 120.1, "model-a"),
        # session s2: blocked, passes only 20 minutes later -> not within 10 minutes
        _root(3, 0, "s2", "u2"), _guard_span(3, 31, 0.01, "block"),
        _root(4, 1200, "s2", "u2"), _guard_span(4, 41, 1200.01, "pass"), _answer(4, 1200.1, "model-b"),
        # no session: the same user passes a minute later
        _root(5, 10, None, "u3"), _guard_span(5, 51, 10.01, "block"),
        _root(6, 70, None, "u3"), _guard_span(6, 61, 70.01, "pass"), _answer(6, 70.1, "model-a"),
        # blocked, then a *different* guardrail passes: not a sign for this one
        _root(7, 0, "s4", "u4"), _guard_span(7, 71, 0.01, "block"),
        _root(8, 30, "s4", "u4"), _guard_span(8, 81, 30.01, "pass", name="other-guard"),
        _answer(8, 30.1, "model-b"),
    ]  # fmt: skip
    return ingest_lines(tmp_path_factory.mktemp("guardrails-scenario") / "lake", lines)


SCENARIO = Scope("default", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))


def test_blocks_followed_by_a_pass_are_counted_per_session_or_user(scenario: Path) -> None:
    table = blocks_followed_by_pass(open_catalog(scenario), SCENARIO)
    row = table.filter(table["guardrail"] == "in-guard").row(0, named=True)
    assert row["num_blocked"] == 4 and row["num_passed_after"] == 2
    assert row["trace_ids"] == [f"{1:032x}", f"{5:032x}"]
    assert row["passed_after_rate"] == pytest.approx(0.5)


def test_rate_by_model_attributes_guardrail_spans_to_the_answering_model(scenario: Path) -> None:
    table = guardrail_rate_by_dimension(open_catalog(scenario), SCENARIO, "model")
    got = {
        (r["model"], r["guardrail"]): (r["num_checks"], r["num_triggered"])
        for r in table.iter_rows(named=True)
    }
    assert got == {
        (None, "in-guard"): (4, 4),  # blocked requests never reached a model
        ("model-a", "in-guard"): (2, 0),
        ("model-b", "in-guard"): (1, 0),
        ("model-b", "other-guard"): (1, 0),
    }
    by_route = guardrail_rate_by_dimension(open_catalog(scenario), SCENARIO, "route")
    assert set(by_route["route"]) == {"POST /chat"}


def test_latency_added_per_request(scenario: Path) -> None:
    latency = guardrail_latency(open_catalog(scenario), SCENARIO)
    assert latency.num_requests == 8
    assert latency.added_p50_ms == pytest.approx(50.0, rel=1e-3)
    assert latency.share_p50 == pytest.approx(0.05, rel=1e-3)  # 50 ms of a 1 s request


def test_results_and_trace_links_select_the_same_traces(sample_lake: Path) -> None:
    conn = open_catalog(sample_lake)
    results = guardrail_results(
        conn, WINDOW, guardrail="Amazon Bedrock Guardrails", category="prompt_injection", limit=1000
    )
    expected = {
        r["trace_id"]
        for r in _rows(sample_lake, "guardrails")
        if r["guardrail"] == "Amazon Bedrock Guardrails"
        and r["category"] == "prompt_injection"
        and r["triggered"]
        and _in(WINDOW, r["time"])
    }
    assert set(results["trace_id"]) == expected and len(expected) > 50
    assert results["time"].is_sorted(descending=True)
    page = list_traces(
        conn,
        WINDOW,
        TraceFilter(
            guardrail_name="Amazon Bedrock Guardrails", guardrail_category="prompt_injection"
        ),
        limit=1000,
    )
    assert set(page.rows["trace_id"]) == expected and page.num_total == len(expected)
    everything = guardrail_results(conn, WINDOW, triggered_only=False, limit=5)
    assert everything.height == 5
