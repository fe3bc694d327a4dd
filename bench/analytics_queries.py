"""Latency, goodput, cost, guardrail, feedback and business analytics and the trace explorer on
the 10M-span lake.

The lake is the Overview benchmark's (:func:`bench.overview_queries.ensure_lake`: 10M spans over
30 days, built once). In a fresh process with DuckDB's default threads, each function runs as
its page calls it, over the "Last 7 days" preset (about 2.3M spans) and then over all 30 days
(all 10M spans): the ``analytics.METRICS`` functions the Latency & goodput, Cost, Guardrails and
Feedback & business pages use (3-hour buckets, grouped by model where a page groups; the
synthetic lake has users and sessions but no feedback), and the Traces page's queries: the newest page of 50 requests with
and without filters, its total count, a random sample, and opening one trace with its start time
as the page's links give it. One warm-up run, then the median of up to 5 (``_time``).

Targets: 1 s for an analytics function, 300 ms for the trace list's first page and for opening a
trace (the issues' targets).

    python -m bench analytics
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.overview_queries import _time, _windows, ensure_lake
from bench.report import OUT_DIR, Figure, run_in_fresh_process

NAME = "analytics_queries"
ANALYTICS_TARGET_S = 1.0
EXPLORER_TARGET_S = 0.3
BUCKET = timedelta(hours=3)


def _analytics_calls(scope: Any) -> dict[str, Callable[[Any], Any]]:
    from analytics import (
        business,
        changes,
        cost,
        feedback,
        goodput,
        guardrails,
        implicit,
        latency,
        quality,
        throughput,
    )
    from analytics.slos import load_slo_config

    slos = load_slo_config()
    return {
        "latency_percentiles (request)": lambda c: latency.latency_percentiles(c, scope),
        "latency_by_time (TTFT)": lambda c: latency.latency_by_time(c, scope, "ttft", BUCKET),
        "latency_by_dimension (request, model)": lambda c: latency.latency_by_dimension(
            c, scope, "request", "model"
        ),
        "latency_by_dimension (TTFT, model)": lambda c: latency.latency_by_dimension(
            c, scope, "ttft", "model"
        ),
        "latency_histogram (request)": lambda c: latency.latency_histogram(c, scope, "request"),
        "prefill_decode_by_model": lambda c: latency.prefill_decode_by_model(c, scope),
        "throughput_summary": lambda c: throughput.throughput_summary(c, scope),
        "throughput_by_time": lambda c: throughput.throughput_by_time(c, scope, BUCKET),
        "concurrency_by_time": lambda c: throughput.concurrency_by_time(c, scope, BUCKET),
        "goodput_summary": lambda c: goodput.goodput_summary(c, scope, slos),
        "goodput_by_time": lambda c: goodput.goodput_by_time(c, scope, slos, BUCKET),
        "goodput_by_dimension (route)": lambda c: goodput.goodput_by_dimension(
            c, scope, slos, "route"
        ),
        "burn_rate_by_time": lambda c: goodput.burn_rate_by_time(c, scope, slos, BUCKET),
        "slo_misses": lambda c: goodput.slo_misses(c, scope, slos),
        "bad_requests": lambda c: goodput.bad_requests(c, scope, slos),
        "cost_summary": lambda c: cost.cost_summary(c, scope),
        "cost_by_dimension (model)": lambda c: cost.cost_by_dimension(c, scope, "model"),
        "cost_by_dimension (user)": lambda c: cost.cost_by_dimension(c, scope, "user"),
        "cost_by_time (by model)": lambda c: cost.cost_by_time(c, scope, BUCKET, "model"),
        "most_expensive_traces": lambda c: cost.most_expensive_traces(c, scope),
        "unpriced_models": lambda c: cost.unpriced_models(c, scope),
        "cost_projection": lambda c: cost.cost_projection(c, scope),
        "guardrail_rate_by_guardrail": lambda c: guardrails.guardrail_rate_by_guardrail(c, scope),
        "guardrail_rate_by_time": lambda c: guardrails.guardrail_rate_by_time(c, scope, BUCKET),
        "guardrail_rate_by_dimension (model)": lambda c: guardrails.guardrail_rate_by_dimension(
            c, scope, "model"
        ),
        "guardrail_latency": lambda c: guardrails.guardrail_latency(c, scope),
        "blocks_followed_by_pass": lambda c: guardrails.blocks_followed_by_pass(c, scope),
        "guardrail_spikes": lambda c: guardrails.guardrail_spikes(c, scope),
        "guardrail_results": lambda c: guardrails.guardrail_results(c, scope),
        "quality_rates": lambda c: quality.quality_rates(c, scope),
        "change_events": lambda c: changes.change_events(c, scope),
        "feedback_summary": lambda c: feedback.feedback_summary(c, scope),
        "feedback_by_time": lambda c: feedback.feedback_by_time(c, scope, BUCKET),
        "feedback_by_segment (model)": lambda c: feedback.feedback_by_segment(c, scope, "model"),
        "implicit_turns (2,000 sessions, no embeddings)": lambda c: implicit.implicit_turns(
            c, scope, embed=False
        ),
        "user_activity": lambda c: business.user_activity(c, scope),
        "retention_cohorts": lambda c: business.retention_cohorts(c, scope),
        "session_stats": lambda c: business.session_stats(c, scope),
        "quality_business_correlation": lambda c: business.quality_business_correlation(c, scope),
    }


def _explorer_calls(conn: Any, scope: Any) -> dict[str, Callable[[Any], Any]]:
    from analytics.trace_detail import read_trace
    from analytics.traces import Range, TraceFilter, count_traces, list_traces, sample_traces

    newest = list_traces(conn, scope, count=False, limit=1).rows.row(0, named=True)
    slow_errors = TraceFilter(status="error", ranges=(Range("duration_ms", min=5000.0),))
    return {
        "list_traces, first page": lambda c: list_traces(c, scope, count=False),
        "list_traces, first page, errors slower than 5 s": lambda c: list_traces(
            c, scope, slow_errors, count=False
        ),
        "list_traces, first page, sorted by cost": lambda c: list_traces(
            c, scope, sort="total_cost_usd", count=False
        ),
        "count_traces (the list's total)": lambda c: count_traces(c, scope),
        "sample_traces (10 random)": lambda c: sample_traces(c, scope, seed=1),
        "read_trace (open one, with its start time)": lambda c: read_trace(
            c, scope.project, newest["trace_id"], newest["start_time"]
        ),
    }


def child_main(argv: list[str]) -> int:
    """Measure in this process (called by :func:`run` in a fresh one); print JSON."""
    from analytics.cost import install_prices
    from analytics.scope import Scope, data_time_range
    from store import derived
    from store.catalog import open_catalog

    # The synthetic lake stands for 30 days written over 30 days: its past days have settled.
    derived.DAY_SETTLE = timedelta(0)
    conn = open_catalog(Path(argv[argv.index("--lake") + 1]))
    install_prices(conn)
    first, last = data_time_range(conn, "default")
    assert first is not None and last is not None, "the lake is empty"
    result: dict[str, Any] = {}
    for window, (start, end) in _windows(first, last).items():
        scope = Scope("default", start, end)
        timings: dict[str, Any] = {
            "window": [start.isoformat(), end.isoformat()],
            "analytics": {},
            "explorer": {},
        }
        for name, call in _analytics_calls(scope).items():
            timings["analytics"][name] = _time(lambda call=call: call(conn))
        for name, call in _explorer_calls(conn, scope).items():
            timings["explorer"][name] = _time(lambda call=call: call(conn))
        result[window] = timings
    print(json.dumps({"windows": result}))
    return 0


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Time every function; return figures and details."""
    manifest = ensure_lake(out_dir, log)
    log(f"analytics: timing page queries on {manifest['num_spans']:,} spans …")
    result: dict[str, Any] = run_in_fresh_process(
        "bench.analytics_queries", "--lake", manifest["path"]
    )
    figures = []
    spans = f"{manifest['num_spans'] / 1e6:.0f}M spans"
    for window, label in (("7d", "last 7 days"), ("all", "all 30 days")):
        timings = result["windows"][window]
        for group, target, title in (
            ("analytics", ANALYTICS_TARGET_S, "Analytics functions"),
            ("explorer", EXPLORER_TARGET_S, "Trace explorer"),
        ):
            for name, timing in timings[group].items():
                median = timing["median_s"]
                note = f"median of {len(timing['runs_s'])}, CPU {timing['median_cpu_s']:.2f} s"
                figures.append(
                    Figure(
                        f"{title}, {spans}, {label}",
                        name,
                        median,
                        "s",
                        f"< {target:g} s",
                        median < target,
                        note,
                    )
                )
                log(f"analytics:   {name}, {label}: {median:.3f} s")
    return figures, {"lake": manifest, **result}


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
