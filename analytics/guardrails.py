"""Guardrails: how often each guardrail and detector triggers, where, at what latency, and when
that changes.

Everything reads ``scoped_guardrails`` (``store.schema.GUARDRAIL_SCHEMA``: one row per guardrail
evaluation read from a guardrail span or event, one per built-in detector finding). A **check**
is one evaluated span per guardrail and stage:

* a guardrail span or event: each evaluated span is a check (pass or not);
* a built-in detector (``source = 'detector'``) writes rows only when it fires, so its checks
  are the text-generating model calls in scope (every one is checked); the JSON-output detector
  (category ``format``) writes a row for every call that asked for JSON, so its rows are its
  checks.

A check **triggered** when any of its results has an action other than ``pass``; the trigger
rate is triggered checks ÷ checks. Rates come with their counts, so a reader can tell 1 of 2
from 500 of 1000.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal, cast

import duckdb
import polars as pl

from analytics.latency import check_bucket
from analytics.scope import Scope, run_scoped
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "GUARDRAIL_DIMENSIONS",
    "GuardrailLatency",
    "blocks_followed_by_pass",
    "generation_calls",
    "guardrail_latency",
    "guardrail_rate_by_category",
    "guardrail_rate_by_dimension",
    "guardrail_rate_by_guardrail",
    "guardrail_rate_by_time",
    "guardrail_results",
    "guardrail_spikes",
    "two_proportion_p_value",
]

GuardrailDimension = Literal["model", "route"]
GUARDRAIL_DIMENSIONS: tuple[str, ...] = ("model", "route")
#: Detector categories that write a row for every check (pass or not).
ROW_CHECKED_CATEGORIES: tuple[str, ...] = ("format",)

# One row per check: a (guardrail, stage, source) evaluation of one span.
_CHECKS_CTE = """
checks AS (
    SELECT
        guardrail,
        stage,
        source,
        trace_id,
        span_id,
        min(time) AS time,
        any_value(model) AS model,
        bool_or(source = 'detector' AND list_contains($row_checked, category)) AS per_row,
        bool_or(triggered) AS triggered,
        bool_or(action = 'block') AS blocked,
        bool_or(action = 'mask') AS masked,
        bool_or(action = 'warn') AS warned,
        max(latency_ms) AS latency_ms,
        list(category) FILTER (WHERE triggered AND category IS NOT NULL) AS categories
    FROM scoped_guardrails
    GROUP BY guardrail, stage, source, trace_id, span_id
)"""
_GENERATION = "list_contains($generation, c.operation)"
# A detector's checks are the model calls (per group), unless it writes one row per check.
_NUM_CHECKS = (
    "CASE WHEN k.source = 'detector' AND NOT k.per_row THEN coalesce(calls.n, 0) "
    "ELSE coalesce(g.num_rows, 0) END"
)


def _params() -> dict[str, object]:
    return {"generation": list(GENERATION_OPERATIONS), "row_checked": list(ROW_CHECKED_CATEGORIES)}


def _frame(
    conn: duckdb.DuckDBPyConnection, scope: Scope, sql: str, **extra: object
) -> pl.DataFrame:
    params = {k: v for k, v in {**_params(), **extra}.items() if re.search(rf"\${k}\b", sql)}
    table = run_scoped(conn, scope, sql, params)
    return cast(pl.DataFrame, pl.from_arrow(table))


def _with_rate(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.col("num_checks") > 0)
        .then(pl.col("num_triggered") / pl.col("num_checks"))
        .otherwise(None)
        .alias("trigger_rate")
    )


GUARDRAIL_RATE_BY_GUARDRAIL_SQL = f"""
WITH {_CHECKS_CTE}, calls AS (
    SELECT count(*) AS n FROM scoped_llm_calls AS c WHERE {_GENERATION}
), grouped AS (
    SELECT
        guardrail, stage, source,
        bool_or(per_row) AS per_row,
        count(*) AS num_rows,
        count(*) FILTER (WHERE triggered) AS num_triggered,
        count(*) FILTER (WHERE blocked) AS num_blocked,
        count(*) FILTER (WHERE masked) AS num_masked,
        count(*) FILTER (WHERE warned) AS num_warned,
        list_sort(list_distinct(flatten(list(categories)))) AS categories,
        quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
        quantile_cont(latency_ms, 0.95) AS latency_p95_ms,
        count(latency_ms) AS num_latency_samples
    FROM checks
    GROUP BY guardrail, stage, source
)
SELECT
    k.guardrail, k.stage, k.source, k.categories,
    {_NUM_CHECKS.replace("g.num_rows", "k.num_rows")} AS num_checks,
    k.num_triggered, k.num_blocked, k.num_masked, k.num_warned,
    k.latency_p50_ms, k.latency_p95_ms, k.num_latency_samples
