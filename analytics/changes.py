"""What changed, and since when: change events and the metric shifts around them.

A **change event** is the first appearance, inside the window, of something that had a
predecessor seen at least :data:`MIN_HISTORY` before it (looked for up to :data:`LOOKBACK`
before the window):

* ``model_version`` — a response model a request model had not answered with before
  (``gpt-4o`` → ``gpt-4o-2024-11-20``: the provider moved the alias);
* ``system_prompt`` — a system-prompt hash a service had not used before;
* ``new_route`` — a root span name (route) not seen before, when the project had requests;
* ``new_tool`` — a tool (``execute_tool`` span name) not called before;
* ``price`` — a price-table row taking effect for a model the project calls.

:func:`change_impact` compares the day before an event with the day after it: p95 request
latency and TTFT (with distribution-free confidence intervals from order statistics), thumbs-down rate
and guardrail intervention rate (Wilson intervals), and cost per request (normal interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import duckdb
import polars as pl
from scipy.stats import binom

from analytics.quality import wilson_interval
from analytics.scope import Scope, run_scoped
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "CHANGE_KINDS",
    "LOOKBACK",
    "MIN_HISTORY",
    "ChangeEvent",
    "change_events",
    "change_impact",
    "quantile_interval",
]

CHANGE_KINDS: tuple[str, ...] = ("model_version", "system_prompt", "new_route", "new_tool", "price")
#: How far before the window a predecessor is looked for.
LOOKBACK = timedelta(days=30)
#: How long before a change its predecessor must have been seen: a value first seen in the
#: first hours of the data is the data starting, not a change.
MIN_HISTORY = timedelta(days=1)


@dataclass(frozen=True)
class ChangeEvent:
    """One change: what kind, of what (``subject``), from what to what, and when it first showed."""

    kind: str
    subject: str | None
    before: str | None
    after: str | None
    time: datetime

    @property
    def label(self) -> str:
        """A short line for a chart marker or a list."""
        if self.kind == "model_version":
            return f"{self.subject}: {self.before} → {self.after}"
        if self.kind == "system_prompt":
            return f"system prompt of {self.subject}: {self.before} → {self.after}"
        if self.kind == "price":
            return f"price of {self.subject}: {self.before} → {self.after}"
        return f"{self.kind.replace('_', ' ')}: {self.after}"


CHANGE_EVENTS_SQL = """
WITH calls AS (
    SELECT
        request_model,
        response_model,
        service_name,
        system_prompt_hash,
        start_time
    FROM scoped_llm_calls
    WHERE list_contains($generation, operation)
), firsts AS (
    -- (kind, subject, value): when each value was first and last seen for its subject
    SELECT 'model_version' AS kind, request_model AS subject, response_model AS value,
        min(start_time) AS first_seen, max(start_time) AS last_seen
    FROM calls WHERE request_model IS NOT NULL AND response_model IS NOT NULL GROUP BY ALL
    UNION ALL
    SELECT 'system_prompt', service_name, system_prompt_hash, min(start_time), max(start_time)
    FROM calls WHERE system_prompt_hash IS NOT NULL GROUP BY ALL
    UNION ALL
    SELECT 'new_route', NULL, name, min(start_time), max(start_time)
    FROM scoped_root_spans GROUP BY ALL
    UNION ALL
    SELECT 'new_tool', NULL, name, min(start_time), max(start_time)
    FROM scoped_spans WHERE operation = 'execute_tool' GROUP BY ALL
)
SELECT
    n.kind,
    n.subject,
    (
        SELECT arg_max(p.value, p.last_seen) FROM firsts AS p
        WHERE p.kind = n.kind AND p.subject IS NOT DISTINCT FROM n.subject
            AND p.first_seen < n.first_seen
    ) AS before,
    n.value AS after,
    n.first_seen AS time
