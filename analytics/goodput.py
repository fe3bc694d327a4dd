"""Goodput against service-level objectives (SLOs), and how fast the error budget burns.

The SLOs are data (``slos.toml``, or a user's file: :func:`analytics.slos.load_slo_config`). A **request** is a
trace whose root started in the window (``scoped_traces``). Each SLO applies to the requests on
its routes (all when it names none); a TTFT or TPOT SLO judges the request's streamed model calls
to its models (all when it names none) and is met when every one of them is within ``max_ms``
(a request with no such call is not judged by it); a latency SLO judges the request's end-to-end
duration, an error SLO its root status, each only for requests that called one of its models
when it names any. A request is **good** when it misses no SLO that applies to it.

* good fraction = good requests ÷ requests (:func:`good_fraction`);
* goodput = good requests per minute, beside throughput = requests per minute;
* burn rate = (bad requests ÷ requests) ÷ (1 − target) over the hour and the six hours that end
  at the window's end (:func:`burn_rate`): 1 spends the error budget exactly over the SLO
  period, 14.4 over an hour or 6 over six hours is the classic page-now signal (Google SRE
  workbook, multiwindow burn-rate alerts).

Model calls are those that started in the window; a call that starts after the window's end is
not judged, even when its request started inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal, cast, get_args

import duckdb
import polars as pl

from analytics.latency import check_bucket
from analytics.scope import Scope, quote_identifier, run_scoped
from analytics.slos import CALL_METRICS, SLOConfig, glob_to_regex
from analytics.throughput import per_minute

__all__ = [
    "BURN_WINDOWS",
    "GOODPUT_DIMENSIONS",
    "GoodputDimension",
    "GoodputSummary",
    "bad_requests",
    "burn_rate",
    "burn_rate_by_time",
    "good_fraction",
    "goodput_by_dimension",
    "goodput_by_time",
    "goodput_summary",
    "slo_misses",
]

#: The short and long burn-rate windows, ending at the window's end.
BURN_WINDOWS: tuple[timedelta, timedelta] = (timedelta(hours=1), timedelta(hours=6))


def good_fraction(num_good: int, num_requests: int) -> float | None:
    """Good requests ÷ requests (``None`` when there are no requests).

    >>> good_fraction(97, 100)
    0.97
    """
    return num_good / num_requests if num_requests else None


def burn_rate(num_bad: int, num_requests: int, target: float) -> float | None:
    """How fast bad requests spend the error budget: (bad ÷ requests) ÷ (1 − target).

    Args:
        num_bad: requests in the window that missed an SLO.
        num_requests: requests in the window.
        target: the objective's good fraction, e.g. 0.99.

    Returns:
        The burn rate (1 spends the budget exactly; 0 when nothing is bad), or ``None`` when the
        window has no requests.

    >>> round(burn_rate(30, 1000, 0.99), 9)  # 3% bad against a 1% budget: 3 times too fast
    3.0
    >>> burn_rate(0, 0, 0.99) is None
    True
    """
    if not num_requests:
        return None
    return (num_bad / num_requests) / (1.0 - target)


def _match(column: str, param: str, patterns: tuple[str, ...]) -> str:
    return f"regexp_full_match(coalesce({column}, ''), ${param})" if patterns else "TRUE"


def _evaluation_sql(config: SLOConfig) -> tuple[str, dict[str, Any]]:
    """The CTEs ``call_checks``, ``evaluated`` and ``requests`` for a config, and their params."""
    params: dict[str, Any] = {}
    call_columns: list[str] = []
    request_columns: list[str] = []
    for i, slo in enumerate(config.slos):
        p = f"slo{i}_"
        params[f"{p}name"] = slo.name
        if slo.routes:
            params[f"{p}routes"] = glob_to_regex(slo.routes)
        if slo.models:
            params[f"{p}models"] = glob_to_regex(slo.models)
        if slo.max_ms is not None:
            params[f"{p}max"] = slo.max_ms
        on_route = _match("t.name", f"{p}routes", slo.routes)
        on_model = _match("model", f"{p}models", slo.models)
        if slo.metric in CALL_METRICS:
            column = slo.metric
            call_columns += [
                f"coalesce(bool_or({column} > ${p}max) FILTER (WHERE {on_model}), false)"
                f" AS call_miss_{i}",
                f"count({column}) FILTER (WHERE {on_model}) > 0 AS call_judged_{i}",
            ]
            applies = f"{on_route} AND coalesce(c.call_judged_{i}, false)"
            missed = f"{on_route} AND coalesce(c.call_miss_{i}, false)"
        else:
            uses = "TRUE"
            if slo.models:
                call_columns.append(f"bool_or({on_model}) AS call_uses_{i}")
                uses = f"coalesce(c.call_uses_{i}, false)"
            if slo.metric == "latency_ms":
                applies = f"{on_route} AND {uses} AND t.duration_ms IS NOT NULL"
                missed = f"{applies} AND t.duration_ms > ${p}max"
            else:
                applies = f"{on_route} AND {uses}"
                missed = f"{applies} AND coalesce(t.status_code = 'ERROR', false)"
        request_columns += [f"({applies}) AS applies_{i}", f"({missed}) AS miss_{i}"]
    misses = [f"miss_{i}" for i in range(len(config.slos))]
    good = f"NOT ({' OR '.join(misses)})" if misses else "TRUE"
    names = ", ".join(f"CASE WHEN miss_{i} THEN $slo{i}_name END" for i in range(len(misses)))
    missed_list = f"list_filter([{names}], lambda x: x IS NOT NULL)" if misses else "[]::VARCHAR[]"
    sql = GOODPUT_REQUESTS_SQL.format(
        call_columns="".join(f",\n        {c}" for c in call_columns),
        request_columns="".join(f",\n        {c}" for c in request_columns),
        good=good,
        missed=missed_list,
    )
    return sql, params


#: Every request of the scope, judged: the CTEs the goodput metrics select from.
GOODPUT_REQUESTS_SQL = """
WITH call_checks AS (
    SELECT
        trace_id,
        max(ttft_ms) AS worst_ttft_ms,
        max(tpot_ms) AS worst_tpot_ms{call_columns}
    FROM scoped_llm_calls
    GROUP BY trace_id
), evaluated AS (
    SELECT
        t.trace_id,
        t.start_time,
        t.name AS route,
        t.service_name,
        t.duration_ms,
        t.status_code,
        t.models,
        c.worst_ttft_ms,
        c.worst_tpot_ms{request_columns}
    FROM scoped_traces AS t
    LEFT JOIN call_checks AS c USING (trace_id)
), requests AS (
    SELECT *, {good} AS good, {missed} AS missed_slos FROM evaluated
)
"""


@dataclass(frozen=True)
class GoodputSummary:
    """Good fraction over the window, and burn rates over the hour and six hours ending there."""

    target: float
    num_requests: int
    num_good: int
    good_fraction: float | None
    window_s: float
    requests_per_min: float | None
    goodput_per_min: float | None
    num_requests_1h: int
    num_bad_1h: int
    burn_rate_1h: float | None
    num_requests_6h: int
    num_bad_6h: int
    burn_rate_6h: float | None


GOODPUT_SUMMARY_SELECT_SQL = """
SELECT
    count(*) FILTER (WHERE start_time >= $window_start) AS num_requests,
    count(*) FILTER (WHERE start_time >= $window_start AND good) AS num_good,
    count(*) FILTER (WHERE start_time >= $short_from) AS num_requests_1h,
    count(*) FILTER (WHERE start_time >= $short_from AND NOT good) AS num_bad_1h,
    count(*) FILTER (WHERE start_time >= $long_from) AS num_requests_6h,
    count(*) FILTER (WHERE start_time >= $long_from AND NOT good) AS num_bad_6h