FROM grouped AS k CROSS JOIN calls
ORDER BY k.num_triggered DESC, k.guardrail, k.stage
"""


def guardrail_rate_by_guardrail(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Checks, triggers and latency per guardrail and stage.

    Returns:
        Columns ``guardrail``, ``stage`` (input/output), ``source`` (span, event, detector),
        ``categories`` (of its triggered results), ``num_checks``, ``num_triggered``,
        ``num_blocked``, ``num_masked``, ``num_warned``, ``trigger_rate`` (triggered ÷ checks),
        ``latency_p50_ms``, ``latency_p95_ms`` and ``num_latency_samples`` (guardrail spans'
        durations; detectors and events have none). Most triggered first.
    """
    return _with_rate(_frame(conn, scope, GUARDRAIL_RATE_BY_GUARDRAIL_SQL))


GUARDRAIL_RATE_BY_TIME_SQL = f"""
WITH {_CHECKS_CTE}, buckets AS (
    SELECT unnest(range(
        time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
    )) AS bucket_start
), calls AS (
    SELECT time_bucket($bucket, c.start_time, 'UTC') AS bucket_start, count(*) AS n
    FROM scoped_llm_calls AS c WHERE {_GENERATION}
    GROUP BY ALL
), grouped AS (
    SELECT
        time_bucket($bucket, time, 'UTC') AS bucket_start, guardrail, stage, source,
        count(*) AS num_rows,
        count(*) FILTER (WHERE triggered) AS num_triggered
    FROM checks
    GROUP BY ALL
), keys AS (
    SELECT guardrail, stage, source, bool_or(per_row) AS per_row FROM checks GROUP BY ALL
)
SELECT
    b.bucket_start, k.guardrail, k.stage, k.source,
    {_NUM_CHECKS} AS num_checks,
    coalesce(g.num_triggered, 0) AS num_triggered
FROM buckets AS b
CROSS JOIN keys AS k
LEFT JOIN grouped AS g
    ON g.bucket_start = b.bucket_start
    AND g.guardrail IS NOT DISTINCT FROM k.guardrail
    AND g.stage IS NOT DISTINCT FROM k.stage
    AND g.source = k.source
LEFT JOIN calls ON calls.bucket_start = b.bucket_start
ORDER BY b.bucket_start, k.guardrail, k.stage
"""


def guardrail_rate_by_time(
    conn: duckdb.DuckDBPyConnection, scope: Scope, bucket: timedelta
) -> pl.DataFrame:
    """Checks and triggers of every guardrail (and stage) per time bucket.

    Returns:
        Columns ``bucket_start``, ``guardrail``, ``stage``, ``source``, ``num_checks``,
        ``num_triggered`` and ``trigger_rate`` (null where nothing was checked); every bucket
        of the window for every guardrail seen in it.
    """
    check_bucket(scope, bucket)
    return _with_rate(_frame(conn, scope, GUARDRAIL_RATE_BY_TIME_SQL, bucket=bucket))


_DIMENSION_KEYS: dict[str, tuple[str, str, str]] = {
    # (key of a check, key of a model call, joins for the call key)
    # A guardrail span has no model: it counts for the model that answered its request.
    "model": ("coalesce(e.model, t.model)", "c.model", ""),
    "route": ("r.route", "r.route", "LEFT JOIN scoped_roots AS r ON r.trace_id = c.trace_id"),
}

GUARDRAIL_RATE_BY_DIMENSION_SQL = f"""
WITH {_CHECKS_CTE}, trace_models AS (
    -- the model that answered: the request's last text-generating call
    SELECT trace_id, arg_max(model, start_time) AS model
    FROM scoped_request_calls AS c WHERE {_GENERATION}
    GROUP BY trace_id
), keyed AS (
    SELECT e.*, {{check_key}} AS key
    FROM checks AS e
    LEFT JOIN trace_models AS t ON t.trace_id = e.trace_id
    LEFT JOIN scoped_roots AS r ON r.trace_id = e.trace_id
), calls AS (
    SELECT {{call_key}} AS key, count(*) AS n
    FROM scoped_llm_calls AS c {{call_join}}
    WHERE {_GENERATION}
    GROUP BY ALL
), grouped AS (
    SELECT
        key, guardrail, stage, source,
        bool_or(per_row) AS per_row,
        count(*) AS num_rows,
        count(*) FILTER (WHERE triggered) AS num_triggered
    FROM keyed
    GROUP BY ALL
)
SELECT
    k.key, k.guardrail, k.stage, k.source,
    {_NUM_CHECKS.replace("g.num_rows", "k.num_rows")} AS num_checks,
    k.num_triggered
FROM grouped AS k
LEFT JOIN calls ON calls.key IS NOT DISTINCT FROM k.key
ORDER BY k.num_triggered DESC, k.key NULLS LAST, k.guardrail, k.stage
"""


