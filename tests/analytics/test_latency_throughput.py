"""Throughput and concurrency against brute-force references."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from analytics.scope import Scope
from analytics.throughput import (
    concurrency_by_time,
    per_minute,
    throughput_by_time,
    throughput_summary,
)
from store.catalog import open_catalog
from tests.analytics import reference_inference as ref
from tests.analytics.lake import T0, random_traces, span, write_lake

SCOPE = Scope("default", T0, T0 + timedelta(days=2))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    # Dense traffic so calls overlap: 400 traces in half an hour.
    rows = random_traces(seed=41, num_traces=400, span_hours=0.5)
    return open_catalog(write_lake(tmp_path_factory.mktemp("tp"), rows)), rows


def _intervals(rows: list[Any], scope: Scope, requests: bool = False) -> list[Any]:
    if requests:
        items = [
            (r.start_time, r.start_time + timedelta(milliseconds=r.duration_ms))
            for r in ref.requests(rows, scope)
        ]
    else:
        items = [(c["start_time"], c["end_time"]) for c in ref.calls(rows, scope)]
    return [(s, min(e, scope.end)) for s, e in items]


@pytest.mark.parametrize("bucket", [timedelta(minutes=5), timedelta(hours=1)])
@pytest.mark.parametrize("requests", [False, True], ids=["calls", "requests"])
def test_concurrency_equals_brute_force(lake, bucket: timedelta, requests: bool) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    scope = Scope("default", T0, T0 + timedelta(minutes=50))
    source = "scoped_traces" if requests else "scoped_llm_calls"
    got = concurrency_by_time(conn, scope, bucket, source).to_dicts()  # type: ignore[arg-type]
    want = ref.concurrency(_intervals(rows, scope, requests), scope.start, scope.end, bucket)
    assert [g["bucket_start"] for g in got] == [w[0] for w in want]
    assert max(w[2] for w in want) >= 3  # the data does overlap
    for g, (_, mean, peak) in zip(got, want, strict=True):
        assert g["peak_concurrency"] == peak, g["bucket_start"]
        assert g["mean_concurrency"] == pytest.approx(mean, rel=1e-6, abs=1e-9)


def test_back_to_back_calls_do_not_overlap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = span(project="b2b", operation="chat", start_time=T0, duration_ms=1000.0)
    second = span(project="b2b", operation="chat", start_time=first["end_time"], duration_ms=1000.0)
    empty = span(
        project="b2b", operation="chat", start_time=T0 + timedelta(minutes=5), duration_ms=0.0
    )
    conn = open_catalog(write_lake(tmp_path, [first, second, empty]))
    scope = Scope("b2b", T0, T0 + timedelta(minutes=10))
    row = concurrency_by_time(conn, scope, timedelta(minutes=10)).to_dicts()[0]
    assert row["peak_concurrency"] == 1
    assert row["mean_concurrency"] == pytest.approx(2.0 / 600)
    summary = throughput_summary(conn, scope)
    assert summary.peak_concurrency == 1
    assert summary.mean_concurrency == pytest.approx(2.0 / 600)


def test_throughput_by_time_equals_the_reference(lake) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    # The window ends mid-bucket: the last bucket's rates divide by its 5 minutes.
    scope = Scope("default", T0, T0 + timedelta(minutes=35))
    bucket = timedelta(minutes=10)
    got = throughput_by_time(conn, scope, bucket).to_dicts()
    reqs = ref.requests(rows, scope)
    calls = ref.calls(rows, scope)
    assert len(got) == 4
    for row in got:
        lo = row["bucket_start"]
        hi = min(lo + bucket, scope.end)
        seconds = (hi - lo).total_seconds()
        n_req = sum(lo <= r.start_time < hi for r in reqs)
        in_bucket = [c for c in calls if lo <= c["start_time"] < hi]
        tokens_in = sum(c["input_tokens"] or 0 for c in in_bucket)
        tokens_out = sum(c["output_tokens"] or 0 for c in in_bucket)
        assert (row["requests"], row["llm_calls"]) == (n_req, len(in_bucket))
        assert row["requests_per_min"] == pytest.approx(n_req * 60 / seconds)
        assert row["input_tokens_per_s"] == pytest.approx(tokens_in / seconds)
        assert row["output_tokens_per_s"] == pytest.approx(tokens_out / seconds)


def test_throughput_summary_equals_the_reference(lake) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    summary = throughput_summary(conn, SCOPE)
    calls = ref.calls(rows, SCOPE)
    seconds = (SCOPE.end - SCOPE.start).total_seconds()
    assert summary.num_requests == len(ref.requests(rows, SCOPE))
    assert summary.num_llm_calls == len(calls)
    assert summary.requests_per_min == pytest.approx(summary.num_requests * 60 / seconds)
    assert summary.output_tokens_per_s == pytest.approx(
        sum(c["output_tokens"] or 0 for c in calls) / seconds
    )
    whole = ref.concurrency(
        _intervals(rows, SCOPE), SCOPE.start, SCOPE.end, SCOPE.end - SCOPE.start
    )
    assert summary.peak_concurrency == whole[0][2]
    assert summary.mean_concurrency == pytest.approx(whole[0][1], rel=1e-6)


def test_an_empty_window(lake) -> None:  # type: ignore[no-untyped-def]
    conn, _ = lake
    scope = Scope("default", T0 + timedelta(days=9), T0 + timedelta(days=9, hours=1))
    summary = throughput_summary(conn, scope)
    assert (summary.num_requests, summary.peak_concurrency, summary.requests_per_min) == (0, 0, 0.0)
    series = concurrency_by_time(conn, scope, timedelta(minutes=30))
    assert series["peak_concurrency"].to_list() == [0, 0]
    assert per_minute(3, 0.0) is None
