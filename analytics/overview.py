"""The Overview page's numbers: request volume, errors, latency, TTFT, tokens, cost, top models.

Definitions (the page states them too):

* A **request** is a trace whose root span started in the window (``scoped_traces``).
* The **error rate** is requests whose root span has status ``ERROR`` ÷ requests.
* **Latency** is the trace's end-to-end duration; **TTFT** is time to first token over the
  streamed model calls (those with a ``ttft_ms``) that started in the window.
* Tokens, cost and call counts sum the model calls (``scoped_llm_calls``) that started in the
  window; cost is the span's own cost, else priced from the price table at read time.
* Percentiles use linear interpolation (``quantile_cont``, numpy's default); see
  :mod:`analytics.latency`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import duckdb
import polars as pl

from analytics.scope import Scope, run_scoped

__all__ = [
    "BUCKETS",
    "OverviewSummary",
    "choose_bucket",
    "overview_summary",
    "requests_by_time",
    "top_models",
]


@dataclass(frozen=True)
class OverviewSummary:
    """Headline numbers for a scope; a statistic over no rows is ``None``, a count is 0."""

    num_requests: int
    num_traces: int
    num_users: int
    num_errors: int
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    num_streamed_calls: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None
    num_llm_calls: int
    #: Calls that report tokens but have no cost (their model matches no price).
    num_unpriced_calls: int
    input_tokens: int
    output_tokens: int
    total_cost_usd: float


OVERVIEW_SUMMARY_SQL = """
WITH requests AS (
    SELECT
        count(*) AS num_requests,
        count(DISTINCT user_id) AS num_users,
        count(*) FILTER (WHERE status_code = 'ERROR') AS num_errors,
        quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS latency_ms
    FROM scoped_traces
), calls AS (
    SELECT
        count(*) AS num_llm_calls,
        count(*) FILTER (WHERE unpriced) AS num_unpriced_calls,
        count(ttft_ms) AS num_streamed_calls,
        quantile_cont(ttft_ms, [0.5, 0.95, 0.99]) AS ttft_ms,
        CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
        CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
        coalesce(sum(total_cost_usd), 0.0) AS total_cost_usd
    FROM scoped_llm_calls
), spans AS (
    SELECT count(DISTINCT trace_id) AS num_traces FROM {spans}
)
SELECT * FROM requests, calls, spans
"""


def overview_summary(conn: duckdb.DuckDBPyConnection, scope: Scope) -> OverviewSummary:
    """Headline numbers for a scope (definitions in the module docstring).

    ``num_requests`` counts traces whose root started in the window; ``num_traces`` counts
    traces with any (filtered) span that started in it, so a trace that began before the
    window counts as a trace but not as a request.
    """
    # Unfiltered, the traces with a span in the window are those of its trace parts (a tenth
    # of the rows); a service or model filter applies to single spans, so it reads them.
    filtered = scope.services or scope.models or scope.routes
    sql = OVERVIEW_SUMMARY_SQL.format(spans="scoped_spans" if filtered else "scoped_span_parts")
    row = run_scoped(conn, scope, sql).to_pylist()[0]
    latency = row["latency_ms"] or [None, None, None]
    ttft = row["ttft_ms"] or [None, None, None]
    num_requests = int(row["num_requests"])
    num_errors = int(row["num_errors"])
    return OverviewSummary(
        num_requests=num_requests,
        num_traces=int(row["num_traces"]),
        num_users=int(row["num_users"]),
        num_errors=num_errors,
        error_rate=num_errors / num_requests if num_requests else None,
        latency_p50_ms=latency[0],
        latency_p95_ms=latency[1],
        latency_p99_ms=latency[2],
        num_streamed_calls=int(row["num_streamed_calls"]),
        ttft_p50_ms=ttft[0],
        ttft_p95_ms=ttft[1],
        ttft_p99_ms=ttft[2],
        num_llm_calls=int(row["num_llm_calls"]),
        num_unpriced_calls=int(row["num_unpriced_calls"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        total_cost_usd=float(row["total_cost_usd"]),
    )


#: Bucket widths offered for time series, narrowest first.
BUCKETS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=7),
)

#: More buckets than this is a mistake (a one-minute series over a year), not a chart.
_MAX_BUCKETS = 20_000


def choose_bucket(start: datetime, end: datetime, max_buckets: int = 120) -> timedelta:
    """The narrowest bucket in :data:`BUCKETS` that splits ``[start, end)`` into at most
    ``max_buckets`` buckets (the widest one if none does).

    >>> from datetime import UTC
    >>> choose_bucket(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    datetime.timedelta(seconds=900)
    """
    span = end - start
    for bucket in BUCKETS:
        if span / bucket <= max_buckets:
            return bucket
    return BUCKETS[-1]


REQUESTS_BY_TIME_SQL = """
WITH buckets AS (
    SELECT unnest(range(
        time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
    )) AS bucket_start
), requests AS (
    SELECT
        time_bucket($bucket, start_time, 'UTC') AS bucket_start,
        count(*) AS requests,
        count(*) FILTER (WHERE status_code = 'ERROR') AS errors,
        quantile_cont(duration_ms, 0.95) AS latency_p95_ms
    FROM scoped_traces
    GROUP BY 1
), calls AS (
    SELECT
        time_bucket($bucket, start_time, 'UTC') AS bucket_start,
        quantile_cont(ttft_ms, 0.95) AS ttft_p95_ms
    FROM scoped_llm_calls
    GROUP BY 1
)
SELECT
    buckets.bucket_start,
    coalesce(requests.requests, 0) AS requests,
    coalesce(requests.errors, 0) AS errors,
    requests.latency_p95_ms,
    calls.ttft_p95_ms
FROM buckets
LEFT JOIN requests USING (bucket_start)
LEFT JOIN calls USING (bucket_start)
ORDER BY buckets.bucket_start
"""


def requests_by_time(
    conn: duckdb.DuckDBPyConnection, scope: Scope, bucket: timedelta
) -> pl.DataFrame:
    """Requests, errors, p95 latency and p95 TTFT per time bucket, every bucket present.

    Returns:
        Columns ``bucket_start`` (UTC, aligned with DuckDB ``time_bucket``), ``requests``,
        ``errors`` (counts, 0 for an empty bucket), ``latency_p95_ms`` and ``ttft_p95_ms``
        (``null`` for a bucket without requests / streamed calls).
    """
    if bucket <= timedelta(0):
        raise ValueError(f"bucket must be positive, got {bucket}")
    if (scope.end - scope.start) / bucket > _MAX_BUCKETS:
        raise ValueError(f"{bucket} splits {scope.end - scope.start} into too many buckets")
    table = run_scoped(conn, scope, REQUESTS_BY_TIME_SQL, {"bucket": bucket})
    return cast(pl.DataFrame, pl.from_arrow(table))


TOP_MODELS_SQL = """
SELECT
    model,
    provider,
    count(*) AS calls,
    CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
    CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens,
    CAST(coalesce(sum(input_tokens), 0) + coalesce(sum(output_tokens), 0) AS BIGINT)
        AS total_tokens,
    sum(total_cost_usd) AS cost_usd,
    quantile_cont(duration_ms, 0.95) AS latency_p95_ms,
    avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END) AS error_rate
FROM scoped_llm_calls
GROUP BY model, provider
ORDER BY calls DESC, cost_usd DESC NULLS LAST, model NULLS LAST, provider NULLS LAST
LIMIT $limit
"""


def top_models(conn: duckdb.DuckDBPyConnection, scope: Scope, limit: int = 10) -> pl.DataFrame:
    """The most-called (model, provider) pairs in a scope, busiest first.

    Returns:
        Columns ``model``, ``provider``, ``calls``, ``input_tokens``, ``output_tokens``,
        ``total_tokens``, ``cost_usd`` (``null`` when no call of the pair could be priced),
        ``latency_p95_ms`` (model-call duration) and ``error_rate`` (calls with status
        ``ERROR`` ÷ calls).
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    table = run_scoped(conn, scope, TOP_MODELS_SQL, {"limit": limit})
    return cast(pl.DataFrame, pl.from_arrow(table))