def guardrail_rate_by_dimension(
    conn: duckdb.DuckDBPyConnection, scope: Scope, by: GuardrailDimension
) -> pl.DataFrame:
    """Checks and triggers of every guardrail per model or per route.

    A detector's result belongs to the model of the call it checked; a guardrail span's to the
    model that answered its request (its last text-generating call; null when the request made
    none, e.g. it was blocked first). Route: the request's root span name (:mod:`analytics.scope`).

    Returns:
        Columns ``<by>``, ``guardrail``, ``stage``, ``source``, ``num_checks``,
        ``num_triggered`` and ``trigger_rate``.
    """
    if by not in _DIMENSION_KEYS:
        raise ValueError(f"by must be one of {GUARDRAIL_DIMENSIONS}, not {by!r}")
    check_key, call_key, call_join = _DIMENSION_KEYS[by]
    sql = GUARDRAIL_RATE_BY_DIMENSION_SQL.format(
        check_key=check_key, call_key=call_key, call_join=call_join
    )
    return _with_rate(_frame(conn, scope, sql)).rename({"key": by})


@dataclass(frozen=True)
class GuardrailLatency:
    """What guardrail spans add to requests: per request, the sum of its guardrail spans'
    durations (guardrails that run one after another, as most do), and that sum's share of the
    request's duration. Percentiles interpolate linearly; None without guarded requests."""

    num_requests: int
    added_p50_ms: float | None
    added_p95_ms: float | None
    share_p50: float | None
    share_p95: float | None


GUARDRAIL_LATENCY_SQL = """
WITH per_request AS (
    SELECT trace_id, sum(latency_ms) AS added_ms
    FROM scoped_guardrails
    WHERE source = 'span' AND latency_ms IS NOT NULL
    GROUP BY trace_id
)
SELECT
    count(*) AS num_requests,
    quantile_cont(p.added_ms, 0.5) AS added_p50_ms,
    quantile_cont(p.added_ms, 0.95) AS added_p95_ms,
    quantile_cont(p.added_ms / t.duration_ms, 0.5) FILTER (WHERE t.duration_ms > 0) AS share_p50,
    quantile_cont(p.added_ms / t.duration_ms, 0.95) FILTER (WHERE t.duration_ms > 0) AS share_p95
FROM per_request AS p
JOIN scoped_traces AS t USING (trace_id)
"""


def guardrail_latency(conn: duckdb.DuckDBPyConnection, scope: Scope) -> GuardrailLatency:
    """Latency guardrail spans add to the requests in scope (see :class:`GuardrailLatency`)."""
    row = _frame(conn, scope, GUARDRAIL_LATENCY_SQL).row(0, named=True)
    return GuardrailLatency(**row)


BLOCKS_FOLLOWED_BY_PASS_SQL = """
WITH blocks AS (
    SELECT g.guardrail, g.trace_id, g.time, r.session_id, r.user_id
    FROM scoped_guardrails AS g JOIN scoped_roots AS r ON r.trace_id = g.trace_id
    WHERE g.stage = 'input' AND g.action = 'block' AND g.source <> 'detector'
), passes AS (
    SELECT g.guardrail, g.trace_id, g.time, r.session_id, r.user_id
    FROM scoped_trace_guardrails AS g JOIN scoped_roots AS r ON r.trace_id = g.trace_id
    WHERE g.stage = 'input' AND g.action = 'pass' AND g.source <> 'detector'
), followed AS (
    SELECT
        b.guardrail, b.trace_id,
        bool_or(p.trace_id IS NOT NULL) AS passed_after
    FROM blocks AS b
    LEFT JOIN passes AS p
        ON p.guardrail IS NOT DISTINCT FROM b.guardrail
        AND p.trace_id <> b.trace_id
        AND p.time > b.time AND p.time <= b.time + $within
        AND (p.session_id = b.session_id OR (b.session_id IS NULL AND p.user_id = b.user_id))
    GROUP BY b.guardrail, b.trace_id
)
SELECT
    guardrail,
    count(*) AS num_blocked,
    count(*) FILTER (WHERE passed_after) AS num_passed_after,
    list(trace_id ORDER BY trace_id) FILTER (WHERE passed_after) AS trace_ids
FROM followed
GROUP BY guardrail
ORDER BY num_blocked DESC, guardrail
"""


