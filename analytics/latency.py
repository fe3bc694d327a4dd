"""Latency distributions: end-to-end request latency, model-call latency, TTFT and TPOT.

Percentiles use linear interpolation between closest ranks — numpy's default
(``method="linear"``, Hyndman & Fan type 7) and DuckDB's ``quantile_cont``. NULLs are ignored;
an empty input has no percentiles (``None``), never zero. Every summary carries its sample size
``n``, and a group with fewer than ``min_samples`` values is flagged (``enough_samples``) so a
page can mark it instead of drawing noise.

Measures (:data:`MEASURES`): ``request`` is a trace's end-to-end duration (``scoped_traces``);
``call``, ``ttft`` and ``tpot`` are a model call's duration, time to first token and time per
output token (``scoped_llm_calls``; TPOT is defined for streamed calls with at least two output
tokens, see :func:`tpot_ms`).

Dimensions (:data:`DIMENSIONS`): a model call is grouped by its own ``model``, ``provider``,
``service``, ``operation`` and UTC ``day``, and by its trace's ``route``. A request is grouped by
its root's ``service``, ``route`` and ``day``, and by each ``model`` / ``provider`` it called (a
request that called two models counts under both; one that called none under ``null``). A
request has no ``operation``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, cast, get_args

import duckdb
import polars as pl

from analytics.scope import Scope, quote_identifier, run_scoped

__all__ = [
    "DIMENSIONS",
    "MAX_BUCKETS",
    "MEASURES",
    "MIN_SAMPLES",
    "PERCENTILES",
    "Dimension",
    "LatencyPercentiles",
    "Measure",
    "check_bucket",
    "latency_by_dimension",
    "latency_by_time",
    "latency_histogram",
    "latency_percentiles",
    "linear_percentile",
    "prefill_decode_by_model",
    "prefill_decode_points",
    "tpot_ms",
]

#: The quantiles every latency summary reports, in order.
PERCENTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)

#: Scoped relations a latency can be read from.
LatencySource = Literal["scoped_traces", "scoped_llm_calls", "scoped_spans"]


def linear_percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-quantile of ascending ``sorted_values`` by linear interpolation (numpy "linear").

    With n values x[0] <= … <= x[n-1], the quantile sits at rank h = (n - 1)·q and is
    x[⌊h⌋] + (h - ⌊h⌋)·(x[⌊h⌋ + 1] - x[⌊h⌋]).

    Args:
        sorted_values: the observations, ascending, without NULLs.
        q: the quantile, in [0, 1].

    Returns:
        The interpolated quantile, or ``None`` when there are no values.

    >>> linear_percentile([10.0, 20.0, 30.0, 40.0], 0.5)  # h = 1.5: 20 + 0.5·(30 - 20)
    25.0
    >>> linear_percentile([1.0, 2.0, 3.0, 4.0, 100.0], 0.875)  # h = 3.5: 4 + 0.5·(100 - 4)
    52.0
    >>> linear_percentile([], 0.5) is None
    True
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    n = len(sorted_values)
    if n == 0:
        return None
    h = (n - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    return float(sorted_values[lo] + (h - lo) * (sorted_values[hi] - sorted_values[lo]))


@dataclass(frozen=True)
class LatencyPercentiles:
    """Summary of one latency column in milliseconds; every statistic is ``None`` when n == 0."""

    n: int
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    max: float | None


LATENCY_PERCENTILES_SQL = """
SELECT
    count({column}) AS n,
    quantile_cont({column}, [0.5, 0.9, 0.95, 0.99]) AS qs,
    avg({column}) AS mean,
    max({column}) AS max
