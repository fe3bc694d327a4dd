"""Pure-Python references for latency, throughput, goodput and cost, computed from raw span rows.

Written from the definitions in the module docstrings, not from the SQL: requests are traces
whose (earliest) span starts in the window, a call's route is its trace's root span name, a
percentile is numpy's linear one.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from analytics.cost import load_price_table, match_price_model
from analytics.latency import tpot_ms
from analytics.scope import Scope
from analytics.slos import SLOConfig
from store.schema import LLM_OPERATIONS
from tests.analytics.reference import percentile

Row = dict[str, Any]


def model_of(row: Row) -> str | None:
    """Response model, else request model."""
    return row["response_model"] or row["request_model"]


def roots(rows: Iterable[Row]) -> dict[str, Row]:
    """The earliest root span (no parent) of each trace."""
    found: dict[str, Row] = {}
    for row in rows:
        if row["parent_span_id"]:
            continue
        best = found.get(row["trace_id"])
        if best is None or (row["start_time"], row["span_id"]) < (
            best["start_time"],
            best["span_id"],
        ):
            found[row["trace_id"]] = row
    return found


@dataclass
class Request:
    """A trace as a request: its root's fields and its scoped model calls."""

    trace_id: str
    start_time: datetime
    duration_ms: float
    service: str | None
    route: str | None
    status: str | None
    models: frozenset[str]
    calls: list[Row] = field(default_factory=list)


def _filters_ok(scope: Scope, row_project: str, start: datetime, service: str | None) -> bool:
    return (
        row_project == scope.project
        and scope.start <= start < scope.end
        and (not scope.services or service in scope.services)
    )


def calls(rows: list[Row], scope: Scope) -> list[Row]:
    """Model calls the scope selects, each with ``route``, ``tpot`` and root user/session."""
    root_of = roots(rows)
    out = []
    for row in rows:
        if row["operation"] not in LLM_OPERATIONS:
            continue
        if not _filters_ok(scope, row["project"], row["start_time"], row["service_name"]):
            continue
        if scope.models and model_of(row) not in scope.models:
            continue
        root = root_of.get(row["trace_id"])
        route = root["name"] if root else None
        if scope.routes and route not in scope.routes:
            continue
        out.append(
            {
                **row,
                "model": model_of(row),
                "route": route,
                "tpot": tpot_ms(row["duration_ms"], row["ttft_ms"], row["output_tokens"]),
                "any_user": row["user_id"] or (root["user_id"] if root else None),
                "any_session": row["session_id"] or (root["session_id"] if root else None),
            }
        )
    return out


def requests(rows: list[Row], scope: Scope) -> list[Request]:
    """Traces the scope selects as requests, with their scoped calls."""
    by_trace: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row["project"] == scope.project:
            by_trace[row["trace_id"]].append(row)
    root_of = roots(rows)
    scoped_calls: dict[str, list[Row]] = defaultdict(list)
    for call in calls(rows, scope):
        scoped_calls[call["trace_id"]].append(call)
    out = []
    for trace_id, spans in by_trace.items():
        root = root_of[trace_id]
        start = min(s["start_time"] for s in spans)
        if not _filters_ok(scope, scope.project, start, root["service_name"]):
            continue
        models = frozenset(
            m for s in spans if s["operation"] in LLM_OPERATIONS and (m := model_of(s)) is not None
        )
        if scope.models and not models & set(scope.models):
            continue
        if scope.routes and root["name"] not in scope.routes:
            continue
        out.append(
            Request(
                trace_id=trace_id,
                start_time=start,
                duration_ms=root["duration_ms"],
                service=root["service_name"],
                route=root["name"],
                status=root["status_code"],
                models=models,
                calls=scoped_calls.get(trace_id, []),
            )
        )
    return out


