"""Latency distributions: one percentile method everywhere.

Percentiles use linear interpolation between closest ranks — numpy's default
(``method="linear"``, Hyndman & Fan type 7) and DuckDB's ``quantile_cont``. NULLs are ignored;
an empty input has no percentiles (``None``), never zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb

from analytics.scope import Scope, quote_identifier, run_scoped

__all__ = [
    "PERCENTILES",
    "LatencyPercentiles",
    "latency_percentiles",
    "linear_percentile",
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