FROM {source}
"""


def latency_percentiles(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    column: str = "duration_ms",
    source: LatencySource = "scoped_traces",
) -> LatencyPercentiles:
    """Percentiles (p50/p90/p95/p99), mean and max of a millisecond column over scoped rows.

    Args:
        conn: a catalog connection (``store.catalog.open_catalog``).
        scope: the project, window and filters.
        column: the column to summarise, e.g. ``duration_ms`` or ``ttft_ms``.
        source: the scoped relation to read; ``scoped_traces`` gives request latency,
            ``scoped_llm_calls`` model-call latency and TTFT.

    Returns:
        A :class:`LatencyPercentiles`; NULLs are ignored, ``n`` counts the non-NULL values.
    """
    sql = LATENCY_PERCENTILES_SQL.format(
        column=quote_identifier(column), source=quote_identifier(source)
    )
    row = run_scoped(conn, scope, sql).to_pylist()[0]
    qs = row["qs"] or [None] * len(PERCENTILES)
    return LatencyPercentiles(
        n=int(row["n"]),
        p50=qs[0],
        p90=qs[1],
        p95=qs[2],
        p99=qs[3],
        mean=row["mean"],
        max=row["max"],
    )


def tpot_ms(
    duration_ms: float | None, ttft_ms: float | None, output_tokens: int | None
) -> float | None:
    """Time per output token after the first: (duration − TTFT) / (output tokens − 1).

    The ``llm_calls`` view computes the same; it is defined only for a streamed call (one with a
    TTFT) that produced at least two output tokens.

    Args:
        duration_ms: the call's duration.
        ttft_ms: its time to first token (``None`` when the call was not streamed).
        output_tokens: the tokens it produced.

    Returns:
        Milliseconds per token, or ``None`` when undefined.

    >>> tpot_ms(1250.0, 250.0, 41)  # (1250 - 250) / 40
    25.0
    >>> tpot_ms(900.0, 300.0, 1) is None  # one token: no inter-token time
    True
    >>> tpot_ms(900.0, None, 80) is None  # not streamed
    True
    """
    if duration_ms is None or ttft_ms is None or output_tokens is None or output_tokens < 2:
        return None
    return (duration_ms - ttft_ms) / (output_tokens - 1)


#: A percentile over fewer values than this is flagged (``enough_samples`` false): the p95 of
#: 19 values is an interpolation between the two largest, which is noise, not a tail.
MIN_SAMPLES = 20

#: What a latency is measured on.
Measure = Literal["request", "call", "ttft", "tpot"]
#: Measure → (scoped relation, column, label).
MEASURES: dict[str, tuple[LatencySource, str, str]] = {
    "request": ("scoped_traces", "duration_ms", "Request latency"),
    "call": ("scoped_llm_calls", "duration_ms", "Model-call latency"),
    "ttft": ("scoped_llm_calls", "ttft_ms", "Time to first token"),
    "tpot": ("scoped_llm_calls", "tpot_ms", "Time per output token"),
}

#: What a latency can be grouped by.
Dimension = Literal["model", "provider", "service", "route", "operation", "day"]
DIMENSIONS: tuple[str, ...] = get_args(Dimension)

# Rows of (key, value, start_time) for each source and dimension; {column} is the measure.
_CALL_ROWS = "SELECT {key} AS key, {column} AS value, start_time FROM scoped_llm_calls"
_TRACE_ROWS = "SELECT {key} AS key, {column} AS value, start_time FROM scoped_traces"
_ROW_SOURCES: dict[tuple[str, str], str] = {
    ("scoped_llm_calls", "model"): _CALL_ROWS.replace("{key}", "model"),
    ("scoped_llm_calls", "provider"): _CALL_ROWS.replace("{key}", "provider"),
    ("scoped_llm_calls", "service"): _CALL_ROWS.replace("{key}", "service_name"),
    ("scoped_llm_calls", "operation"): _CALL_ROWS.replace("{key}", "operation"),
    ("scoped_llm_calls", "day"): _CALL_ROWS.replace("{key}", "CAST(start_time AS DATE)"),
    ("scoped_llm_calls", "route"): (
        "SELECT r.route AS key, c.{column} AS value, c.start_time"
        " FROM scoped_llm_calls AS c LEFT JOIN scoped_roots AS r USING (trace_id)"
    ),
    ("scoped_llm_calls", ""): _CALL_ROWS.replace("{key}", "NULL"),
    ("scoped_traces", "service"): _TRACE_ROWS.replace("{key}", "service_name"),
    ("scoped_traces", "route"): _TRACE_ROWS.replace("{key}", "name"),
    ("scoped_traces", "day"): _TRACE_ROWS.replace("{key}", "CAST(start_time AS DATE)"),
    ("scoped_traces", "model"): _TRACE_ROWS.replace(
        "{key}", "unnest(CASE WHEN len(models) = 0 THEN [NULL::VARCHAR] ELSE models END)"
    ),
    ("scoped_traces", "provider"): (
        "SELECT p.provider AS key, t.{column} AS value, t.start_time FROM scoped_traces AS t"
        " LEFT JOIN (SELECT DISTINCT trace_id, provider FROM scoped_llm_calls) AS p"
        " USING (trace_id)"
    ),
    ("scoped_traces", ""): _TRACE_ROWS.replace("{key}", "NULL"),
}


def _rows_sql(measure: str, by: str | None) -> str:
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; use one of {', '.join(MEASURES)}")
    if by is not None and by not in DIMENSIONS:
        raise ValueError(f"unknown dimension {by!r}; use one of {', '.join(DIMENSIONS)}")
    source, column, _ = MEASURES[measure]
    template = _ROW_SOURCES.get((source, by or ""))
    if template is None:
        raise ValueError(f"{measure} latency cannot be grouped by {by} (a request has no {by})")
    return template.replace("{column}", quote_identifier(column))


LATENCY_BY_DIMENSION_SQL = """
WITH rows AS ({rows}), grouped AS (
    SELECT
        key,
        count(value) AS n,
        quantile_cont(value, [0.5, 0.9, 0.95, 0.99]) AS qs,
        avg(value) AS mean_ms,
        max(value) AS max_ms
    FROM rows
    GROUP BY key
    HAVING count(value) > 0
)
SELECT
    key AS {by},
    n,
    qs[1] AS p50_ms,
    qs[2] AS p90_ms,
    qs[3] AS p95_ms,
    qs[4] AS p99_ms,
    mean_ms,
    max_ms,
    n >= $min_samples AS enough_samples