def summarize(values: Iterable[float | None]) -> dict[str, Any]:
    """n, p50/p90/p95/p99, mean, max of the non-null values."""
    present = [v for v in values if v is not None]
    return {
        "n": len(present),
        "p50_ms": percentile(present, 0.5),
        "p90_ms": percentile(present, 0.9),
        "p95_ms": percentile(present, 0.95),
        "p99_ms": percentile(present, 0.99),
        "mean_ms": float(np.mean(present)) if present else None,
        "max_ms": max(present) if present else None,
    }


_CALL_KEYS: dict[str, Callable[[Row], Any]] = {
    "model": lambda c: c["model"],
    "provider": lambda c: c["provider"],
    "service": lambda c: c["service_name"],
    "operation": lambda c: c["operation"],
    "route": lambda c: c["route"],
    "day": lambda c: c["start_time"].date(),
}
_CALL_VALUES = {"call": "duration_ms", "ttft": "ttft_ms", "tpot": "tpot"}


def latency_groups(rows: list[Row], scope: Scope, measure: str, by: str) -> dict[Any, list[Any]]:
    """The values of a latency measure per group."""
    groups: dict[Any, list[Any]] = defaultdict(list)
    if measure == "request":
        reqs = requests(rows, scope)
        for req in reqs:
            if by == "model":
                keys: list[Any] = sorted(req.models) or [None]
            elif by == "provider":
                keys = sorted({c["provider"] for c in req.calls}, key=str) or [None]
            else:
                keys = [
                    {"service": req.service, "route": req.route, "day": req.start_time.date()}[by]
                ]
            for key in keys:
                groups[key].append(req.duration_ms)
        return groups
    for call in calls(rows, scope):
        groups[_CALL_KEYS[by](call)].append(call[_CALL_VALUES[measure]])
    return groups


def latency_by_dimension(rows: list[Row], scope: Scope, measure: str, by: str) -> dict[Any, Any]:
    """Summaries per group, groups without values left out."""
    out = {}
    for key, values in latency_groups(rows, scope, measure, by).items():
        summary = summarize(values)
        if summary["n"]:
            out[key] = summary
    return out


# --------------------------------------------------------------------------- goodput


def _matches(value: str | None, patterns: tuple[str, ...]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value or "", p) for p in patterns)


def judge(req: Request, config: SLOConfig) -> tuple[list[str], list[str]]:
    """(SLOs that apply to the request, SLOs it missed), in config order."""
    applies, missed = [], []
    for slo in config.slos:
        if not _matches(req.route, slo.routes):
            continue
        on_model = [c for c in req.calls if _matches(c["model"], slo.models)]
        if slo.metric in ("ttft_ms", "tpot_ms"):
            key = "ttft_ms" if slo.metric == "ttft_ms" else "tpot"
            values = [c[key] for c in on_model if c[key] is not None]
            if values:
                applies.append(slo.name)
                if max(values) > (slo.max_ms or 0):
                    missed.append(slo.name)
            continue
        if slo.models and not on_model:
            continue
        if slo.metric == "latency_ms":
            applies.append(slo.name)
            if req.duration_ms > (slo.max_ms or 0):
                missed.append(slo.name)
        else:
            applies.append(slo.name)
            if req.status == "ERROR":
                missed.append(slo.name)
    return applies, missed


def goodput(rows: list[Row], scope: Scope, config: SLOConfig) -> dict[str, Any]:
    """Requests, good requests, per-SLO applies/missed counts and each bad request's misses."""
    reqs = requests(rows, scope)
    applicable: dict[str, int] = defaultdict(int)
    missed_count: dict[str, int] = defaultdict(int)
    only: dict[str, int] = defaultdict(int)
    bad: dict[str, list[str]] = {}
    for req in reqs:
        applies, missed = judge(req, config)
        for name in applies:
            applicable[name] += 1
        for name in missed:
            missed_count[name] += 1
        if len(missed) == 1:
            only[missed[0]] += 1
        if missed:
            bad[req.trace_id] = missed
    return {
        "num_requests": len(reqs),
        "num_good": len(reqs) - len(bad),
        "applicable": dict(applicable),
        "missed": dict(missed_count),
        "only": dict(only),
        "bad": bad,
    }