FROM requests
"""


def goodput_summary(
    conn: duckdb.DuckDBPyConnection, scope: Scope, config: SLOConfig
) -> GoodputSummary:
    """Requests, good fraction and goodput over the window; burn rates over the last 1 h and 6 h.

    The burn-rate windows end at ``scope.end`` and may reach back before ``scope.start``.
    """
    short, long = BURN_WINDOWS
    wider = replace(scope, start=min(scope.start, scope.end - long))
    ctes, params = _evaluation_sql(config)
    params |= {
        "window_start": scope.start,
        "short_from": scope.end - short,
        "long_from": scope.end - long,
    }
    row = run_scoped(conn, wider, ctes + GOODPUT_SUMMARY_SELECT_SQL, params).to_pylist()[0]
    window_s = (scope.end - scope.start).total_seconds()
    num_requests, num_good = int(row["num_requests"]), int(row["num_good"])
    return GoodputSummary(
        target=config.target,
        num_requests=num_requests,
        num_good=num_good,
        good_fraction=good_fraction(num_good, num_requests),
        window_s=window_s,
        requests_per_min=per_minute(num_requests, window_s),
        goodput_per_min=per_minute(num_good, window_s),
        num_requests_1h=int(row["num_requests_1h"]),
        num_bad_1h=int(row["num_bad_1h"]),
        burn_rate_1h=burn_rate(row["num_bad_1h"], row["num_requests_1h"], config.target),
        num_requests_6h=int(row["num_requests_6h"]),
        num_bad_6h=int(row["num_bad_6h"]),
        burn_rate_6h=burn_rate(row["num_bad_6h"], row["num_requests_6h"], config.target),
    )


GOODPUT_BY_TIME_SELECT_SQL = """
, buckets AS (
    SELECT
        bucket_start,
        date_diff(
            'microsecond',
            greatest(bucket_start, $start::TIMESTAMPTZ),
            least(bucket_start + $bucket, $end::TIMESTAMPTZ)
        ) AS inside_us
    FROM (
        SELECT unnest(range(
            time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
        )) AS bucket_start
    )
), counts AS (
    SELECT
        time_bucket($bucket, start_time, 'UTC') AS bucket_start,
        count(*) AS requests,
        count(*) FILTER (WHERE good) AS good_requests
    FROM requests
    GROUP BY 1
)
SELECT
    buckets.bucket_start,
    coalesce(counts.requests, 0) AS requests,
    coalesce(counts.good_requests, 0) AS good_requests,
    coalesce(counts.requests, 0) * 60e6 / buckets.inside_us AS requests_per_min,
    coalesce(counts.good_requests, 0) * 60e6 / buckets.inside_us AS goodput_per_min,
    counts.good_requests / counts.requests AS good_fraction