FROM grouped
ORDER BY n DESC, key NULLS LAST
"""


def latency_by_dimension(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    measure: Measure,
    by: Dimension,
    min_samples: int = MIN_SAMPLES,
) -> pl.DataFrame:
    """Percentiles of a latency measure per model, provider, service, route, operation or day.

    Returns:
        Columns ``<by>`` (the group; a date for ``day``), ``n`` (non-null values), ``p50_ms``,
        ``p90_ms``, ``p95_ms``, ``p99_ms``, ``mean_ms``, ``max_ms`` and ``enough_samples``
        (``n >= min_samples``); groups without values are left out; the busiest first (days in
        order).
    """
    sql = LATENCY_BY_DIMENSION_SQL.format(rows=_rows_sql(measure, by), by=quote_identifier(by))
    table = run_scoped(conn, scope, sql, {"min_samples": min_samples})
    frame = cast(pl.DataFrame, pl.from_arrow(table))
    return frame.sort("day") if by == "day" else frame


#: More buckets than this is a mistake (a one-minute series over a year), not a chart.
MAX_BUCKETS = 20_000


def check_bucket(scope: Scope, bucket: timedelta) -> None:
    """Raise ValueError unless ``bucket`` is positive and splits the scope into few enough buckets."""
    if bucket <= timedelta(0):
        raise ValueError(f"bucket must be positive, got {bucket}")
    if (scope.end - scope.start) / bucket > MAX_BUCKETS:
        raise ValueError(f"{bucket} splits {scope.end - scope.start} into too many buckets")


LATENCY_BY_TIME_SQL = """
WITH rows AS ({rows}), buckets AS (
    SELECT unnest(range(
        time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
    )) AS bucket_start
), grouped AS (
    SELECT
        time_bucket($bucket, start_time, 'UTC') AS bucket_start,
        key,
        count(value) AS n,
        quantile_cont(value, [0.5, 0.9, 0.95, 0.99]) AS qs,
        avg(value) AS mean_ms,
        max(value) AS max_ms
    FROM rows
    GROUP BY ALL
    HAVING count(value) > 0
), filled AS (
    SELECT buckets.bucket_start, grouped.* EXCLUDE (bucket_start)
    FROM buckets {join} grouped USING (bucket_start)
)
SELECT
    bucket_start,
    {key_column}
    coalesce(n, 0) AS n,
    qs[1] AS p50_ms,
    qs[2] AS p90_ms,
    qs[3] AS p95_ms,
    qs[4] AS p99_ms,
    mean_ms,
    max_ms,
    coalesce(n, 0) >= $min_samples AS enough_samples
