"""Column drift: did the shape of the traffic change between a reference window and now?

A seeded sample of each window's text-generating model calls (a stated sample size, the same
way for the same seed) is compared column by column with Evidently's ``ValueDrift``, which picks
the statistical test from the column's type and the sample size and says which it used:

* **Numerical** (:data:`NUMERICAL`: input and output length in characters, input and output
  tokens, duration, TTFT): the Kolmogorov-Smirnov test (p-value below 0.05 is drift) for samples
  of at most 1,000 rows, the normed Wasserstein distance (0.1 or more is drift) above, where a
  p-value would call the smallest shift significant.
* **Categorical** (:data:`CATEGORICAL`: the language of the user's input, the route, the model):
  always the Jensen-Shannon distance of the two windows' shares (0.1 or more is drift). Evidently
  would pick chi-square for small samples, which compares against the reference's counts and
  reports p = 0 as soon as a value the reference never had appears, even 3 times in 900 (a
  failed call named by its requested model); a distance weighs a new value by its share.

**Language** is identified from the input text with py3langid (a naive Bayes model over byte
n-grams shipped in the package, 97 languages, about 9,000 texts/s on one core). Short texts
("ok", "thanks!") cannot be told apart; a text whose most likely language has a normalised
probability below :data:`LANGUAGE_MIN_CONFIDENCE` is ``und`` (undetermined).

A column without values in one of the windows (TTFT when nothing streamed) is listed with the
reason instead of a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import duckdb
import polars as pl

from analytics.scope import Scope, run_scoped
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "CATEGORICAL",
    "CATEGORICAL_METHOD",
    "LANGUAGE_MIN_CONFIDENCE",
    "LANGUAGE_PREFIX",
    "NUMERICAL",
    "ColumnDrift",
    "column_drift",
    "detect_language",
    "sample_calls",
]

#: column -> what it is, as the page names it
NUMERICAL: dict[str, str] = {
    "input_chars": "Input length (characters)",
    "output_chars": "Output length (characters)",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
    "duration_ms": "Latency (ms)",
    "ttft_ms": "TTFT (ms)",
}
CATEGORICAL: dict[str, str] = {
    "language": "Input language",
    "route": "Route",
    "model": "Model",
}
#: How much of a text language identification reads.
LANGUAGE_PREFIX = 200
#: Evidently's name for the test every categorical column gets.
CATEGORICAL_METHOD = "jensenshannon"
#: How a method Evidently was given by its id is named in results (it names the ones it picks).
METHOD_NAMES = {"jensenshannon": "Jensen-Shannon distance"}
#: Below this normalised probability a text's language is ``und``.
LANGUAGE_MIN_CONFIDENCE = 0.5

# A seeded hash of the span id orders the calls at random, the same way for the same seed.
SAMPLE_CALLS_SQL = """
SELECT
    s.start_time,
    length(s.input_text) AS input_chars,
    length(s.output_text) AS output_chars,
    s.input_tokens,
    s.output_tokens,
    s.duration_ms,
    s.ttft_ms,
    s.input_text,
    r.route,
    coalesce(s.response_model, s.request_model) AS model
FROM scoped_spans AS s
LEFT JOIN scoped_roots AS r USING (project, trace_id)
WHERE list_contains($generation, s.operation)
ORDER BY hash(s.span_id, $seed), s.span_id
LIMIT $sample_size
"""


@cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(
        MODEL_FILE, norm_probs=True, min_confidence=LANGUAGE_MIN_CONFIDENCE
    )


def detect_language(text: str | None) -> str | None:
    """The ISO 639-1 code of ``text``'s language, ``und`` when too unsure, None without text.

    Only the first :data:`LANGUAGE_PREFIX` characters are read (a question's language is clear
    by then; the cost grows with the length)."""
    if text is None or not text.strip():
        return None
    language: str = _identifier().classify(text[:LANGUAGE_PREFIX])[0]
    return language


def sample_calls(
    conn: duckdb.DuckDBPyConnection, scope: Scope, sample_size: int = 5000, seed: int = 0
) -> pl.DataFrame:
    """Up to ``sample_size`` text-generating model calls in scope (a uniform sample without
    replacement, by a ``seed``-ed hash), one column per compared column."""
    table = run_scoped(
        conn,
        scope,
        SAMPLE_CALLS_SQL,
        {"generation": list(GENERATION_OPERATIONS), "sample_size": sample_size, "seed": seed},
    )
    calls = pl.from_arrow(table)
    assert isinstance(calls, pl.DataFrame)
    seen: dict[str | None, str | None] = {}  # inputs repeat: identify each once
    language = [
        seen[text] if text in seen else seen.setdefault(text, detect_language(text))
        for text in calls["input_text"].to_list()
    ]
    return calls.with_columns(pl.Series("language", language, dtype=pl.String)).select(
        "start_time", *NUMERICAL, *CATEGORICAL
    )


@dataclass(frozen=True)
class ColumnDrift:
    """Per column (``columns``): ``column``, ``label``, ``kind`` (numerical/categorical),
    ``method`` (the test Evidently used), ``threshold``, ``score``, ``drift_detected``, a
    summary of each window (``reference``/``current``: the median, or the most common value
    and its share), ``num_reference``/``num_current`` (rows with a value) and ``note`` (why a
    column was not tested). ``samples``: the compared rows with a ``window`` column, for
    drawing each column's distributions."""

    columns: pl.DataFrame
    samples: pl.DataFrame