FROM firsts AS n
WHERE n.first_seen >= $window_start
    -- a predecessor seen for a while first: the first hours of data are not changes
    AND EXISTS (
        SELECT 1 FROM firsts AS p
        WHERE p.kind = n.kind AND p.subject IS NOT DISTINCT FROM n.subject
            AND p.first_seen <= n.first_seen - $min_history
    )
ORDER BY time, kind, subject
"""

PRICE_EVENTS_SQL = """
WITH used AS (
    SELECT DISTINCT pm.price_model
    FROM price_models AS pm
    WHERE pm.price_model IS NOT NULL
), rows AS (
    SELECT
        p.model,
        p.effective_from,
        printf('$%.2f / $%.2f per Mtok', p.input_usd_per_mtok, p.output_usd_per_mtok) AS price,
        lag(printf('$%.2f / $%.2f per Mtok', p.input_usd_per_mtok, p.output_usd_per_mtok))
            OVER (PARTITION BY p.model ORDER BY p.effective_from) AS previous
    FROM prices AS p
    WHERE p.model IN (SELECT price_model FROM used)
)
SELECT 'price' AS kind, model AS subject, previous AS before, price AS after, effective_from AS time
FROM rows
WHERE effective_from >= $start_at AND effective_from < $end_at AND previous IS NOT NULL
ORDER BY time, subject
"""


def change_events(conn: duckdb.DuckDBPyConnection, scope: Scope) -> list[ChangeEvent]:
    """Every change event of :data:`CHANGE_KINDS` whose first appearance is in the scope's
    window, oldest first (see the module docstring)."""
    wider = replace(scope, start=scope.start - LOOKBACK)
    rows = run_scoped(
        conn,
        wider,
        CHANGE_EVENTS_SQL,
        {
            "generation": list(GENERATION_OPERATIONS),
            "window_start": scope.start,
            "min_history": MIN_HISTORY,
        },
    ).to_pylist()
    cur = conn.cursor()
    try:
        prices = cur.execute(
            PRICE_EVENTS_SQL, {"start_at": scope.start, "end_at": scope.end}
        ).fetchall()
    finally:
        cur.close()
    events = [ChangeEvent(**row) for row in rows]
    events += [ChangeEvent(*row) for row in prices]
    return sorted(events, key=lambda e: (e.time, e.kind, e.subject or ""))


def quantile_interval(
    values: list[float], q: float, confidence: float = 0.95
) -> tuple[float, float, float] | None:
    """The q-quantile of ``values`` (linear interpolation) and a distribution-free confidence
    interval from order statistics (the ranks a Binomial(n, q) count falls between).

    Returns:
        (estimate, low, high), or None for an empty list.

    >>> quantile_interval([float(x) for x in range(1, 101)], 0.5)
    (50.5, 40.0, 61.0)
    """
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    position = (n - 1) * q
    below = math.floor(position)
    above = min(below + 1, n - 1)
    estimate = ordered[below] + (ordered[above] - ordered[below]) * (position - below)
    alpha = 1 - confidence
    low_rank = int(binom.ppf(alpha / 2, n, q))  # 0-based index of the lower bound
    high_rank = int(binom.ppf(1 - alpha / 2, n, q))
    return estimate, ordered[max(low_rank - 1, 0)], ordered[min(high_rank, n - 1)]


IMPACT_REQUESTS_SQL = """
WITH requests AS (
    SELECT trace_id, duration_ms, total_cost_usd, num_llm_calls FROM scoped_traces
), thumbs AS (
    SELECT
        count(*) FILTER (WHERE kind = 'thumbs' AND value < 0) AS down,
        count(*) FILTER (WHERE kind = 'thumbs') AS total
    FROM scoped_trace_feedback
    WHERE trace_id IN (SELECT trace_id FROM requests)
), guarded AS (
    SELECT count(DISTINCT trace_id) AS n
    FROM scoped_trace_guardrails
    WHERE triggered AND source <> 'detector' AND trace_id IN (SELECT trace_id FROM requests)
)
SELECT
    (SELECT list(duration_ms) FROM requests WHERE duration_ms IS NOT NULL) AS durations,
    (SELECT list(ttft_ms) FROM scoped_llm_calls WHERE ttft_ms IS NOT NULL) AS ttfts,
    (SELECT list(total_cost_usd) FROM requests WHERE num_llm_calls > 0) AS costs,
    (SELECT count(*) FROM requests) AS num_requests,
    thumbs.down AS thumbs_down,
    thumbs.total AS thumbs,
    guarded.n AS guarded