FROM filled
ORDER BY bucket_start, key NULLS LAST
"""


def latency_by_time(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    measure: Measure,
    bucket: timedelta,
    by: Dimension | None = None,
    min_samples: int = MIN_SAMPLES,
) -> pl.DataFrame:
    """Percentiles of a latency measure per time bucket (and per group when ``by`` is given).

    Returns:
        Columns ``bucket_start`` (UTC, aligned like DuckDB ``time_bucket``), ``<by>`` when
        grouped, ``n``, ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``, ``mean_ms``, ``max_ms``
        and ``enough_samples``. Without ``by`` every bucket is present (``n`` 0, percentiles
        null when empty); with it, only the (bucket, group) pairs that have values.
    """
    check_bucket(scope, bucket)
    sql = LATENCY_BY_TIME_SQL.format(
        rows=_rows_sql(measure, by),
        join="LEFT JOIN" if by is None else "JOIN",
        key_column="" if by is None else f"key AS {quote_identifier(by)},",
    )
    table = run_scoped(conn, scope, sql, {"bucket": bucket, "min_samples": min_samples})
    return cast(pl.DataFrame, pl.from_arrow(table))


#: The histogram's regular bins end at this quantile; everything above falls in one tail bin,
#: so one 30-second timeout does not squeeze every other request into the first bar.
HISTOGRAM_TAIL_QUANTILE = 0.99

LATENCY_HISTOGRAM_SQL = """
WITH rows AS ({rows}), observed AS (
    SELECT value FROM rows WHERE value IS NOT NULL
), stats AS (
    SELECT quantile_cont(value, $tail_q) AS upper, max(value) AS top FROM observed
), binned AS (
    SELECT
        CASE
            WHEN stats.upper <= 0 THEN 0
            ELSE CAST(least(greatest(floor(value / (stats.upper / $num_bins)), 0), $num_bins)
                AS INTEGER)
        END AS bin,
        count(*) AS count
    FROM observed, stats
    GROUP BY bin
)
SELECT binned.bin, binned.count, stats.upper, stats.top FROM binned, stats ORDER BY bin
"""


def latency_histogram(
    conn: duckdb.DuckDBPyConnection, scope: Scope, measure: Measure, num_bins: int = 40
) -> pl.DataFrame:
    """Counts of a latency measure in ``num_bins`` equal bins from 0 to its p99, plus a tail bin.

    Returns:
        Columns ``bin_start_ms``, ``bin_end_ms``, ``count`` and ``is_tail``: bins
        ``[i·w, (i+1)·w)`` with ``w = p99 / num_bins`` (every one present, 0 when empty; negative
        values count in the first), then one tail bin ``[p99, max]`` for the values at or above
        the p99. Empty when there are no values.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    sql = LATENCY_HISTOGRAM_SQL.format(rows=_rows_sql(measure, None))
    params = {"num_bins": num_bins, "tail_q": HISTOGRAM_TAIL_QUANTILE}
    rows = run_scoped(conn, scope, sql, params).to_pylist()
    schema = {
        "bin_start_ms": pl.Float64,
        "bin_end_ms": pl.Float64,
        "count": pl.Int64,
        "is_tail": pl.Boolean,
    }
    if not rows:
        return pl.DataFrame(schema=schema)
    upper, top = float(rows[0]["upper"]), float(rows[0]["top"])
    counts = {int(row["bin"]): int(row["count"]) for row in rows}
    if upper <= 0:  # every value is zero (or below): one bin holds them all
        data = [(min(upper, 0.0), max(top, 0.0), counts.get(0, 0), False)]
        return pl.DataFrame(data, schema=schema, orient="row")
    width = upper / num_bins
    data = [(i * width, (i + 1) * width, counts.get(i, 0), False) for i in range(num_bins)]
    data.append((upper, top, counts.get(num_bins, 0), True))
    return pl.DataFrame(data, schema=schema, orient="row")


