"""Business metrics from traces, the product's own daily metrics, and how quality moves with them.

**From traces** (a user is a trace's ``user.id``; a day is a UTC day of the request's start):

* DAU (distinct users that day), WAU (distinct users in the 7 days ending that day), new users
  (first seen that day) and returning users (the rest). *First seen* looks back
  ``lookback`` (90 days by default) before the range: a user last seen earlier counts as new.
* Retention cohorts: the users first seen on a day, and the share of them active again exactly
  N days later (day-1, day-7); a cohort whose day N is not over before the range ends has no
  rate yet.
* Sessions: per session (``session.id``), its duration from the first request's start to the
  last one's end, and its number of requests (turns); per day of the session's start.

**Imported** daily metrics (revenue, sign-ups…) come from ``flywheel import-metrics`` (table
``business_metrics``; a re-imported value replaces the earlier one).

**Correlation.** :func:`quality_business_correlation` pairs each daily quality metric (p95
request latency, p95 TTFT, error rate — a failed root span, as on the Overview —, guardrail
intervention rate, thumbs-down rate, regeneration rate) on day d with each business metric on day d + lag, and reports Spearman's
rank correlation over the days where both exist, its p-value (scipy) and a 95% interval (Fisher
z with Bonett and Wright's standard error, sqrt((1 + ρ²/2) / (n − 3))). A correlation over a
few weeks of days says two series moved together, not that one moved the other; with many
pairs, some intervals exclude zero by chance.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import cast

import duckdb
import polars as pl

from analytics.feedback import feedback_by_time
from analytics.implicit import implicit_turns
from analytics.overview import requests_by_time
from analytics.scope import Scope, run_scoped
from analytics.traces import GUARDRAIL_TRIGGERED_SQL
from store.catalog import query

__all__ = [
    "BUSINESS_COLUMNS",
    "QUALITY_COLUMNS",
    "business_metrics",
    "daily_business",
    "daily_quality",
    "quality_business_correlation",
    "retention_cohorts",
    "session_stats",
    "spearman_interval",
    "user_activity",
]

#: daily quality column -> label
QUALITY_COLUMNS: dict[str, str] = {
    "latency_p95_ms": "p95 request latency",
    "ttft_p95_ms": "p95 TTFT",
    "error_rate": "error rate",
    "guardrail_rate": "guardrail intervention rate",
    "thumbs_down_rate": "thumbs-down rate",
    "regeneration_rate": "regeneration rate",
}
#: daily business column (from traces) -> label; imported metrics are added by name
BUSINESS_COLUMNS: dict[str, str] = {
    "dau": "DAU",
    "wau": "WAU",
    "new_users": "new users",
    "d1_retention": "day-1 retention of the day's new users",
    "d7_retention": "day-7 retention of the day's new users",
    "mean_session_s": "mean session duration (s)",
    "mean_session_turns": "mean turns per session",
}
_DAY = timedelta(days=1)

USER_DAYS_SQL = """
SELECT DISTINCT user_id, CAST(date_trunc('day', start_time) AS DATE) AS day
FROM scoped_traces
WHERE user_id IS NOT NULL
"""


def _days(scope: Scope) -> list[date]:
    first = scope.start.date()
    last = (scope.end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _user_days(conn: duckdb.DuckDBPyConnection, scope: Scope, lookback: timedelta) -> pl.DataFrame:
    wider = replace(scope, start=scope.start - lookback)
    frame = cast(pl.DataFrame, pl.from_arrow(run_scoped(conn, wider, USER_DAYS_SQL)))
    return frame.with_columns(pl.col("day").min().over("user_id").alias("first_day"))


def user_activity(
    conn: duckdb.DuckDBPyConnection, scope: Scope, lookback: timedelta = timedelta(days=90)
) -> pl.DataFrame:
    """DAU, WAU, new and returning users per UTC day of the range.

    Returns:
        Columns ``day`` (date), ``dau``, ``wau``, ``new_users``, ``returning_users``.
    """
    user_days = _user_days(conn, scope, lookback)
    rows = []
    for day in _days(scope):
        today = user_days.filter(pl.col("day") == day)
        week = user_days.filter(pl.col("day").is_between(day - timedelta(days=6), day))
        new = today.filter(pl.col("first_day") == day).height
        rows.append(
            {"day": day, "dau": today.height, "wau": week["user_id"].n_unique(),
             "new_users": new, "returning_users": today.height - new}
        )  # fmt: skip
    return pl.DataFrame(
        rows,
        schema={"day": pl.Date, "dau": pl.Int64, "wau": pl.Int64, "new_users": pl.Int64,
                "returning_users": pl.Int64},
    )  # fmt: skip


def retention_cohorts(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    after_days: tuple[int, ...] = (1, 7),
    lookback: timedelta = timedelta(days=90),
) -> pl.DataFrame:
    """The users first seen on each day of the range and how many came back N days later.

    Returns:
        Columns ``cohort`` (date), ``users``, and per N in ``after_days``: ``d<N>_retained``
        and ``d<N>_retention`` (null until day N of the cohort is over within the range).
    """
    user_days = _user_days(conn, scope, lookback)
    active = {(u, d) for u, d in user_days.select("user_id", "day").iter_rows()}
    firsts = user_days.select("user_id", "first_day").unique()
    rows = []
    for day in _days(scope):
        cohort = firsts.filter(pl.col("first_day") == day)["user_id"].to_list()
        row: dict[str, object] = {"cohort": day, "users": len(cohort)}
        for n in after_days:
            target = day + timedelta(days=n)
            retained = sum((u, target) in active for u in cohort)
            over = datetime.combine(target, time(), tzinfo=UTC) + _DAY <= scope.end
            row[f"d{n}_retained"] = retained if over else None
            row[f"d{n}_retention"] = retained / len(cohort) if over and cohort else None
        rows.append(row)
    schema: dict[str, pl.DataType] = {"cohort": pl.Date(), "users": pl.Int64()}
    for n in after_days:
        schema |= {f"d{n}_retained": pl.Int64(), f"d{n}_retention": pl.Float64()}
    return pl.DataFrame(rows, schema=schema)


SESSIONS_SQL = """
SELECT
    session_id,
    min(start_time) AS start_time,
    max(end_time) AS end_time,
    count(*) AS turns
