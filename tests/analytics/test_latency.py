"""Percentiles in SQL equal numpy's linear method; properties of the one percentile method."""

from __future__ import annotations

import random
from datetime import timedelta

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.latency import PERCENTILES, latency_percentiles, linear_percentile
from analytics.scope import Scope
from tests.analytics.lake import T0, stand_in_macros

SCOPE = Scope(project="p", start=T0, end=T0 + timedelta(hours=1))


def _catalog_with(values: list[float | None]) -> duckdb.DuckDBPyConnection:
    """A stand-in catalog: just the columns the scoped relations and this metric read."""
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE traces (project VARCHAR, start_time TIMESTAMPTZ, service_name VARCHAR,"
        " models VARCHAR[], duration_ms DOUBLE)"
    )
    conn.execute(
        "CREATE TABLE llm_calls (project VARCHAR, start_time TIMESTAMPTZ, service_name VARCHAR,"
        " model VARCHAR, duration_ms DOUBLE, ttft_ms DOUBLE)"
    )
    stand_in_macros(conn)
    conn.execute(
        "CREATE TABLE spans (project VARCHAR, start_time TIMESTAMPTZ, service_name VARCHAR,"
        " request_model VARCHAR, response_model VARCHAR)"
    )
    rows = [("p", T0 + timedelta(seconds=i), "api", ["m"], v) for i, v in enumerate(values)]
    # Out-of-scope rows that must not count: another project, and the window's end.
    rows += [("q", T0, "api", ["m"], 1e9), ("p", SCOPE.end, "api", ["m"], 1e9)]
    if rows:
        conn.executemany("INSERT INTO traces VALUES (?, ?, ?, ?, ?)", rows)
    return conn


def _numpy_reference(values: list[float | None]) -> dict[str, float | None]:
    present = np.array([v for v in values if v is not None], dtype=float)
    if present.size == 0:
        return {"p50": None, "p90": None, "p95": None, "p99": None, "mean": None, "max": None}
    qs = np.percentile(present, [q * 100 for q in PERCENTILES], method="linear")
    return {
        "p50": float(qs[0]),
        "p90": float(qs[1]),
        "p95": float(qs[2]),
        "p99": float(qs[3]),
        "mean": float(present.mean()),
        "max": float(present.max()),
    }


_rng = random.Random(7)
EDGE_CASES: dict[str, list[float | None]] = {
    "empty": [],
    "only_nulls": [None, None],
    "one_value": [42.0],
    "one_value_and_nulls": [None, 42.0, None],
    "two_values": [10.0, 20.0],
    "nulls_ignored": [None, 5.0, 1.0, None, 3.0],
    "all_ties": [7.0] * 10,
    "ties": [1.0, 1.0, 2.0, 2.0, 2.0, 3.0],
    "zeros": [0.0, 0.0, 0.0],
    "heavy_tail": [10.0] * 99 + [1_000_000.0],
    "lognormal": [_rng.lognormvariate(6, 1.5) for _ in range(1001)],
    "unsorted": [900.0, 1.5, 300.25, 42.0, 7.0, 1e5, 0.5],
}


@pytest.mark.parametrize("values", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_sql_percentiles_equal_numpy_linear(values: list[float | None]) -> None:
    result = latency_percentiles(_catalog_with(values), SCOPE)
    expected = _numpy_reference(values)
    assert result.n == sum(v is not None for v in values)
    for name, want in expected.items():
        got = getattr(result, name)
        if want is None:
            assert got is None, name
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), name


@pytest.mark.parametrize("values", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_python_reference_equals_numpy(values: list[float | None]) -> None:
    present = sorted(v for v in values if v is not None)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0):
        got = linear_percentile(present, q)
        if not present:
            assert got is None
        else:
            want = float(np.percentile(present, q * 100, method="linear"))
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_linear_percentile_rejects_q_outside_unit_interval() -> None:
    with pytest.raises(ValueError):
        linear_percentile([1.0], 1.5)


def test_column_is_quoted_not_formatted() -> None:
    with pytest.raises(duckdb.BinderException):
        latency_percentiles(_catalog_with([1.0]), SCOPE, column='duration_ms" FROM traces --')


durations = st.lists(
    # No subnormals: DuckDB interpolates as lo*(1-f) + hi*f, which underflows to 0 for values
    # below 2.2e-308 (no latency is that small); numpy's lo + (hi-lo)*f does not.
    st.floats(
        min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False, allow_subnormal=False
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(values=durations, seed=st.integers(0, 2**16))
def test_sql_percentile_properties(values: list[float], seed: int) -> None:
    result = latency_percentiles(_catalog_with(values), SCOPE)
    quantiles = [result.p50, result.p90, result.p95, result.p99]
    assert all(q is not None for q in quantiles)
    # Monotone in q, and within [min, max].
    assert quantiles == sorted(quantiles)  # type: ignore[type-var]
    assert min(values) <= quantiles[0]  # type: ignore[operator]
    assert quantiles[-1] <= max(values)  # type: ignore[operator]
    # Order-independent.
    shuffled = list(values)
    random.Random(seed).shuffle(shuffled)
    again = latency_percentiles(_catalog_with(list(shuffled)), SCOPE)
    assert (again.n, again.p50, again.p90, again.p95, again.p99, again.max) == (
        result.n,
        result.p50,
        result.p90,
        result.p95,
        result.p99,
        result.max,
    )
    assert again.mean == pytest.approx(result.mean, rel=1e-12)
    # Equal to numpy's linear method.
    expected = _numpy_reference(list(values))
    for name in ("p50", "p90", "p95", "p99"):
        assert getattr(result, name) == pytest.approx(expected[name], rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(values=durations, q1=st.floats(0, 1), q2=st.floats(0, 1))
def test_linear_percentile_properties(values: list[float], q1: float, q2: float) -> None:
    ordered = sorted(values)
    low, high = sorted((q1, q2))
    at_low = linear_percentile(ordered, low)
    at_high = linear_percentile(ordered, high)
    assert at_low is not None and at_high is not None
    assert ordered[0] <= at_low <= at_high <= ordered[-1]
    assert at_low == pytest.approx(
        float(np.percentile(ordered, low * 100, method="linear")), rel=1e-9, abs=1e-9
    )