def blocks_followed_by_pass(
    conn: duckdb.DuckDBPyConnection, scope: Scope, within: timedelta = timedelta(minutes=10)
) -> pl.DataFrame:
    """Input blocks that the same session (or, without one, user) got past soon after.

    A block followed within ``within`` by another request that passed the same guardrail is a
    false-positive signal: the user rephrased (or simply re-sent) and got through.

    Returns:
        Columns ``guardrail``, ``num_blocked``, ``num_passed_after``, ``passed_after_rate``
        and ``trace_ids`` (the blocked requests that were followed by a pass).
    """
    frame = _frame(conn, scope, BLOCKS_FOLLOWED_BY_PASS_SQL, within=within)
    return frame.with_columns(
        (pl.col("num_passed_after") / pl.col("num_blocked")).alias("passed_after_rate")
    )


GUARDRAIL_RATE_BY_CATEGORY_SQL = f"""
WITH {_CHECKS_CTE}, calls AS (
    SELECT count(*) AS n FROM scoped_llm_calls AS c WHERE {_GENERATION}
), per_guardrail AS (
    SELECT guardrail, stage, source, bool_or(per_row) AS per_row, count(*) AS num_rows
    FROM checks GROUP BY ALL
), per_category AS (
    SELECT guardrail, stage, source, category, count(*) AS num_triggered
    FROM (
        SELECT guardrail, stage, source,
            unnest(CASE WHEN len(categories) > 0 THEN list_distinct(categories)
                   ELSE [NULL::VARCHAR] END) AS category
        FROM checks WHERE triggered
    )
    GROUP BY ALL
)
SELECT
    k.guardrail, k.stage, k.source, c.category,
    {_NUM_CHECKS.replace("g.num_rows", "k.num_rows")} AS num_checks,
    coalesce(c.num_triggered, 0) AS num_triggered
FROM per_guardrail AS k
JOIN per_category AS c
    ON c.guardrail IS NOT DISTINCT FROM k.guardrail
    AND c.stage IS NOT DISTINCT FROM k.stage AND c.source = k.source
CROSS JOIN calls
"""