# --------------------------------------------------------------------------- cost


def _price(row: Row) -> dict[str, Any] | None:
    name = model_of(row)
    price_model = match_price_model(name) if name else None
    if price_model is None:
        return None
    prices = [
        p
        for p in load_price_table().prices.to_pylist()
        if p["model"] == price_model and p["effective_from"] <= row["start_time"]
    ]
    return max(prices, key=lambda p: p["effective_from"]) if prices else None


def cost_split(row: Row) -> dict[str, float | None]:
    """A call's cost by token type (USD), its reported cost, and the total (None: unpriced)."""
    zero = dict.fromkeys(("input", "cache_read", "cache_write", "output"), 0.0)
    if row["cost_usd"] is not None:
        return {**zero, "reported": row["cost_usd"], "total": row["cost_usd"]}
    price = _price(row)
    if price is None or (row["input_tokens"] is None and row["output_tokens"] is None):
        return {**zero, "reported": 0.0, "total": None}
    read, write = row["cache_read_tokens"] or 0, row["cache_write_tokens"] or 0
    parts = {
        "input": max((row["input_tokens"] or 0) - read - write, 0)
        * price["input_usd_per_mtok"]
        / 1e6,
        "cache_read": read * price["cache_read_usd_per_mtok"] / 1e6,
        "cache_write": write * price["cache_write_usd_per_mtok"] / 1e6,
        "output": (row["output_tokens"] or 0) * price["output_usd_per_mtok"] / 1e6,
    }
    return {**parts, "reported": 0.0, "total": sum(parts.values())}


_COST_KEYS: dict[str, Callable[[Row], Any]] = {
    **_CALL_KEYS,
    "user": lambda c: c["any_user"],
    "session": lambda c: c["any_session"],
}


def cost_by(rows: list[Row], scope: Scope, by: str) -> dict[Any, dict[str, Any]]:
    """Per group: cost, calls, requests, unpriced calls and the split."""
    out: dict[Any, dict[str, Any]] = {}
    for call in calls(rows, scope):
        key = _COST_KEYS[by](call)
        group = out.setdefault(
            key,
            {
                "cost_usd": 0.0,
                "num_llm_calls": 0,
                "traces": set(),
                "num_unpriced_calls": 0,
                "input_cost_usd": 0.0,
                "cache_read_cost_usd": 0.0,
                "output_cost_usd": 0.0,
                "reported_cost_usd": 0.0,
            },
        )
        split = cost_split(call)
        group["num_llm_calls"] += 1
        group["traces"].add(call["trace_id"])
        group["cost_usd"] += split["total"] or 0.0
        group["input_cost_usd"] += split["input"] or 0.0
        group["cache_read_cost_usd"] += split["cache_read"] or 0.0
        group["output_cost_usd"] += split["output"] or 0.0
        group["reported_cost_usd"] += split["reported"] or 0.0
        if split["total"] is None and (
            call["input_tokens"] is not None or call["output_tokens"] is not None
        ):
            group["num_unpriced_calls"] += 1
    for group in out.values():
        group["num_requests"] = len(group.pop("traces"))
    return out


# --------------------------------------------------------------------------- concurrency


def concurrency(
    intervals: list[tuple[datetime, datetime]], start: datetime, end: datetime, bucket: timedelta
) -> list[tuple[datetime, float, int]]:
    """(bucket start, mean in flight, peak in flight) by brute force over half-open intervals."""
    out = []
    b = start
    while b < end:
        b_end = min(b + bucket, end)
        busy = sum(
            max((min(e, b_end) - max(s, b)).total_seconds(), 0.0) for s, e in intervals if e > s
        )
        moments = [b] + [t for s, e in intervals for t in (s, e) if b <= t < b_end]
        peak = max(sum(1 for s, e in intervals if s <= t < e) for t in moments)
        out.append((b, busy / (b_end - b).total_seconds(), peak))
        b += bucket
    return out
