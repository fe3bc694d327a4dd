"""Latency by dimension and by time, histograms and prefill/decode fits, against references."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.cost import install_prices
from analytics.latency import (
    DIMENSIONS,
    MIN_SAMPLES,
    latency_by_dimension,
    latency_by_time,
    latency_histogram,
    prefill_decode_by_model,
    prefill_decode_points,
    tpot_ms,
)
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics import reference_inference as ref
from tests.analytics.lake import T0, random_traces, span, stand_in_macros, write_lake

ALL = Scope("default", T0 - timedelta(days=1), T0 + timedelta(days=4))
MEASURES = ("request", "call", "ttft", "tpot")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[duckdb.DuckDBPyConnection, list[Any]]:
    rows = random_traces(seed=11, num_traces=240) + random_traces(seed=12, project="other")
    conn = open_catalog(write_lake(tmp_path_factory.mktemp("latency"), rows))
    install_prices(conn)
    return conn, rows


def _approx(got: Any, want: Any) -> bool:
    if want is None or got is None:
        return got is None and want is None
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


def _check(frame: Any, by: str, expected: dict[Any, dict[str, Any]]) -> None:
    got = {row[by]: row for row in frame.to_dicts()}
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        assert row["n"] == want["n"], key
        assert row["enough_samples"] == (want["n"] >= MIN_SAMPLES)
        for name in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms"):
            assert _approx(row[name], want[name]), (key, name, row[name], want[name])


SCOPES = {
    "all": ALL,
    "route_and_service": Scope(
        "default", ALL.start, ALL.end, services=("worker",), routes=("POST /search",)
    ),
    "model_one_day": Scope(
        "default",
        T0 + timedelta(hours=12),
        T0 + timedelta(hours=36),
        models=("gpt-4o-2024-08-06", "claude-3-5-sonnet-20241022"),
    ),
}


@pytest.mark.parametrize("scope", SCOPES.values(), ids=SCOPES.keys())
@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("by", DIMENSIONS)
def test_latency_by_dimension_equals_the_reference(lake, scope, measure, by) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    if measure == "request" and by == "operation":
        with pytest.raises(ValueError, match="no operation"):
            latency_by_dimension(conn, scope, measure, by)
        return
    frame = latency_by_dimension(conn, scope, measure, by)
    _check(frame, by, ref.latency_by_dimension(rows, scope, measure, by))
    # the busiest first, days in order
    if by == "day":
        assert frame[by].to_list() == sorted(frame[by].to_list())
    else:
        assert frame["n"].to_list() == sorted(frame["n"].to_list(), reverse=True)


def test_the_route_of_a_call_is_its_traces_root_span_name(lake) -> None:  # type: ignore[no-untyped-def]
    conn, _ = lake
    routes = set(latency_by_dimension(conn, ALL, "call", "route")["route"].to_list())
    assert routes == {"POST /chat", "POST /search"}


@pytest.mark.parametrize("measure", MEASURES)
def test_latency_by_time_equals_the_reference(lake, measure: str) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    bucket = timedelta(hours=6)
    frame = latency_by_time(conn, ALL, measure, bucket)  # type: ignore[arg-type]
    starts = frame["bucket_start"].to_list()
    assert len(starts) == (ALL.end - ALL.start) / bucket  # every bucket, empty ones too
    groups: dict[Any, list[Any]] = {}
    for key, values in ref.latency_groups(rows, ALL, measure, "day").items():
        groups.setdefault(key, []).extend(values)
    total = sum(len([v for v in vs if v is not None]) for vs in groups.values())
    assert frame["n"].sum() == total
    for row in frame.to_dicts():
        lo, hi = row["bucket_start"], row["bucket_start"] + bucket
        values = [
            v
            for v, start in _values_with_start(rows, measure)
            if lo <= start < hi and v is not None
        ]
        want = ref.summarize(values)
        assert row["n"] == want["n"]
        assert _approx(row["p95_ms"], want["p95_ms"])
        assert row["enough_samples"] == (want["n"] >= MIN_SAMPLES)


def _values_with_start(rows: list[Any], measure: str) -> list[tuple[Any, Any]]:
    if measure == "request":
        return [(r.duration_ms, r.start_time) for r in ref.requests(rows, ALL)]
    column = {"call": "duration_ms", "ttft": "ttft_ms", "tpot": "tpot"}[measure]
    return [(c[column], c["start_time"]) for c in ref.calls(rows, ALL)]


def test_latency_by_time_split_by_model(lake) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    frame = latency_by_time(conn, ALL, "ttft", timedelta(days=1), by="model")
    assert frame.columns[:3] == ["bucket_start", "model", "n"]
    assert frame["n"].min() > 0  # only (bucket, model) pairs that have values
    expected = ref.latency_by_dimension(rows, ALL, "ttft", "model")
    for model, want in expected.items():
        mine = frame["model"].is_null() if model is None else frame["model"] == model
        assert frame.filter(mine)["n"].sum() == want["n"]


def test_bad_arguments_are_refused(lake) -> None:  # type: ignore[no-untyped-def]
    conn, _ = lake
    with pytest.raises(ValueError, match="unknown measure"):
        latency_by_dimension(conn, ALL, "speed", "model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown dimension"):
        latency_by_dimension(conn, ALL, "ttft", "colour")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too many buckets"):
        latency_by_time(conn, ALL, "ttft", timedelta(seconds=1))
    with pytest.raises(ValueError, match="positive"):
        latency_by_time(conn, ALL, "ttft", timedelta(0))


def test_the_view_computes_tpot_like_the_formula(lake) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    got = dict(conn.execute("SELECT span_id, tpot_ms FROM llm_calls").fetchall())
    for call in ref.calls(rows, Scope(**{**ALL.__dict__, "project": "default"})):
        want = tpot_ms(call["duration_ms"], call["ttft_ms"], call["output_tokens"])
        assert _approx(got[call["span_id"]], want), call["span_id"]


# --------------------------------------------------------------------------- edge cases


def _streamed(ttft: float | None, output_tokens: int | None, duration: float = 1000.0) -> Any:
    root = span(project="edge", name="POST /chat", start_time=T0 + timedelta(minutes=1))
    call = span(
        project="edge",
        trace_id=root["trace_id"],
        parent_span_id=root["span_id"],
        start_time=T0 + timedelta(minutes=1, milliseconds=5),
        duration_ms=duration,
        operation="chat",
        response_model="m",
        ttft_ms=ttft,
        input_tokens=100,
        output_tokens=output_tokens,
    )
    return [root, call]


EDGE_CASES: dict[str, list[tuple[float | None, int | None, float]]] = {
    "empty": [],
    "one_value": [(250.0, 11, 1250.0)],
    "null_ttft": [(None, 50, 900.0), (120.0, 5, 520.0)],
    "ties": [(300.0, 21, 1300.0)] * 7,
    "heavy_tail": [(100.0, 11, 200.0)] * 99 + [(90_000.0, 11, 95_000.0)],
    "zero_output_tokens": [(200.0, 0, 300.0), (150.0, 1, 160.0), (100.0, None, 110.0)],
}


@pytest.mark.parametrize("case", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases_equal_the_reference(case: list[Any], tmp_path: Path) -> None:
    rows = [row for ttft, tokens, duration in case for row in _streamed(ttft, tokens, duration)]
    rows.append(span(project="edge-other", start_time=T0))  # keeps the lake non-empty
    conn = open_catalog(write_lake(tmp_path, rows))
    scope = Scope("edge", T0, T0 + timedelta(hours=1))
    for measure in MEASURES:
        expected = ref.latency_by_dimension(rows, scope, measure, "model")
        _check(latency_by_dimension(conn, scope, measure, "model"), "model", expected)
        series = latency_by_time(conn, scope, measure, timedelta(minutes=30))  # type: ignore[arg-type]
        assert series["n"].sum() == sum(s["n"] for s in expected.values())
        histogram = latency_histogram(conn, scope, measure)  # type: ignore[arg-type]
        assert histogram["count"].sum() == sum(s["n"] for s in expected.values())


# --------------------------------------------------------------------------- histogram


@pytest.mark.parametrize("measure", MEASURES)
def test_histogram_bins_to_the_p99_and_a_tail(lake, measure: str) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    values = np.array(
        [v for v, _ in _values_with_start(rows, measure) if v is not None], dtype=float
    )
    histogram = latency_histogram(conn, ALL, measure, num_bins=20)  # type: ignore[arg-type]
    assert histogram.height == 21 and histogram["is_tail"].to_list() == [False] * 20 + [True]
    upper = float(np.percentile(values, 99, method="linear"))
    width = upper / 20
    assert histogram["bin_end_ms"][19] == pytest.approx(upper)
    assert histogram["bin_end_ms"][20] == pytest.approx(values.max())
    expected = [int(((values >= i * width) & (values < (i + 1) * width)).sum()) for i in range(20)]
    expected[0] += int((values < 0).sum())
    assert histogram["count"].to_list()[:20] == expected
    assert histogram["count"][20] == int((values >= upper).sum())


def test_histogram_of_all_zeros_is_one_bin(tmp_path: Path) -> None:
    rows = [r for _ in range(3) for r in _streamed(0.0, 1, 0.0)]
    conn = open_catalog(write_lake(tmp_path, rows))
    histogram = latency_histogram(conn, Scope("edge", T0, T0 + timedelta(hours=1)), "ttft")
    assert histogram.to_dicts() == [
        {"bin_start_ms": 0.0, "bin_end_ms": 0.0, "count": 3, "is_tail": False}
    ]


# --------------------------------------------------------------------------- prefill / decode


def test_prefill_and_decode_fits_equal_numpy(lake) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    fits = {row["model"]: row for row in prefill_decode_by_model(conn, ALL).to_dicts()}
    ok = [c for c in ref.calls(rows, ALL) if c["status_code"] != "ERROR" and c["model"]]
    for model in {c["model"] for c in ok}:
        mine = [c for c in ok if c["model"] == model]
        prefill = [
            (c["input_tokens"], c["ttft_ms"])
            for c in mine
            if c["ttft_ms"] is not None and c["input_tokens"] is not None
        ]
        decode = [
            (c["output_tokens"], c["duration_ms"])
            for c in mine
            if c["output_tokens"] is not None and c["output_tokens"] >= 1
        ]
        row = fits[model]
        assert row["num_prefill_calls"] == len(prefill)
        assert row["num_decode_calls"] == len(decode)
        for points, slope, intercept, r2, scale in (
            (prefill, "ttft_ms_per_1k_input_tokens", "ttft_intercept_ms", "ttft_r2", 1000.0),
            (decode, "duration_ms_per_output_token", "duration_intercept_ms", "duration_r2", 1.0),
        ):
            xs = np.array([p[0] for p in points], dtype=float)
            ys = np.array([p[1] for p in points], dtype=float)
            if len(set(xs)) < 2:
                assert row[slope] is None
                continue
            m, b = np.polyfit(xs, ys, 1)
            assert row[slope] == pytest.approx(m * scale, rel=1e-6)
            assert row[intercept] == pytest.approx(b, rel=1e-6, abs=1e-6)
            assert row[r2] == pytest.approx(np.corrcoef(xs, ys)[0, 1] ** 2, rel=1e-6)


def test_prefill_points_are_a_stable_sample(lake) -> None:  # type: ignore[no-untyped-def]
    conn, rows = lake
    first = prefill_decode_points(conn, ALL, limit=25)
    assert first.height == 25
    assert first.equals(prefill_decode_points(conn, ALL, limit=25))
    ids = {c["span_id"] for c in ref.calls(rows, ALL)}
    assert set(first["span_id"].to_list()) <= ids


# --------------------------------------------------------------------------- properties


def _stand_in(values: list[tuple[str, float]]) -> duckdb.DuckDBPyConnection:
    """A stand-in catalog: the columns the scoped model calls and this metric read."""
    calls = pa.table(
        {
            "project": ["p"] * len(values),
            "trace_id": [str(i) for i in range(len(values))],
            "start_time": pa.array(
                [T0 + timedelta(seconds=i) for i in range(len(values))], pa.timestamp("us", "UTC")
            ),
            "service_name": ["api"] * len(values),
            "model": [m for m, _ in values],
            "ttft_ms": pa.array([v for _, v in values], pa.float64()),
        }
    )
    conn = duckdb.connect()
    conn.register("calls_arrow", calls)
    conn.execute("CREATE TABLE llm_calls AS SELECT * FROM calls_arrow")
    stand_in_macros(conn)
    return conn


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            # No subnormals: DuckDB interpolates as lo*(1-f) + hi*f, which underflows to 0 for
            # values below 2.2e-308 (no latency is that small); numpy's lo + (hi-lo)*f does not.
            st.floats(
                min_value=0,
                max_value=1e6,
                allow_nan=False,
                allow_infinity=False,
                allow_subnormal=False,
            ),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_grouped_percentiles_are_numpys_and_monotone(values: list[tuple[str, float]]) -> None:
    frame = latency_by_dimension(
        _stand_in(values), Scope("p", T0, T0 + timedelta(hours=1)), "ttft", "model"
    )
    for row in frame.to_dicts():
        group = [v for m, v in values if m == row["model"]]
        qs = [row["p50_ms"], row["p90_ms"], row["p95_ms"], row["p99_ms"]]
        assert qs == sorted(qs) and min(group) <= qs[0] and qs[-1] <= max(group)
        want = np.percentile(group, [50, 90, 95, 99], method="linear")
        assert qs == pytest.approx(list(want), rel=1e-9, abs=1e-9)
        assert row["n"] == len(group)