FROM scoped_traces
WHERE session_id IS NOT NULL
GROUP BY session_id
"""


def session_stats(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Sessions per UTC day of their start, with their duration and turns.

    Returns:
        Columns ``day``, ``sessions``, ``mean_session_s``, ``median_session_s``,
        ``mean_session_turns`` (every day of the range; null without sessions).
    """
    sessions = cast(pl.DataFrame, pl.from_arrow(run_scoped(conn, scope, SESSIONS_SQL)))
    per_day = (
        sessions.with_columns(
            pl.col("start_time").dt.date().alias("day"),
            ((pl.col("end_time") - pl.col("start_time")).dt.total_microseconds() / 1e6).alias(
                "duration_s"
            ),
        )
        .group_by("day")
        .agg(
            pl.len().cast(pl.Int64).alias("sessions"),
            pl.col("duration_s").mean().alias("mean_session_s"),
            pl.col("duration_s").median().alias("median_session_s"),
            pl.col("turns").mean().alias("mean_session_turns"),
        )
    )
    days = pl.DataFrame({"day": _days(scope)}, schema={"day": pl.Date})
    return days.join(per_day, on="day", how="left").with_columns(pl.col("sessions").fill_null(0))


BUSINESS_METRICS_SQL = """
SELECT CAST(date_trunc('day', time) AS DATE) AS day, metric, arg_max(value, imported_at) AS value
FROM business_metrics_between($start, $end)
WHERE project = $project
GROUP BY ALL
ORDER BY day, metric
"""


