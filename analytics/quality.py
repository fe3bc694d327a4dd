"""Quality signals of model output that are cheap to detect: format errors, refusals,
truncation, empty output and the provider's content filter.

Ingest's built-in detectors (``ingest.guard``) record each as a guardrail result on the model
call it found it on; here they become rates over the text-generating model calls in scope
(``chat``, ``text_completion``, ``generate_content``), except the format error rate, whose
denominator is the calls that asked for JSON output. Each rate carries its counts and a Wilson
95% interval, so a rate from a handful of calls reads as uncertain as it is.
"""

from __future__ import annotations

import math

import duckdb
import polars as pl

from analytics.scope import Scope, run_scoped
from store.schema import GENERATION_OPERATIONS

__all__ = ["QUALITY_SIGNALS", "quality_rates", "wilson_interval"]

#: Signal -> (detector category, label). Order is the page's.
QUALITY_SIGNALS: dict[str, tuple[str, str]] = {
    "format_error": ("format", "Format errors"),
    "refusal": ("refusal", "Refusals"),
    "truncation": ("truncation", "Truncated"),
    "empty_output": ("empty_output", "Empty output"),
    "content_filter": ("content_filter", "Content filtered"),
}


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion k/n (95% by default); None when n = 0.

    >>> [round(x, 4) for x in wilson_interval(5, 100)]
    [0.0215, 0.1118]
    >>> wilson_interval(0, 0) is None
    True
    """
    if n == 0:
        return None
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


QUALITY_RATES_SQL = """
WITH calls AS (
    SELECT count(*) AS n FROM scoped_llm_calls WHERE list_contains($generation, operation)
), flagged AS (
    SELECT
        category,
        count(DISTINCT span_id) FILTER (WHERE triggered) AS num_flagged,
        count(DISTINCT span_id) AS num_rows
    FROM scoped_guardrails
    WHERE source = 'detector'
    GROUP BY category
)
SELECT
    c.category,
    coalesce(f.num_flagged, 0) AS num_flagged,
    CASE WHEN c.category = 'format' THEN coalesce(f.num_rows, 0) ELSE calls.n END AS num_checked
FROM (SELECT unnest($categories) AS category) AS c
CROSS JOIN calls
LEFT JOIN flagged AS f USING (category)
"""


def quality_rates(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Rate of each quality signal over the model calls it applies to.

    Returns:
        One row per :data:`QUALITY_SIGNALS` key, in that order: ``signal``, ``label``,
        ``category`` (the detector category in the guardrails table), ``num_flagged``,
        ``num_checked`` (generation calls; for format errors, calls that asked for JSON),
        ``rate`` and its Wilson 95% interval ``rate_low``/``rate_high`` (null when nothing
        was checked).
    """
    categories = [category for category, _ in QUALITY_SIGNALS.values()]
    table = run_scoped(
        conn,
        scope,
        QUALITY_RATES_SQL,
        {"generation": list(GENERATION_OPERATIONS), "categories": categories},
    )
    counts = {row["category"]: row for row in table.to_pylist()}
    rows = []
    for signal, (category, label) in QUALITY_SIGNALS.items():
        k, n = counts[category]["num_flagged"], counts[category]["num_checked"]
        interval = wilson_interval(k, n)
        rows.append(
            {
                "signal": signal,
                "label": label,
                "category": category,
                "num_flagged": k,
                "num_checked": n,
                "rate": k / n if n else None,
                "rate_low": interval[0] if interval else None,
                "rate_high": interval[1] if interval else None,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "signal": pl.String,
            "label": pl.String,
            "category": pl.String,
            "num_flagged": pl.Int64,
            "num_checked": pl.Int64,
            "rate": pl.Float64,
            "rate_low": pl.Float64,
            "rate_high": pl.Float64,
        },
    )
