"""Overview metrics equal a pure-Python reference computed on the same span rows."""

from __future__ import annotations

import itertools
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.cost import install_prices
from analytics.overview import choose_bucket, overview_summary, requests_by_time, top_models
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics import reference
from tests.analytics.lake import T0, random_traces, span, write_lake


def _straddling_trace() -> list[dict[str, Any]]:
    # Starts before the mid_window scope and makes a model call inside it.
    root = span(start_time=T0 + timedelta(hours=7, seconds=-1), duration_ms=3000.0)
    call = span(
        trace_id=root["trace_id"],
        parent_span_id=root["span_id"],
        start_time=T0 + timedelta(hours=7, seconds=1),
        duration_ms=1000.0,
        operation="chat",
        provider="openai",
        response_model="gpt-4o-2024-08-06",
        input_tokens=100,
        output_tokens=20,
        ttft_ms=250.0,
    )
    return [root, call]


ROWS = (
    random_traces(seed=11, num_traces=80)
    + random_traces(seed=12, num_traces=20, project="other")
    + _straddling_trace()
)

SCOPES = {
    "everything": Scope("default", T0 - timedelta(days=1), T0 + timedelta(days=3)),
    "first_day": Scope("default", T0, T0 + timedelta(days=1)),
    "mid_window": Scope("default", T0 + timedelta(hours=7), T0 + timedelta(hours=31)),
    "service": Scope("default", T0, T0 + timedelta(days=3), services=("worker",)),
    "models": Scope(
        "default", T0, T0 + timedelta(days=3), models=("gpt-4o-2024-08-06", "my-finetune-v1")
    ),
    "other_project": Scope("other", T0, T0 + timedelta(days=3)),
    "empty_window": Scope("default", T0 + timedelta(days=10), T0 + timedelta(days=11)),
}


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    data_dir = write_lake(tmp_path_factory.mktemp("overview"), ROWS)
    catalog = open_catalog(Path(data_dir))
    install_prices(catalog)
    return catalog


def _assert_close(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, expected in want.items():
        if isinstance(expected, float):
            assert got[key] == pytest.approx(expected, rel=1e-9, abs=1e-9), key
        else:
            assert got[key] == expected, key
            assert type(got[key]) is type(expected), key


@pytest.mark.parametrize("scope", SCOPES.values(), ids=SCOPES.keys())
def test_overview_summary_equals_reference(conn: duckdb.DuckDBPyConnection, scope: Scope) -> None:
    _assert_close(asdict(overview_summary(conn, scope)), reference.summary(ROWS, scope))


def test_the_data_exercises_the_definitions(conn: duckdb.DuckDBPyConnection) -> None:
    # Guards the reference comparison against vacuous data.
    want = reference.summary(ROWS, SCOPES["everything"])
    assert want["num_errors"] > 0 and want["num_users"] > 1
    assert 0 < want["num_streamed_calls"] < want["num_llm_calls"]
    assert want["num_unpriced_calls"] > 0 and want["total_cost_usd"] > 0
    mid = reference.summary(ROWS, SCOPES["mid_window"])
    assert mid["num_traces"] != mid["num_requests"]  # a trace straddles the window start


@pytest.mark.parametrize("scope", SCOPES.values(), ids=SCOPES.keys())
def test_top_models_equals_reference(conn: duckdb.DuckDBPyConnection, scope: Scope) -> None:
    got = top_models(conn, scope, limit=50).to_dicts()
    want = reference.top_models(ROWS, scope)
    assert len(got) == len(want)
    for got_row, want_row in zip(got, want, strict=True):
        _assert_close(got_row, want_row)


def test_top_models_limit(conn: duckdb.DuckDBPyConnection) -> None:
    frame = top_models(conn, SCOPES["everything"], limit=2)
    assert frame.height == 2
    assert frame["calls"].to_list() == sorted(frame["calls"].to_list(), reverse=True)
    with pytest.raises(ValueError):
        top_models(conn, SCOPES["everything"], limit=0)


@pytest.mark.parametrize("scope", SCOPES.values(), ids=SCOPES.keys())
def test_requests_by_time_equals_reference(conn: duckdb.DuckDBPyConnection, scope: Scope) -> None:
    bucket = timedelta(hours=6)
    frame = requests_by_time(conn, scope, bucket)
    starts = frame["bucket_start"].to_list()
    # Every bucket is present, aligned, and the buckets cover the window.
    assert starts == sorted(starts)
    assert all(b - a == bucket for a, b in itertools.pairwise(starts))
    assert starts[0] <= scope.start < starts[0] + bucket
    assert starts[-1] < scope.end <= starts[-1] + bucket
    traces = reference.scoped_traces(ROWS, scope)
    calls = reference.scoped_calls(ROWS, scope)
    for row in frame.to_dicts():
        lo, hi = row["bucket_start"], row["bucket_start"] + bucket
        in_bucket = [t for t in traces if lo <= t.start_time < hi]
        calls_in = [c for c in calls if lo <= c["start_time"] < hi]
        assert row["requests"] == len(in_bucket)
        assert row["errors"] == sum(t.status_code == "ERROR" for t in in_bucket)
        want_latency = reference.percentile([t.duration_ms for t in in_bucket], 0.95)
        want_ttft = reference.percentile([c["ttft_ms"] for c in calls_in], 0.95)
        for got, want in ((row["latency_p95_ms"], want_latency), (row["ttft_p95_ms"], want_ttft)):
            assert got == (None if want is None else pytest.approx(want, rel=1e-9))
    assert sum(frame["requests"].to_list()) == len(traces)


def test_requests_by_time_rejects_silly_buckets(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError):
        requests_by_time(conn, SCOPES["everything"], timedelta(0))
    with pytest.raises(ValueError):
        requests_by_time(conn, SCOPES["everything"], timedelta(seconds=1))


def test_choose_bucket_keeps_series_readable() -> None:
    for width in (timedelta(hours=1), timedelta(days=1), timedelta(days=30), timedelta(days=900)):
        bucket = choose_bucket(T0, T0 + width)
        assert width / bucket <= 120 or bucket == timedelta(days=7)
    assert choose_bucket(T0, T0 + timedelta(hours=1)) == timedelta(minutes=1)