def business_metrics(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """The imported daily metrics of the range (the latest import of each value).

    Returns:
        Columns ``day``, ``metric``, ``value``.
    """
    cur = conn.cursor()
    try:
        cur.execute("SET TimeZone = 'UTC'")
        params = {"start": scope.start, "end": scope.end, "project": scope.project}
        table = query(cur, BUSINESS_METRICS_SQL, params)
    finally:
        cur.close()
    return cast(pl.DataFrame, pl.from_arrow(table))


GUARDRAIL_RATE_BY_DAY_SQL = f"""
SELECT
    CAST(date_trunc('day', start_time) AS DATE) AS day,
    avg(CASE WHEN trace_id IN (
        SELECT trace_id FROM scoped_guardrails WHERE {GUARDRAIL_TRIGGERED_SQL}
    ) THEN 1.0 ELSE 0.0 END) AS guardrail_rate
FROM scoped_traces
GROUP BY 1
"""


def daily_quality(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """The quality metrics of :data:`QUALITY_COLUMNS` per UTC day of the range (regenerations
    from :func:`analytics.implicit.implicit_turns` without embeddings).

    Returns:
        Columns ``day``, ``requests`` and one per :data:`QUALITY_COLUMNS` key.
    """
    days = pl.DataFrame({"day": _days(scope)}, schema={"day": pl.Date})
    # the Overview's per-bucket requests, errors and p95s, one bucket a day
    base = requests_by_time(conn, scope, _DAY).select(
        pl.col("bucket_start").dt.date().alias("day"),
        "requests",
        pl.when(pl.col("requests") > 0)
        .then(pl.col("errors") / pl.col("requests"))
        .alias("error_rate"),
        "latency_p95_ms",
        "ttft_p95_ms",
    )
    guardrails = cast(
        pl.DataFrame, pl.from_arrow(run_scoped(conn, scope, GUARDRAIL_RATE_BY_DAY_SQL))
    )
    feedback = feedback_by_time(conn, scope, _DAY).select(
        pl.col("bucket_start").dt.date().alias("day"), "thumbs_down_rate"
    )
    turns = implicit_turns(conn, scope, embed=False, sentiment=False)
    regenerations = (
        turns.group_by(pl.col("start_time").dt.date().alias("day")).agg(
            pl.col("regenerated").mean().alias("regeneration_rate")
        )
        if not turns.is_empty()
        else pl.DataFrame(schema={"day": pl.Date, "regeneration_rate": pl.Float64})
    )
    frame = (
        days.join(base, on="day", how="left")
        .join(guardrails, on="day", how="left")
        .join(feedback, on="day", how="left")
        .join(regenerations, on="day", how="left")
    )
    return frame.select("day", "requests", *QUALITY_COLUMNS)


def daily_business(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """The business metrics of :data:`BUSINESS_COLUMNS` per UTC day of the range, with one
    more column per imported metric (named as imported; ``<name> (imported)`` when a metric
    computed here has the name)."""
    activity = user_activity(conn, scope)
    cohorts = retention_cohorts(conn, scope).select(
        pl.col("cohort").alias("day"), "d1_retention", "d7_retention"
    )
    sessions = session_stats(conn, scope).select("day", "mean_session_s", "mean_session_turns")
    frame = (
        activity.select("day", "dau", "wau", "new_users")
        .join(cohorts, on="day", how="left")
        .join(sessions, on="day", how="left")
    )
    imported = business_metrics(conn, scope)
    if not imported.is_empty():
        wide = imported.pivot(on="metric", index="day", values="value")
        # an imported metric named like one computed here keeps both, told apart
        wide = wide.rename(
            {c: f"{c} (imported)" for c in wide.columns if c in frame.columns and c != "day"}
        )
        frame = frame.join(wide, on="day", how="left")
    return frame


def spearman_interval(rho: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """A 95% interval for Spearman's ρ from n pairs (Fisher z, Bonett-Wright standard error).

    >>> [round(x, 3) for x in spearman_interval(0.5, 30)]
    [0.148, 0.74]
    """
    if n <= 3:
        return (-1.0, 1.0)
    if abs(rho) >= 1:
        return (rho, rho)
    se = math.sqrt((1 + rho * rho / 2) / (n - 3))
    centre = math.atanh(rho)
    return math.tanh(centre - z * se), math.tanh(centre + z * se)


def quality_business_correlation(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    lags: tuple[int, ...] = (0, 1, 7),
    min_days: int = 7,
) -> pl.DataFrame:
    """Spearman's ρ between each daily quality metric on day d and each business metric on
    day d + lag (see the module docstring), for every pair with ``min_days`` days of both.

    Returns:
        Columns ``quality``, ``business``, ``lag_days``, ``days``, ``rho``, ``low``, ``high``,
        ``p_value``, ``supported`` (the interval excludes 0); strongest first.
    """
    from scipy import stats

    quality = daily_quality(conn, scope)
    business = daily_business(conn, scope)
    business_columns = [c for c in business.columns if c != "day"]
    rows = []
    for lag in lags:
        shifted = business.with_columns(pl.col("day") - timedelta(days=lag))
        joined = quality.join(shifted, on="day", how="inner")
        for q in QUALITY_COLUMNS:
            for b in business_columns:
                pair = joined.select(q, b).drop_nulls().drop_nans()
                if pair.height < min_days or pair[q].n_unique() < 2 or pair[b].n_unique() < 2:
                    continue
                result = stats.spearmanr(pair[q].to_numpy(), pair[b].to_numpy())
                rho, p_value = float(result.statistic), float(result.pvalue)
                low, high = spearman_interval(rho, pair.height)
                rows.append(
                    {"quality": q, "business": b, "lag_days": lag, "days": pair.height,
                     "rho": rho, "low": low, "high": high, "p_value": p_value,
                     "supported": low > 0 or high < 0}
                )  # fmt: skip
    frame = pl.DataFrame(
        rows,
        schema={"quality": pl.String, "business": pl.String, "lag_days": pl.Int64,
                "days": pl.Int64, "rho": pl.Float64, "low": pl.Float64, "high": pl.Float64,
                "p_value": pl.Float64, "supported": pl.Boolean},
    )  # fmt: skip
    return frame.sort(pl.col("rho").abs(), descending=True)
