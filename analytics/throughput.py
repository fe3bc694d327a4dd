"""Throughput: requests per minute, tokens per second and concurrency (in-flight model calls).

Rates divide by the part of each bucket that lies inside the window, so a last bucket cut short
by the window's end is not under-reported. Concurrency counts the model calls (or requests)
that started in the window; one that started before the window and is still running is not
seen, so the first minutes of a window read a little low. A call is in flight on its half-open
interval ``[start_time, end_time)``: a call that ends at the instant another starts does not
overlap it.

Concurrency works in integer microseconds since the epoch: a running sum over the calls' start
(+1) and end (−1) events ordered by one integer key, ``time × 4 + order`` (ends before starts at
the same instant, as the half-open interval asks), and bucket starts found by remainder from the
first bucket's start. The same arithmetic on ``TIMESTAMPTZ`` values (``time_bucket`` with a time
zone, interval addition) costs about twice as much over 30 days of calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, cast

import duckdb
import polars as pl

from analytics.latency import check_bucket
from analytics.scope import Scope, quote_identifier, run_scoped

__all__ = [
    "ConcurrencySource",
    "ThroughputSummary",
    "concurrency_by_time",
    "per_minute",
    "throughput_by_time",
    "throughput_summary",
]

#: What concurrency counts: model calls (``scoped_llm_calls``) or requests (``scoped_traces``).
ConcurrencySource = Literal["scoped_llm_calls", "scoped_traces"]


def per_minute(count: int, seconds: float) -> float | None:
    """A count over ``seconds`` as a rate per minute (``None`` for an empty interval).

    >>> per_minute(90, 3600.0)  # 90 requests in an hour
    1.5
    >>> per_minute(5, 0.0) is None
    True
    """
    return count * 60.0 / seconds if seconds > 0 else None


@dataclass(frozen=True)
class ThroughputSummary:
    """Rates over a whole window; a rate over an empty window is ``None``."""

    window_s: float
    num_requests: int
    num_llm_calls: int
    input_tokens: int
    output_tokens: int
    requests_per_min: float | None
    llm_calls_per_min: float | None
    input_tokens_per_s: float | None
    output_tokens_per_s: float | None
    #: Time-weighted mean of in-flight model calls (total call time ÷ window length).
    mean_concurrency: float | None
    #: Most model calls in flight at once.
    peak_concurrency: int


THROUGHPUT_SUMMARY_SQL = """
WITH requests AS (
    SELECT count(*) AS num_requests FROM scoped_traces
), calls AS (
    SELECT
        count(*) AS num_llm_calls,
        CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
        CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens
    FROM scoped_llm_calls
), intervals AS MATERIALIZED (
    SELECT
        epoch_us(CAST(start_time AS TIMESTAMPTZ)) AS s,
        least(epoch_us(CAST(end_time AS TIMESTAMPTZ)), epoch_us($end::TIMESTAMPTZ)) AS e
    FROM scoped_llm_calls
    WHERE end_time > start_time
), busy AS (
    SELECT coalesce(sum(e - s), 0) / 1e6 AS busy_s FROM intervals
), events AS (
    SELECT s * 4 + 1 AS event_key, 1 AS delta FROM intervals
    UNION ALL SELECT e * 4, -1 FROM intervals
), running AS (
    SELECT sum(delta) OVER (ORDER BY event_key ROWS UNBOUNDED PRECEDING) AS in_flight FROM events
)
SELECT
    requests.num_requests,
    calls.*,
    busy.busy_s,
    (SELECT coalesce(max(in_flight), 0) FROM running) AS peak_concurrency
FROM requests, calls, busy
"""


def throughput_summary(conn: duckdb.DuckDBPyConnection, scope: Scope) -> ThroughputSummary:
    """Requests and model calls per minute, tokens per second and concurrency over the window."""
    row = run_scoped(conn, scope, THROUGHPUT_SUMMARY_SQL).to_pylist()[0]
    window_s = (scope.end - scope.start).total_seconds()
    per_s = 1 / window_s if window_s > 0 else None
    return ThroughputSummary(
        window_s=window_s,
        num_requests=int(row["num_requests"]),
        num_llm_calls=int(row["num_llm_calls"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        requests_per_min=per_minute(int(row["num_requests"]), window_s),
        llm_calls_per_min=per_minute(int(row["num_llm_calls"]), window_s),
        input_tokens_per_s=None if per_s is None else row["input_tokens"] * per_s,
        output_tokens_per_s=None if per_s is None else row["output_tokens"] * per_s,
        mean_concurrency=None if per_s is None else float(row["busy_s"]) * per_s,
        peak_concurrency=int(row["peak_concurrency"]),
    )


THROUGHPUT_BY_TIME_SQL = """
WITH buckets AS (
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
), requests AS (
    SELECT time_bucket($bucket, start_time, 'UTC') AS bucket_start, count(*) AS requests
    FROM scoped_traces
    GROUP BY 1
), calls AS (
    SELECT
        time_bucket($bucket, start_time, 'UTC') AS bucket_start,
        count(*) AS llm_calls,
        CAST(coalesce(sum(input_tokens), 0) AS BIGINT) AS input_tokens,
        CAST(coalesce(sum(output_tokens), 0) AS BIGINT) AS output_tokens
    FROM scoped_llm_calls
    GROUP BY 1
)
SELECT
    buckets.bucket_start,
    coalesce(requests.requests, 0) AS requests,
    coalesce(calls.llm_calls, 0) AS llm_calls,
    coalesce(calls.input_tokens, 0) AS input_tokens,
    coalesce(calls.output_tokens, 0) AS output_tokens,
    coalesce(requests.requests, 0) * 60e6 / buckets.inside_us AS requests_per_min,
    coalesce(calls.llm_calls, 0) * 60e6 / buckets.inside_us AS llm_calls_per_min,
    coalesce(calls.input_tokens, 0) * 1e6 / buckets.inside_us AS input_tokens_per_s,
    coalesce(calls.output_tokens, 0) * 1e6 / buckets.inside_us AS output_tokens_per_s