FROM buckets
LEFT JOIN counts USING (bucket_start)
ORDER BY buckets.bucket_start
"""


def goodput_by_time(
    conn: duckdb.DuckDBPyConnection, scope: Scope, config: SLOConfig, bucket: timedelta
) -> pl.DataFrame:
    """Throughput and goodput per time bucket, every bucket present.

    Returns:
        Columns ``bucket_start``, ``requests``, ``good_requests``, ``requests_per_min``
        (throughput), ``goodput_per_min`` (both divided by the bucket's length inside the
        window) and ``good_fraction`` (null for a bucket without requests).
    """
    check_bucket(scope, bucket)
    ctes, params = _evaluation_sql(config)
    sql = ctes.rstrip() + GOODPUT_BY_TIME_SELECT_SQL
    table = run_scoped(conn, scope, sql, params | {"bucket": bucket})
    return cast(pl.DataFrame, pl.from_arrow(table))


BURN_RATE_BY_TIME_SELECT_SQL = """
, ends AS (
    SELECT least(bucket_start + $bucket, $end::TIMESTAMPTZ) AS window_end
    FROM (
        SELECT unnest(range(
            time_bucket($bucket, $window_start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
        )) AS bucket_start
    )
), windows AS (
    SELECT
        ends.window_end,
        count(requests.trace_id) FILTER (WHERE requests.start_time >= ends.window_end - $short)
            AS requests_1h,
        count(requests.trace_id) FILTER (
            WHERE requests.start_time >= ends.window_end - $short AND NOT requests.good
        ) AS bad_1h,
        count(requests.trace_id) AS requests_6h,
        count(requests.trace_id) FILTER (WHERE NOT requests.good) AS bad_6h
    FROM ends
    LEFT JOIN requests
        ON requests.start_time >= ends.window_end - $long
        AND requests.start_time < ends.window_end
    GROUP BY ends.window_end
)
SELECT
    window_end,
    requests_1h,
    bad_1h,
    CASE WHEN requests_1h > 0 THEN bad_1h / requests_1h / $budget END AS burn_rate_1h,
    requests_6h,
    bad_6h,
    CASE WHEN requests_6h > 0 THEN bad_6h / requests_6h / $budget END AS burn_rate_6h
FROM windows
ORDER BY window_end
"""


def burn_rate_by_time(
    conn: duckdb.DuckDBPyConnection, scope: Scope, config: SLOConfig, bucket: timedelta
) -> pl.DataFrame:
    """The 1 h and 6 h burn rates as of the end of each time bucket.

    Returns:
        Columns ``window_end`` (each bucket's end, the last one cut at the window's end),
        ``requests_1h``, ``bad_1h``, ``burn_rate_1h``, ``requests_6h``, ``bad_6h`` and
        ``burn_rate_6h`` over the hour / six hours before it (null without requests); the
        windows may reach back before ``scope.start``.
    """
    check_bucket(scope, bucket)
    short, long = BURN_WINDOWS
    wider = replace(scope, start=scope.start - long)
    ctes, params = _evaluation_sql(config)
    params |= {
        "bucket": bucket,
        "window_start": scope.start,
        "short": short,
        "long": long,
        "budget": config.error_budget,
    }
    table = run_scoped(conn, wider, ctes.rstrip() + BURN_RATE_BY_TIME_SELECT_SQL, params)
    return cast(pl.DataFrame, pl.from_arrow(table))


SLO_MISSES_SELECT_SQL = """
SELECT {counts} FROM requests
"""


def slo_misses(conn: duckdb.DuckDBPyConnection, scope: Scope, config: SLOConfig) -> pl.DataFrame:
    """Per SLO: the requests it applies to, those that missed it, and those that missed only it.

    Returns:
        Columns ``slo`` (name), ``objective`` (e.g. ``TTFT ≤ 2,000 ms``), ``metric``,
        ``max_ms``, ``num_applicable``, ``num_missed``, ``miss_rate`` (missed ÷ applicable,
        null when it applies to none) and ``num_missed_only`` (requests bad because of this SLO
        alone); in config order.
    """
    schema = {
        "slo": pl.String,
        "objective": pl.String,
        "metric": pl.String,
        "max_ms": pl.Float64,
        "num_applicable": pl.Int64,
        "num_missed": pl.Int64,
        "miss_rate": pl.Float64,
        "num_missed_only": pl.Int64,
    }
    if not config.slos:
        return pl.DataFrame(schema=schema)
    ctes, params = _evaluation_sql(config)
    counts = ",\n    ".join(
        f"count(*) FILTER (WHERE applies_{i}) AS applicable_{i}, "
        f"count(*) FILTER (WHERE miss_{i}) AS missed_{i}, "
        f"count(*) FILTER (WHERE miss_{i} AND len(missed_slos) = 1) AS only_{i}"
        for i in range(len(config.slos))
    )
    sql = ctes + SLO_MISSES_SELECT_SQL.format(counts=counts)
    row = run_scoped(conn, scope, sql, params).to_pylist()[0]
    rows = []
    for i, slo in enumerate(config.slos):
        applicable, missed = int(row[f"applicable_{i}"]), int(row[f"missed_{i}"])
        rows.append(
            (
                slo.name,
                slo.label,
                slo.metric,
                slo.max_ms,
                applicable,
                missed,
                missed / applicable if applicable else None,
                int(row[f"only_{i}"]),
            )
        )
    return pl.DataFrame(rows, schema=schema, orient="row")


BAD_REQUESTS_SELECT_SQL = """
SELECT
    trace_id,
    start_time,
    route,
    service_name,
    duration_ms,
    worst_ttft_ms,
    worst_tpot_ms,
    status_code,
    missed_slos
FROM requests
WHERE NOT good
ORDER BY start_time DESC, trace_id
LIMIT $limit
"""


def bad_requests(
    conn: duckdb.DuckDBPyConnection, scope: Scope, config: SLOConfig, limit: int = 100
) -> pl.DataFrame:
    """The latest requests that missed an SLO, and which SLOs each missed.

    Returns:
        Columns ``trace_id``, ``start_time``, ``route``, ``service_name``, ``duration_ms``,
        ``worst_ttft_ms`` and ``worst_tpot_ms`` (the request's slowest streamed call),
        ``status_code`` and ``missed_slos`` (SLO names, config order); newest first.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    ctes, params = _evaluation_sql(config)
    table = run_scoped(conn, scope, ctes + BAD_REQUESTS_SELECT_SQL, params | {"limit": limit})
    return cast(pl.DataFrame, pl.from_arrow(table))


#: What goodput can be grouped by: a request's route, root service or UTC day, or each model it
#: called (a request that called two models counts under both, one that called none under null).
GoodputDimension = Literal["route", "service", "day", "model"]
GOODPUT_DIMENSIONS: tuple[str, ...] = get_args(GoodputDimension)
_GOODPUT_KEYS = {
    "route": "route",
    "service": "service_name",
    "day": "CAST(start_time AS DATE)",
    "model": "unnest(CASE WHEN len(models) = 0 THEN [NULL::VARCHAR] ELSE models END)",
}

GOODPUT_BY_DIMENSION_SELECT_SQL = """
, keyed AS (
    SELECT {key} AS key, good, missed_slos FROM requests
)
SELECT
    key AS {by},
    count(*) AS num_requests,
    count(*) FILTER (WHERE good) AS num_good,
    count(*) FILTER (WHERE good) / count(*) AS good_fraction,
    (count(*) FILTER (WHERE NOT good) / count(*)) / $budget AS burn_rate{missed}
FROM keyed
GROUP BY key
ORDER BY num_requests DESC, key NULLS LAST
"""


def goodput_by_dimension(
    conn: duckdb.DuckDBPyConnection, scope: Scope, config: SLOConfig, by: GoodputDimension
) -> pl.DataFrame:
    """Good fraction per route, service, day or model, and how often each SLO was missed there.

    Returns:
        Columns ``<by>``, ``num_requests``, ``num_good``, ``good_fraction``, ``burn_rate`` (bad
        share ÷ error budget over the whole window) and ``missed_<slo name>`` (requests that
        missed that SLO), one per SLO in config order; most requests first (days in order).
    """
    if by not in _GOODPUT_KEYS:
        raise ValueError(f"unknown dimension {by!r}; use one of {', '.join(GOODPUT_DIMENSIONS)}")
    ctes, params = _evaluation_sql(config)
    missed = "".join(
        f",\n    count(*) FILTER (WHERE list_contains(missed_slos, $slo{i}_name))"
        f" AS {quote_identifier('missed_' + slo.name)}"
        for i, slo in enumerate(config.slos)
    )
    sql = ctes.rstrip() + GOODPUT_BY_DIMENSION_SELECT_SQL.format(
        key=_GOODPUT_KEYS[by], by=quote_identifier(by), missed=missed
    )
    table = run_scoped(conn, scope, sql, params | {"budget": config.error_budget})
    frame = cast(pl.DataFrame, pl.from_arrow(table))
    return frame.sort("day") if by == "day" else frame
