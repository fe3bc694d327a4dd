"""Change events on the sample data's scenario days, and the shifts around them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from analytics.changes import change_events, change_impact, quantile_interval
from analytics.cost import install_prices
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import ingest_sample

DAY0 = datetime(2026, 11, 13, tzinfo=UTC)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("changes"))


def _scope(first_day: int, last_day: int) -> Scope:
    return Scope("default", DAY0 + timedelta(days=first_day), DAY0 + timedelta(days=last_day))


def test_the_model_version_and_system_prompt_changes_are_found_on_their_days(lake: Path) -> None:
    events = change_events(open_catalog(lake), _scope(0, 14))
    found = [(e.kind, e.subject, e.before, e.after, (e.time - DAY0).days) for e in events]
    assert found == [
        ("model_version", "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20", 9),
        ("system_prompt", "rag-chat", "cafea20f13a747cf", "adf60cd49aad9692", 11),
    ]
    # a window without them has none, and the data's first day is not a change
    assert change_events(open_catalog(lake), _scope(0, 9)) == []
    assert [e.kind for e in change_events(open_catalog(lake), _scope(10, 12))] == ["system_prompt"]


def test_the_model_change_doubles_p95_ttft_beyond_both_intervals(lake: Path) -> None:
    conn = open_catalog(lake)
    install_prices(conn)
    [event, _] = change_events(conn, _scope(0, 14))
    impact = change_impact(conn, _scope(0, 14), event)
    ttft = impact.filter(impact["metric"] == "p95 TTFT (ms)").row(0, named=True)
    spans = [r for f in (lake / "spans").rglob("*.parquet") for r in pq.read_table(f).to_pylist()]

    def ttfts(start: datetime, end: datetime) -> list[float]:
        return [
            s["ttft_ms"]
            for s in spans
            if s["ttft_ms"] is not None
            and (s["response_model"] or s["request_model"]) in (event.before, event.after)
            and start <= s["start_time"] < end
        ]

    before = ttfts(event.time - timedelta(days=1), event.time)
    after = ttfts(event.time, event.time + timedelta(days=1))
    assert (ttft["n_before"], ttft["n_after"]) == (len(before), len(after))
    assert ttft["before"] == pytest.approx(np.percentile(before, 95))
    assert ttft["after"] == pytest.approx(np.percentile(after, 95))
    assert ttft["after_low"] > ttft["before_high"]  # the shift is beyond both intervals
    assert set(impact["metric"]) == {
        "p95 latency (ms)",
        "p95 TTFT (ms)",
        "thumbs-down rate",
        "guardrail intervention rate",
        "cost per request (USD)",
    }


def test_quantile_interval_covers_the_true_quantile_about_95_percent_of_the_time() -> None:
    rng = random.Random(11)
    true_p95 = -np.log(0.05)  # exponential(1)
    hits = 0
    runs = 2000
    for _ in range(runs):
        sample = [rng.expovariate(1.0) for _ in range(200)]
        result = quantile_interval(sample, 0.95)
        assert result is not None
        estimate, low, high = result
        assert low <= estimate <= high
        hits += low <= true_p95 <= high
    assert 0.93 <= hits / runs <= 0.98
    assert quantile_interval([], 0.5) is None
    assert quantile_interval([3.0, 1.0, 2.0], 0.5) == (2.0, 1.0, 3.0)