FROM thumbs, guarded
"""


def _side(conn: duckdb.DuckDBPyConnection, scope: Scope) -> dict[str, Any]:
    row: dict[str, Any] = run_scoped(conn, scope, IMPACT_REQUESTS_SQL).to_pylist()[0]
    return row


def _measures(
    row: dict[str, Any],
) -> dict[str, tuple[float | None, float | None, float | None, int]]:
    """metric -> (value, low, high, n) for one side of an event."""
    out: dict[str, tuple[float | None, float | None, float | None, int]] = {}
    for name, values in (("p95 latency (ms)", row["durations"]), ("p95 TTFT (ms)", row["ttfts"])):
        p95 = quantile_interval(values or [], 0.95)
        out[name] = (*(p95 or (None, None, None)), len(values or []))
    for name, k, n in (
        ("thumbs-down rate", row["thumbs_down"], row["thumbs"]),
        ("guardrail intervention rate", row["guarded"], row["num_requests"]),
    ):
        interval = wilson_interval(int(k or 0), int(n or 0))
        value = k / n if n else None
        out[name] = (value, *(interval or (None, None)), int(n or 0))
    costs = [c for c in row["costs"] or [] if c is not None]
    if costs:
        mean = sum(costs) / len(costs)
        sd = (
            math.sqrt(sum((c - mean) ** 2 for c in costs) / (len(costs) - 1))
            if len(costs) > 1
            else 0.0
        )
        half = 1.959963984540054 * sd / math.sqrt(len(costs))
        out["cost per request (USD)"] = (mean, mean - half, mean + half, len(costs))
    else:
        out["cost per request (USD)"] = (None, None, None, 0)
    return out


def change_impact(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    event: ChangeEvent,
    width: timedelta = timedelta(days=1),
) -> pl.DataFrame:
    """The metrics in the ``width`` before an event against the ``width`` after it.

    A model-version event looks at requests that called either version, a system-prompt event
    at the service's requests; other events at every request of the scope's project (with the
    scope's other filters).

    Returns:
        One row per metric: ``metric``, ``before`` with ``before_low``/``before_high`` (95%)
        and ``n_before``, the same for ``after``, and ``change`` (after − before).
    """
    narrowed = scope
    if event.kind == "model_version":
        models = tuple(m for m in (event.before, event.after) if m)
        narrowed = replace(scope, models=models)
    elif event.kind == "system_prompt" and event.subject:
        narrowed = replace(scope, services=(event.subject,))
    before = _measures(_side(conn, replace(narrowed, start=event.time - width, end=event.time)))
    after = _measures(_side(conn, replace(narrowed, start=event.time, end=event.time + width)))
    rows = []
    for metric, (b, b_low, b_high, b_n) in before.items():
        a, a_low, a_high, a_n = after[metric]
        rows.append(
            {
                "metric": metric,
                "before": b, "before_low": b_low, "before_high": b_high, "n_before": b_n,
                "after": a, "after_low": a_low, "after_high": a_high, "n_after": a_n,
                "change": None if a is None or b is None else a - b,
            }
        )  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"before": pl.Float64, "after": pl.Float64,
                        "before_low": pl.Float64, "before_high": pl.Float64, "after_low": pl.Float64,
                        "after_high": pl.Float64, "change": pl.Float64})  # fmt: skip