PREFILL_DECODE_BY_MODEL_SQL = """
SELECT
    model,
    count(*) FILTER (WHERE ttft_ms IS NOT NULL AND input_tokens IS NOT NULL) AS num_prefill_calls,
    regr_intercept(ttft_ms, input_tokens) AS ttft_intercept_ms,
    1000 * regr_slope(ttft_ms, input_tokens) AS ttft_ms_per_1k_input_tokens,
    regr_r2(ttft_ms, input_tokens) AS ttft_r2,
    count(*) FILTER (WHERE output_tokens >= 1 AND duration_ms IS NOT NULL) AS num_decode_calls,
    regr_intercept(duration_ms, output_tokens) FILTER (WHERE output_tokens >= 1)
        AS duration_intercept_ms,
    regr_slope(duration_ms, output_tokens) FILTER (WHERE output_tokens >= 1)
        AS duration_ms_per_output_token,
    regr_r2(duration_ms, output_tokens) FILTER (WHERE output_tokens >= 1) AS duration_r2
FROM scoped_llm_calls
WHERE coalesce(status_code, '') <> 'ERROR' AND model IS NOT NULL
GROUP BY model
HAVING num_prefill_calls > 0 OR num_decode_calls > 0
ORDER BY num_decode_calls DESC, model
"""


def prefill_decode_by_model(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Per model, least-squares lines of TTFT on input tokens (prefill) and duration on output
    tokens (decode), over the calls that did not fail.

    Returns:
        Columns ``model``, ``num_prefill_calls`` (streamed calls with input tokens),
        ``ttft_intercept_ms``, ``ttft_ms_per_1k_input_tokens``, ``ttft_r2``,
        ``num_decode_calls`` (calls with at least one output token), ``duration_intercept_ms``,
        ``duration_ms_per_output_token`` and ``duration_r2``; a fit is null with fewer than two
        distinct x values.
    """
    table = run_scoped(conn, scope, PREFILL_DECODE_BY_MODEL_SQL)
    return cast(pl.DataFrame, pl.from_arrow(table))


PREFILL_DECODE_POINTS_SQL = """
SELECT trace_id, span_id, model, input_tokens, output_tokens, ttft_ms, duration_ms
FROM scoped_llm_calls
WHERE coalesce(status_code, '') <> 'ERROR' AND model IS NOT NULL
    AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL)
ORDER BY hash(span_id), span_id
LIMIT $limit
"""


def prefill_decode_points(
    conn: duckdb.DuckDBPyConnection, scope: Scope, limit: int = 2000
) -> pl.DataFrame:
    """A deterministic sample (by span id hash) of the calls behind :func:`prefill_decode_by_model`.

    Returns:
        Columns ``trace_id``, ``span_id``, ``model``, ``input_tokens``, ``output_tokens``,
        ``ttft_ms`` and ``duration_ms``; at most ``limit`` rows.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    table = run_scoped(conn, scope, PREFILL_DECODE_POINTS_SQL, {"limit": limit})
    return cast(pl.DataFrame, pl.from_arrow(table))