def guardrail_rate_by_category(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Per guardrail, stage and category: checks of the guardrail and triggers in that category.

    Returns:
        Columns ``guardrail``, ``stage``, ``source``, ``category``, ``num_checks``,
        ``num_triggered`` and ``trigger_rate``; only categories that triggered.
    """
    return _with_rate(_frame(conn, scope, GUARDRAIL_RATE_BY_CATEGORY_SQL))


GENERATION_CALLS_SQL = f"""
SELECT count(*) AS n FROM scoped_llm_calls AS c WHERE {_GENERATION}
"""


def generation_calls(conn: duckdb.DuckDBPyConnection, scope: Scope) -> int:
    """Text-generating model calls in scope: what each built-in detector checks."""
    return int(_frame(conn, scope, GENERATION_CALLS_SQL)["n"][0])


def two_proportion_p_value(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that rate k1/n1 is above rate k2/n2 (pooled two-proportion z-test).

    >>> f"{two_proportion_p_value(30, 100, 10, 100):.3g}"
    '0.000203'
    >>> two_proportion_p_value(10, 100, 10, 100)
    0.5
    """
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 0.5
    z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 0.5 * math.erfc(z / math.sqrt(2))


def guardrail_spikes(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    baseline: timedelta = timedelta(days=7),
    *,
    min_triggered: int = 5,
    min_ratio: float = 2.0,
    alpha: float = 0.01,
) -> pl.DataFrame:
    """Each guardrail category's trigger rate in the window against the ``baseline`` before it.

    A **spike** is a rate at least ``min_ratio`` times the baseline's (any rate over a zero
    baseline), from at least ``min_triggered`` triggers, that a one-sided two-proportion z-test
    finds higher with p < ``alpha``.

    Returns:
        Columns ``guardrail``, ``stage``, ``source``, ``category``, ``num_triggered``,
        ``num_checks``, ``trigger_rate``, ``baseline_triggered``, ``baseline_checks``,
        ``baseline_rate``, ``ratio`` (null over a zero baseline), ``p_value`` and ``is_spike``;
        spikes first, then by p-value.
    """
    current = guardrail_rate_by_category(conn, scope)
    before = guardrail_rate_by_category(
        conn, replace(scope, start=scope.start - baseline, end=scope.start)
    )
    keys = ["guardrail", "stage", "source", "category"]
    joined = current.join(
        before.select(
            *keys,
            pl.col("num_triggered").alias("baseline_triggered"),
            pl.col("num_checks").alias("baseline_checks"),
            pl.col("trigger_rate").alias("baseline_rate"),
        ),
        on=keys,
        how="left",
        nulls_equal=True,
    )
    # A guardrail that ran before the window but never triggered in this category has the
    # guardrail's checks as its baseline denominator (a detector's: the calls before).
    checks_before = guardrail_rate_by_guardrail(
        conn, replace(scope, start=scope.start - baseline, end=scope.start)
    ).select("guardrail", "stage", "source", pl.col("num_checks").alias("checks_before"))
    calls_before = generation_calls(
        conn, replace(scope, start=scope.start - baseline, end=scope.start)
    )
    joined = joined.join(
        checks_before, on=["guardrail", "stage", "source"], how="left", nulls_equal=True
    ).with_columns(
        pl.col("baseline_triggered").fill_null(0),
        pl.col("baseline_checks")
        .fill_null(pl.col("checks_before"))
        .fill_null(pl.when(pl.col("source") == "detector").then(calls_before))
        .fill_null(0),
    )
    p_values = [
        two_proportion_p_value(k1, n1, k2, n2)
        for k1, n1, k2, n2 in joined.select(
            "num_triggered", "num_checks", "baseline_triggered", "baseline_checks"
        ).iter_rows()
    ]
    rate = pl.col("trigger_rate")
    base = pl.when(pl.col("baseline_checks") > 0).then(
        pl.col("baseline_triggered") / pl.col("baseline_checks")
    )
    result = joined.with_columns(base.alias("baseline_rate")).with_columns(
        pl.when(pl.col("baseline_rate") > 0).then(rate / pl.col("baseline_rate")).alias("ratio"),
        pl.Series("p_value", p_values, dtype=pl.Float64),
    )
    spike = (
        (pl.col("num_triggered") >= min_triggered)
        & (pl.col("p_value") < alpha)
        & (
            pl.col("ratio").is_null() & (pl.col("baseline_checks") > 0)
            | (pl.col("ratio") >= min_ratio)
        )
    )
    return (
        result.with_columns(spike.fill_null(False).alias("is_spike"))
        .select(
            *keys,
            "num_triggered",
            "num_checks",
            "trigger_rate",
            "baseline_triggered",
            "baseline_checks",
            "baseline_rate",
            "ratio",
            "p_value",
            "is_spike",
        )
        .sort(["is_spike", "p_value"], descending=[True, False])
    )


GUARDRAIL_RESULTS_SQL = """
SELECT
    g.time, g.trace_id, g.span_id, g.guardrail, g.stage, g.category, g.action, g.score,
    g.reason, g.model, r.route, g.latency_ms, g.num_matches
FROM scoped_guardrails AS g
LEFT JOIN scoped_roots AS r ON r.trace_id = g.trace_id
WHERE (NOT $triggered_only OR g.triggered)
    AND ($guardrail IS NULL OR g.guardrail = $guardrail)
    AND ($stage IS NULL OR g.stage = $stage)
    AND ($category IS NULL OR g.category = $category)
ORDER BY g.time DESC, g.trace_id, g.result_id
LIMIT $limit
"""


def guardrail_results(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    *,
    guardrail: str | None = None,
    stage: str | None = None,
    category: str | None = None,
    triggered_only: bool = True,
    limit: int = 100,
) -> pl.DataFrame:
    """The results behind a number: the latest (triggered) results, optionally of one
    guardrail, stage and category.

    Returns:
        Columns ``time``, ``trace_id``, ``span_id``, ``guardrail``, ``stage``, ``category``,
        ``action``, ``score``, ``reason``, ``model``, ``route``, ``latency_ms``,
        ``num_matches``; newest first.
    """
    return _frame(
        conn,
        scope,
        GUARDRAIL_RESULTS_SQL,
        guardrail=guardrail,
        stage=stage,
        category=category,
        triggered_only=triggered_only,
        limit=limit,
    )
