"""Embedding drift: do this window's user inputs (or model outputs) read like the reference's?

Texts of the text-generating model calls of each window are sampled (a stated sample size,
seeded, so a result can be reproduced), embedded through :mod:`analytics.embeddings` (cached)
and compared with one of Evidently's embedding-drift methods, called directly on the two
frames (an Evidently report would also compute a t-SNE plot, 20-50 s here): ``mmd`` (maximum
mean discrepancy, RBF kernel), ``distance`` (euclidean distance between mean embeddings),
``model`` (ROC AUC of a classifier telling the windows apart) or ``ratio`` (share of drifted
components).

**Threshold.** Conversations drift a little every day (users come back with their own topics),
so a fixed threshold either misses a real change or flags every day. For ``mmd`` and
``distance`` the threshold is calibrated on the reference itself: :data:`CALIBRATION` times the
score of the reference's first half (in time) against its second half, and never below the
method's floor. On the sample data, MMD of user inputs is 0.0097 when the new topic arrives
against 0.0004 within the reference, and 0.0008-0.0017 between ordinary weeks against
0.0014-0.0033 within them; the classifier's ROC AUC is 0.58-0.63 for both, which is why ``mmd``
is the default. ``model`` and ``ratio`` use Evidently's fixed thresholds (0.55, 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from analytics.embeddings import DEFAULT_MODEL, embed_texts
from analytics.scope import Scope, run_scoped
from store.catalog import data_dir_of
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "CALIBRATION",
    "DRIFT_METHODS",
    "EmbeddingDrift",
    "compare_embeddings",
    "embedding_drift",
    "sample_texts",
]

DriftField = Literal["input", "output"]
#: method -> (Evidently's fixed threshold, floor of a calibrated threshold or None: fixed only)
DRIFT_METHODS: dict[str, tuple[float, float | None]] = {
    "mmd": (0.015, 0.002),
    "distance": (0.2, 0.05),
    "model": (0.55, None),
    "ratio": (0.2, None),
}
#: How many times the reference's own drift a window must show to count as drift.
CALIBRATION = 3.0


@dataclass(frozen=True)
class EmbeddingDrift:
    """One comparison: the method, threshold (and the reference's own score it was calibrated
    on), score, verdict, sample sizes, and how many texts had to be embedded."""

    field: str
    method: str
    threshold: float
    score: float
    drift_detected: bool
    reference_self_score: float | None
    num_reference: int
    num_current: int
    num_embedded: int
    model: str


# A seeded hash of the span id orders the calls at random, the same way for the same seed;
# the sample comes back in time order (the calibration splits it in time).
SAMPLE_TEXTS_SQL = """
SELECT text FROM (
    SELECT {column} AS text, start_time, span_id
    FROM scoped_spans
    WHERE list_contains($generation, operation) AND {column} IS NOT NULL AND {column} <> ''
    ORDER BY hash(span_id, $seed), span_id
    LIMIT $sample_size
)
ORDER BY start_time, span_id
"""


def sample_texts(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    field: DriftField = "input",
    sample_size: int = 1000,
    seed: int = 0,
) -> list[str]:
    """Up to ``sample_size`` input (last user message) or output texts of the text-generating
    model calls in scope: a uniform sample without replacement (by a ``seed``-ed hash), in
    time order."""
    column = {"input": "input_text", "output": "output_text"}[field]
    table = run_scoped(
        conn,
        scope,
        SAMPLE_TEXTS_SQL.format(column=column),
        {"generation": list(GENERATION_OPERATIONS), "sample_size": sample_size, "seed": seed},
    )
    texts: list[str] = table.column("text").to_pylist()
    return texts


def _score(method: str, reference: np.ndarray, current: np.ndarray) -> float:
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as methods

    drift = {
        "mmd": lambda: methods.mmd(bootstrap=False),
        "distance": lambda: methods.distance(bootstrap=False),
        "model": lambda: methods.model(bootstrap=False),
        "ratio": lambda: methods.ratio(),
    }[method]()
    # The methods add columns to the frames they are given: each call gets its own.
    score, _, _ = drift(pd.DataFrame(current.copy()), pd.DataFrame(reference.copy()))
    return float(score)


def compare_embeddings(
    reference: np.ndarray, current: np.ndarray, method: str = "mmd", *, calibrate: bool = True
) -> tuple[float, float, float | None]:
    """Score two embedding matrices (rows in time order for the calibration).

    Returns:
        (score, threshold, the reference's own score or None when the threshold is fixed).
    """
    if method not in DRIFT_METHODS:
        raise ValueError(f"method must be one of {', '.join(DRIFT_METHODS)}, not {method!r}")
    fixed, floor = DRIFT_METHODS[method]
    score = _score(method, reference, current)
    if not calibrate or floor is None or len(reference) < 4:
        return score, fixed, None
    half = len(reference) // 2
    own = _score(method, reference[:half], reference[half:])
    return score, max(CALIBRATION * own, floor), own


def embedding_drift(
    conn: duckdb.DuckDBPyConnection,
    reference: Scope,
    current: Scope,
    field: DriftField = "input",
    method: str = "mmd",
    *,
    sample_size: int = 1000,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    calibrate: bool = True,
) -> EmbeddingDrift:
    """Compare the embedded texts of two windows (see the module docstring)."""
    data_dir = data_dir_of(conn)
    if data_dir is None:
        raise ValueError("the catalog has no data directory to cache embeddings in")
    ref_texts = sample_texts(conn, reference, field, sample_size, seed)
    cur_texts = sample_texts(conn, current, field, sample_size, seed)
    if len(ref_texts) < 4 or len(cur_texts) < 2:
        raise ValueError(
            f"too few texts to compare: {len(ref_texts)} in the reference, {len(cur_texts)} now"
        )
    ref = embed_texts(ref_texts, data_dir, model)
    cur = embed_texts(cur_texts, data_dir, model)
    score, threshold, own = compare_embeddings(
        ref.vectors, cur.vectors, method, calibrate=calibrate
    )
    return EmbeddingDrift(
        field=field,
        method=method,
        threshold=threshold,
        score=score,
        drift_detected=score > threshold,
        reference_self_score=own,
        num_reference=len(ref_texts),
        num_current=len(cur_texts),
        num_embedded=ref.num_embedded + cur.num_embedded,
        model=model,
    )
