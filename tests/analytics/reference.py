"""Pure-Python reference for the Overview metrics, computed from raw span rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from analytics.cost import load_price_table, match_price_model
from analytics.scope import Scope
from store.schema import LLM_OPERATIONS


@dataclass(frozen=True)
class RefTrace:
    project: str
    trace_id: str
    start_time: datetime
    duration_ms: float
    service_name: str | None
    status_code: str | None
    user_id: str | None
    models: frozenset[str]


def _model(row: dict[str, Any]) -> str | None:
    model: str | None = row["response_model"] or row["request_model"]
    return model


def build_traces(rows: Iterable[dict[str, Any]]) -> list[RefTrace]:
    """One trace per (project, trace_id): root's name/status/service, extent over all spans."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["project"], row["trace_id"])].append(row)
    traces = []
    for (project, trace_id), spans in grouped.items():
        root = next(s for s in spans if s["parent_span_id"] is None)
        start = min(s["start_time"] for s in spans)
        end = max(s["end_time"] for s in spans)
        models = frozenset(
            m for s in spans if s["operation"] in LLM_OPERATIONS and (m := _model(s)) is not None
        )
        traces.append(
            RefTrace(
                project=project,
                trace_id=trace_id,
                start_time=start,
                duration_ms=(end - start).total_seconds() * 1000,
                service_name=root["service_name"],
                status_code=root["status_code"],
                user_id=root["user_id"],
                models=models,
            )
        )
    return traces


def _in_window(scope: Scope, row_project: str, start: datetime, service: str | None) -> bool:
    return (
        row_project == scope.project
        and scope.start <= start < scope.end
        and (not scope.services or service in scope.services)
    )


def scoped_traces(rows: list[dict[str, Any]], scope: Scope) -> list[RefTrace]:
    """Traces the scope selects."""
    return [
        t
        for t in build_traces(rows)
        if _in_window(scope, t.project, t.start_time, t.service_name)
        and (not scope.models or t.models & set(scope.models))
    ]


def scoped_calls(rows: list[dict[str, Any]], scope: Scope) -> list[dict[str, Any]]:
    """Model calls the scope selects."""
    return [
        r
        for r in rows
        if r["operation"] in LLM_OPERATIONS
        and _in_window(scope, r["project"], r["start_time"], r["service_name"])
        and (not scope.models or _model(r) in scope.models)
    ]


def scoped_spans(rows: list[dict[str, Any]], scope: Scope) -> list[dict[str, Any]]:
    """Spans the scope selects."""
    return [
        r
        for r in rows
        if _in_window(scope, r["project"], r["start_time"], r["service_name"])
        and (not scope.models or _model(r) in scope.models)
    ]


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """numpy's linear percentile, None for no values."""
    present = [v for v in values if v is not None]
    return float(np.percentile(present, q * 100, method="linear")) if present else None


def call_cost(row: dict[str, Any]) -> float | None:
    """The call's own cost, else the hand formula with the price in force at its start."""
    if row["cost_usd"] is not None:
        return float(row["cost_usd"])
    name = _model(row)
    price_model = match_price_model(name) if name else None
    if price_model is None:
        return None
    prices = [
        p
        for p in load_price_table().prices.to_pylist()
        if p["model"] == price_model and p["effective_from"] <= row["start_time"]
    ]
    if not prices:
        return None
    price = max(prices, key=lambda p: p["effective_from"])
    cache_read = row["cache_read_tokens"] or 0
    cache_write = row["cache_write_tokens"] or 0
    uncached = max((row["input_tokens"] or 0) - cache_read - cache_write, 0)
    return (
        float(
            uncached * price["input_usd_per_mtok"]
            + cache_read * price["cache_read_usd_per_mtok"]
            + cache_write * price["cache_write_usd_per_mtok"]
            + (row["output_tokens"] or 0) * price["output_usd_per_mtok"]
        )
        / 1e6
    )


def summary(rows: list[dict[str, Any]], scope: Scope) -> dict[str, Any]:
    """Every OverviewSummary field, computed from the rows."""
    traces = scoped_traces(rows, scope)
    calls = scoped_calls(rows, scope)
    spans = scoped_spans(rows, scope)
    errors = sum(t.status_code == "ERROR" for t in traces)
    costs = [call_cost(c) for c in calls]
    durations = [t.duration_ms for t in traces]
    ttfts = [c["ttft_ms"] for c in calls]
    return {
        "num_requests": len(traces),
        "num_traces": len({(s["project"], s["trace_id"]) for s in spans}),
        "num_users": len({t.user_id for t in traces if t.user_id is not None}),
        "num_errors": errors,
        "error_rate": errors / len(traces) if traces else None,
        "latency_p50_ms": percentile(durations, 0.5),
        "latency_p95_ms": percentile(durations, 0.95),
        "latency_p99_ms": percentile(durations, 0.99),
        "num_streamed_calls": sum(t is not None for t in ttfts),
        "ttft_p50_ms": percentile(ttfts, 0.5),
        "ttft_p95_ms": percentile(ttfts, 0.95),
        "ttft_p99_ms": percentile(ttfts, 0.99),
        "num_llm_calls": len(calls),
        "num_unpriced_calls": sum(
            cost is None and (c["input_tokens"] is not None or c["output_tokens"] is not None)
            for c, cost in zip(calls, costs, strict=True)
        ),
        "input_tokens": sum(c["input_tokens"] or 0 for c in calls),
        "output_tokens": sum(c["output_tokens"] or 0 for c in calls),
        "total_cost_usd": float(sum(c for c in costs if c is not None)),
    }


def top_models(rows: list[dict[str, Any]], scope: Scope) -> list[dict[str, Any]]:
    """Per (model, provider): calls, tokens, cost, p95 call duration, error rate; busiest first."""
    groups: dict[tuple[str | None, str | None], list[dict[str, Any]]] = defaultdict(list)
    for call in scoped_calls(rows, scope):
        groups[(_model(call), call["provider"])].append(call)
    out = []
    for (model, provider), calls in groups.items():
        costs = [c for c in (call_cost(call) for call in calls) if c is not None]
        input_tokens = sum(c["input_tokens"] or 0 for c in calls)
        output_tokens = sum(c["output_tokens"] or 0 for c in calls)
        out.append(
            {
                "model": model,
                "provider": provider,
                "calls": len(calls),
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
                "cost_usd": sum(costs) if costs else None,
                "latency_p95_ms": percentile([c["duration_ms"] for c in calls], 0.95),
                "error_rate": sum(c["status_code"] == "ERROR" for c in calls) / len(calls),
            }
        )
    out.sort(
        key=lambda r: (
            -r["calls"],
            -(r["cost_usd"] if r["cost_usd"] is not None else -1.0),
            (r["model"] is None, r["model"] or ""),
            (r["provider"] is None, r["provider"] or ""),
        )
    )
    return out