FROM buckets
LEFT JOIN requests USING (bucket_start)
LEFT JOIN calls USING (bucket_start)
ORDER BY buckets.bucket_start
"""


def throughput_by_time(
    conn: duckdb.DuckDBPyConnection, scope: Scope, bucket: timedelta
) -> pl.DataFrame:
    """Requests per minute and tokens per second per time bucket, every bucket present.

    Returns:
        Columns ``bucket_start``, ``requests``, ``llm_calls``, ``input_tokens``,
        ``output_tokens`` (counts of what started in the bucket), ``requests_per_min``,
        ``llm_calls_per_min``, ``input_tokens_per_s`` and ``output_tokens_per_s`` (divided by
        the part of the bucket inside the window).
    """
    check_bucket(scope, bucket)
    table = run_scoped(conn, scope, THROUGHPUT_BY_TIME_SQL, {"bucket": bucket})
    return cast(pl.DataFrame, pl.from_arrow(table))


CONCURRENCY_BY_TIME_SQL = """
WITH buckets AS (
    SELECT bucket_start, epoch_us(bucket_start) AS bucket_us
    FROM (SELECT unnest(range(
        time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
    )) AS bucket_start)
), bounds AS (
    SELECT
        epoch_us($start::TIMESTAMPTZ) AS start_us,
        epoch_us($end::TIMESTAMPTZ) AS end_us,
        epoch_us(time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC')) AS first_us,
        epoch_us($bucket) AS width_us
), intervals AS MATERIALIZED (
    SELECT
        epoch_us(CAST(start_time AS TIMESTAMPTZ)) AS s,
        least(epoch_us(CAST(end_time AS TIMESTAMPTZ)), end_us) AS e,
        first_us,
        width_us
    FROM {source}, bounds
    WHERE end_time > start_time
), busy AS (
    -- A call crossing bucket boundaries contributes its overlap with each bucket.
    SELECT piece AS bucket_us, sum(least(e, piece + width_us) - greatest(s, piece)) AS busy_us
    FROM (SELECT s, e, width_us, unnest(range(s - (s - first_us) % width_us, e, width_us)) AS piece
          FROM intervals)
    GROUP BY 1
), events AS (
    SELECT s * 4 + 1 AS event_key, 1 AS delta FROM intervals
    UNION ALL SELECT e * 4, -1 FROM intervals
    -- A zero-delta event at each bucket start carries the in-flight count into the bucket.
    UNION ALL SELECT bucket_us * 4 + 2, 0 FROM buckets
), running AS (
    SELECT
        event_key // 4 AS t,
        sum(delta) OVER (ORDER BY event_key ROWS UNBOUNDED PRECEDING) AS in_flight
    FROM events
), peaks AS (
    SELECT t - (t - first_us) % width_us AS bucket_us, max(in_flight) AS peak
    FROM running, bounds
    WHERE t >= start_us AND t < end_us
    GROUP BY 1
)
SELECT
    buckets.bucket_start,
    coalesce(busy.busy_us, 0) / date_diff(
        'microsecond',
        greatest(buckets.bucket_start, $start::TIMESTAMPTZ),
        least(buckets.bucket_start + $bucket, $end::TIMESTAMPTZ)
    ) AS mean_concurrency,
    CAST(coalesce(peaks.peak, 0) AS BIGINT) AS peak_concurrency
FROM buckets
LEFT JOIN busy USING (bucket_us)
LEFT JOIN peaks USING (bucket_us)
ORDER BY buckets.bucket_start
"""


def concurrency_by_time(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    bucket: timedelta,
    source: ConcurrencySource = "scoped_llm_calls",
) -> pl.DataFrame:
    """Model calls (or requests) in flight per time bucket: time-weighted mean and peak.

    Returns:
        Columns ``bucket_start``, ``mean_concurrency`` (in-flight time inside the bucket ÷ the
        bucket's length inside the window) and ``peak_concurrency`` (most in flight at once
        during the bucket); every bucket present.
    """
    check_bucket(scope, bucket)
    sql = CONCURRENCY_BY_TIME_SQL.format(source=quote_identifier(source))
    table = run_scoped(conn, scope, sql, {"bucket": bucket})
    return cast(pl.DataFrame, pl.from_arrow(table))
