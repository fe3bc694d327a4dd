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

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
import polars as pl

from analytics.embeddings import DEFAULT_MODEL, Progress, embed_texts
from analytics.scope import Scope, run_scoped
from store.catalog import data_dir_of
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "CALIBRATION",
    "DRIFT_METHODS",
    "EmbeddingDrift",
    "TopicShift",
    "cluster_topics",
    "compare_embeddings",
    "drift_by_day",
    "embedding_drift",
    "sample_texts",
    "topic_shift",
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
_DAY = timedelta(days=1)


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


def _cache_dir(conn: duckdb.DuckDBPyConnection) -> Path:
    """Where embeddings are cached: the catalog's lake."""
    data_dir = data_dir_of(conn)
    if data_dir is None:
        raise ValueError("the catalog has no data directory to cache embeddings in")
    return data_dir


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
    progress: Progress | None = None,
    calibrate: bool = True,
) -> EmbeddingDrift:
    """Compare the embedded texts of two windows (see the module docstring); ``progress(done,
    total)`` follows the texts that have to be embedded."""
    data_dir = _cache_dir(conn)
    ref_texts = sample_texts(conn, reference, field, sample_size, seed)
    cur_texts = sample_texts(conn, current, field, sample_size, seed)
    if len(ref_texts) < 4 or len(cur_texts) < 2:
        raise ValueError(
            f"too few texts to compare: {len(ref_texts)} in the reference, {len(cur_texts)} now"
        )
    ref = embed_texts(ref_texts, data_dir, model, progress=progress)
    cur = embed_texts(cur_texts, data_dir, model, progress=progress)
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


def drift_by_day(
    conn: duckdb.DuckDBPyConnection,
    reference: Scope,
    current: Scope,
    field: DriftField = "input",
    *,
    sample_size: int = 1000,
    sample_per_day: int = 300,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """The MMD of each UTC day of ``current`` against ``reference`` (the daily drift series),
    each with a threshold calibrated on the reference at the day's sample size.

    Returns:
        Columns ``day`` (its start), ``score``, ``threshold``, ``drift_detected``,
        ``num_texts``; days with fewer than 20 texts are left out.
    """
    data_dir = _cache_dir(conn)
    ref_texts = sample_texts(conn, reference, field, sample_size, seed)
    days: list[tuple[datetime, list[str]]] = []
    day = current.start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < current.end:
        window = replace(current, start=max(day, current.start), end=min(day + _DAY, current.end))
        texts = sample_texts(conn, window, field, sample_per_day, seed)
        if len(texts) >= 20:
            days.append((day, texts))
        day += _DAY
    # one read of the cache (and one batch to embed) for the reference and every day
    vectors = embed_texts(
        ref_texts + [t for _, texts in days for t in texts], data_dir, model, progress=progress
    )
    ref = vectors.vectors[: len(ref_texts)]
    rows = []
    offset = len(ref_texts)
    own_at: dict[int, float] = {}  # the calibration depends on the day's size only
    for day, texts in days:
        day_vectors = vectors.vectors[offset : offset + len(texts)]
        offset += len(texts)
        score = _score("mmd", ref, day_vectors)
        # A day's sample is small and MMD's noise grows as samples shrink: calibrate on the
        # reference's earliest and latest texts, as many as the day has.
        n = min(len(texts), len(ref) // 2)
        own = own_at[n] if n in own_at else own_at.setdefault(n, _score("mmd", ref[:n], ref[-n:]))
        threshold = max(CALIBRATION * own, DRIFT_METHODS["mmd"][1] or 0.0)
        rows.append(
            {"day": day, "score": score, "threshold": threshold,
             "drift_detected": score > threshold, "num_texts": len(texts)}
        )  # fmt: skip
    return pl.DataFrame(
        rows,
        schema={"day": pl.Datetime("us", "UTC"), "score": pl.Float64, "threshold": pl.Float64,
                "drift_detected": pl.Boolean, "num_texts": pl.Int64},
    )  # fmt: skip


def cluster_topics(
    vectors: np.ndarray, num_topics: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """k-means topics (scikit-learn) of embedded texts: each text's topic (0 … num_topics − 1)
    and its distance to the topic's centre (the nearest texts are the topic's examples)."""
    from sklearn.cluster import KMeans

    kmeans = KMeans(n_clusters=num_topics, n_init=4, random_state=seed).fit(vectors)
    labels = np.asarray(kmeans.labels_)
    distances = np.linalg.norm(vectors - kmeans.cluster_centers_[labels], axis=1)
    return labels, distances


@dataclass(frozen=True)
class TopicShift:
    """Topic clusters of two windows' texts: per cluster its share in each window and example
    texts (nearest its centre, from the current window when it has any), most grown first; and
    a 2-D map (PCA) of every text, labelled by window and cluster."""

    clusters: pl.DataFrame
    points: pl.DataFrame


def topic_shift(
    conn: duckdb.DuckDBPyConnection,
    reference: Scope,
    current: Scope,
    field: DriftField = "input",
    *,
    num_topics: int = 8,
    sample_size: int = 1000,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    progress: Progress | None = None,
) -> TopicShift:
    """What moved between two windows: k-means topics (scikit-learn) over both windows'
    embedded texts, each with its share of each window, the change, and examples.

    ``clusters`` columns: ``topic``, ``share_reference``, ``share_current``, ``change``
    (current − reference share), ``num_reference``, ``num_current``, ``examples`` (3 texts).
    ``points`` columns: ``x``, ``y`` (PCA), ``window`` (reference/current), ``topic``, ``text``.
    """
    from sklearn.decomposition import PCA

    data_dir = _cache_dir(conn)
    ref_texts = sample_texts(conn, reference, field, sample_size, seed)
    cur_texts = sample_texts(conn, current, field, sample_size, seed)
    texts = ref_texts + cur_texts
    if len(texts) < num_topics:
        raise ValueError(f"{len(texts)} texts are too few for {num_topics} topics")
    vectors = embed_texts(texts, data_dir, model, progress=progress).vectors
    windows = np.array(["reference"] * len(ref_texts) + ["current"] * len(cur_texts))
    labels, distances = cluster_topics(vectors, num_topics, seed)
    rows = []
    for topic in range(num_topics):
        members = labels == topic
        n_ref = int((members & (windows == "reference")).sum())
        n_cur = int((members & (windows == "current")).sum())
        pool = (
            np.flatnonzero(members & (windows == "current")) if n_cur else np.flatnonzero(members)
        )
        nearest = pool[np.argsort(distances[pool])]
        examples: list[str] = []
        for index in nearest:
            if texts[index] not in examples:
                examples.append(texts[index])
            if len(examples) == 3:
                break
        share_ref = n_ref / max(len(ref_texts), 1)
        share_cur = n_cur / max(len(cur_texts), 1)
        rows.append(
            {"topic": topic, "share_reference": share_ref, "share_current": share_cur,
             "change": share_cur - share_ref, "num_reference": n_ref, "num_current": n_cur,
             "examples": examples}
        )  # fmt: skip
    clusters = pl.DataFrame(rows).sort("change", descending=True)
    xy = PCA(n_components=2, random_state=seed).fit_transform(vectors)
    points = pl.DataFrame(
        {"x": xy[:, 0], "y": xy[:, 1], "window": windows.tolist(), "topic": labels.tolist(),
         "text": texts}
    )  # fmt: skip
    return TopicShift(clusters, points)