def _summary(values: pl.Series, kind: str) -> str:
    if values.is_empty():
        return "–"
    if kind == "numerical":
        median = values.median()
        assert isinstance(median, float | int)
        return f"median {median:,.4g}"
    counts = values.value_counts(sort=True)
    top, count = counts.row(0)
    return f"{top} {count / len(values):.0%}"


def _evidently(
    reference: pl.DataFrame, current: pl.DataFrame, columns: list[str]
) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(
        numerical_columns=[c for c in columns if c in NUMERICAL],
        categorical_columns=[c for c in columns if c in CATEGORICAL],
    )

    def dataset(frame: pl.DataFrame) -> Any:
        # Evidently reads pandas; integer columns with nulls become floats with NaN.
        return Dataset.from_pandas(frame.select(columns).to_pandas(), data_definition=definition)

    report = Report(
        [ValueDrift(column=c, method=CATEGORICAL_METHOD if c in CATEGORICAL else None)
         for c in columns],
        include_tests=True,
    )  # fmt: skip
    snapshot = report.run(dataset(current), dataset(reference)).dict()
    results: dict[str, Any] = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        results[config["column"]] = {
            "method": METHOD_NAMES.get(config["method"], config["method"]),
            "threshold": float(config["threshold"]),
            "score": float(metric["value"]),
        }
    for test in snapshot["tests"]:
        column = test["metric_config"]["params"]["column"]
        results[column]["drift_detected"] = test["status"] == "FAIL"
    return results


def column_drift(
    conn: duckdb.DuckDBPyConnection,
    reference: Scope,
    current: Scope,
    *,
    sample_size: int = 5000,
    seed: int = 0,
) -> ColumnDrift:
    """Compare each column of :data:`NUMERICAL` and :data:`CATEGORICAL` between two windows
    (see the module docstring); drifted columns first, then by column order."""
    ref = sample_calls(conn, reference, sample_size, seed)
    cur = sample_calls(conn, current, sample_size, seed)
    if ref.is_empty() or cur.is_empty():
        raise ValueError(
            f"too few model calls to compare: {ref.height} in the reference, {cur.height} now"
        )
    kinds = {c: "numerical" for c in NUMERICAL} | {c: "categorical" for c in CATEGORICAL}
    labels = NUMERICAL | CATEGORICAL
    testable = [
        c for c in kinds if ref[c].drop_nulls().len() >= 2 and cur[c].drop_nulls().len() >= 2
    ]
    tested = _evidently(ref, cur, testable) if testable else {}
    rows = []
    for column, kind in kinds.items():
        ref_values, cur_values = ref[column].drop_nulls(), cur[column].drop_nulls()
        result = tested.get(column)
        rows.append(
            {"column": column, "label": labels[column], "kind": kind,
             "method": result["method"] if result else None,
             "threshold": result["threshold"] if result else None,
             "score": result["score"] if result else None,
             "drift_detected": result["drift_detected"] if result else None,
             "reference": _summary(ref_values, kind), "current": _summary(cur_values, kind),
             "num_reference": ref_values.len(), "num_current": cur_values.len(),
             "note": None if result else "fewer than 2 values in a window"}
        )  # fmt: skip
    order = {c: i for i, c in enumerate(kinds)}
    columns = (
        pl.DataFrame(rows)
        .with_columns(pl.col("column").replace_strict(order).alias("_order"))
        .sort([pl.col("drift_detected").fill_null(False), "_order"], descending=[True, False])
        .drop("_order")
    )
    samples = pl.concat(
        [ref.with_columns(window=pl.lit("reference")), cur.with_columns(window=pl.lit("current"))]
    )
    return ColumnDrift(columns, samples)
