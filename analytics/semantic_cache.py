"""Semantic-cache opportunity: at each similarity threshold, the calls a cache keyed on the
input's embedding would have answered, the savings, and the risk of serving a wrong answer.

Calls, exclusions and the cache's behaviour are :mod:`analytics.cache`'s: a call that misses
stores its answer when it ends, the entry lives ``ttl`` from then and a hit does not refresh it.
A call is a *hit* at threshold *t* when a live entry of the same model and system prompt (and
user, with ``per_user``) has an input whose embedding's cosine similarity to this call's is at
least *t*; the answer served is that entry's. Which calls stored depends on which ones hit, so
each threshold is simulated on its own, in time order.

The **risk** at *t* is the share of hits whose served answer disagrees with the answer actually
given: the two answers' embeddings have cosine below ``answer_agreement``, or one got a thumbs
up and the other a thumbs down. The recommended threshold is the lowest whose disagreement
share is at most ``max_risk`` with 95% confidence (the Wilson interval's upper end; and at least
:data:`MIN_HITS` hits): 1 disagreeing hit in 21 is 4.8%, but could well be 20%, so a
recommendation needs enough hits to rule that out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from analytics.cache import CacheRules, cache_calls, ttl_ns
from analytics.cost import monthly_projection
from analytics.embeddings import DEFAULT_MODEL, Progress, embed_texts, unit_vectors
from analytics.feedback import thumbs_votes
from analytics.quality import wilson_interval
from analytics.scope import Scope
from store.catalog import data_dir_of

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MIN_HITS",
    "SemanticCache",
    "semantic_cache_opportunity",
    "simulate_semantic_cache",
]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
#: A threshold is recommended only with at least this many hits to judge its risk on.
MIN_HITS = 20


def simulate_semantic_cache(
    vectors: np.ndarray,
    starts_ns: np.ndarray,
    ends_ns: np.ndarray,
    stores: np.ndarray,
    ttl_ns: int,
    thresholds: Sequence[float],
    *,
    block: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """A semantic cache with a fixed time to live, run at every threshold over one group.

    Args:
        vectors: one unit-length input embedding per call, calls in start order.
        starts_ns, ends_ns: each call's start and end (integers, e.g. ns since the epoch).
        stores: whether a call that misses stores its answer (a failed one does not).
        ttl_ns: how long an entry lives after the call that stored it ended.
        thresholds: the similarity thresholds, each simulated on its own.
        block: calls compared at once (memory: ``block`` × the calls of one ``ttl``).

    Returns:
        (entry, similarity), each thresholds × calls: at a hit, the call whose stored answer is
        served and its similarity; at a miss, the most similar live entry (or -1 and -inf).

    >>> v = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    >>> entry, sim = simulate_semantic_cache(
    ...     v, np.array([0, 10, 20]), np.array([5, 15, 25]), np.ones(3, bool), 100, [0.5, 0.9])
    >>> entry.tolist(), sim.round(2).tolist()
    ([[-1, 0, 0], [-1, 0, 0]], [[-inf, 1.0, 0.6], [-inf, 1.0, 0.6]])
    """
    n, levels = len(vectors), np.asarray(thresholds, dtype=np.float64)
    entry = np.full((len(levels), n), -1, dtype=np.int64)
    similarity = np.full((len(levels), n), -np.inf)
    stored = np.zeros((len(levels), n), dtype=bool)
    if n == 0:
        return entry, similarity
    longest = int((ends_ns - starts_ns).max())
    every = np.arange(len(levels))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        # Entries that could be live in this block ended at most ttl before its first start.
        first = int(np.searchsorted(starts_ns, starts_ns[lo] - ttl_ns - longest, side="left"))
        # float32 dot products put identical texts at 1 ± 2e-7: round them to what they are.
        sims = np.round(vectors[lo:hi] @ vectors[first:hi].T, 6)
        start = starts_ns[lo:hi, None]
        end = ends_ns[None, first:hi]
        in_time = (end < start) & (start - end <= ttl_ns)
        for r in range(hi - lo):
            i = lo + r
            live = stored[:, first:hi] & in_time[r]
            masked = np.where(live, sims[r], -np.inf)
            best = masked.argmax(axis=1)
            value = masked[every, best]
            found = np.isfinite(value)
            entry[:, i] = np.where(found, first + best, -1)
            similarity[:, i] = value
            if stores[i]:
                stored[:, i] = ~(value >= levels)
    return entry, similarity


@dataclass(frozen=True)
class SemanticCache:
    """What a semantic cache would have done at each similarity threshold.

    ``by_threshold``: ``threshold``, ``num_hits``, ``hit_rate`` (over every call of the span
    compared), ``saved_cost_usd``, ``saved_latency_ms``, ``monthly_saving_usd``,
    ``num_disagreeing``, ``disagreement_rate`` (over hits) with ``disagreement_low`` /
    ``disagreement_high`` (Wilson 95%). ``examples``: for each threshold, the hits with a
    similarity just above it (below the next threshold), for a person to judge: ``threshold``,
    ``similarity``, ``input_text``, ``cached_input``, ``output_text``, ``cached_output``,
    ``answer_similarity``, ``disagrees``, ``trace_id``, ``cached_trace_id``, ``start_time``.
    """

    num_calls: int
    num_eligible: int
    num_compared: int
    by_threshold: pl.DataFrame
    examples: pl.DataFrame
    recommended: float | None
    trade_off: str
    ttl: timedelta
    answer_agreement: float
    max_risk: float
    notes: list[str] = field(default_factory=list)


_HIT_SCHEMA = {"threshold": pl.Float64, "row": pl.Int64, "neighbour": pl.Int64,
               "similarity": pl.Float64}  # fmt: skip


def _hits(
    eligible: pl.DataFrame, vectors: np.ndarray, rules: CacheRules, thresholds: list[float]
) -> pl.DataFrame:
    """Every hit at every threshold: ``threshold``, ``row`` (the call, a row of ``eligible``),
    ``neighbour`` (the row whose answer is served) and ``similarity``."""
    keys = ["model", "system_prompt_hash"] + (["user_id"] if rules.per_user else [])
    frame = eligible.with_row_index("_row")
    parts = []
    for _, group in frame.group_by(keys, maintain_order=True):
        rows = group["_row"].to_numpy()
        entry, similarity = simulate_semantic_cache(
            vectors[rows],
            group["start_time"].dt.epoch("ns").to_numpy(),
            group["end_time"].dt.epoch("ns").to_numpy(),
            ~group["failed"].to_numpy(),
            ttl_ns(rules),
            thresholds,
        )
        for level, threshold in enumerate(thresholds):
            hit = similarity[level] >= threshold
            parts.append(
                pl.DataFrame(
                    {
                        "threshold": np.full(int(hit.sum()), threshold),
                        "row": rows[hit],
                        "neighbour": rows[entry[level][hit]],
                        "similarity": similarity[level][hit],
                    },
                    schema=_HIT_SCHEMA,
                )
            )
    if not parts:
        return pl.DataFrame(schema=_HIT_SCHEMA)
    return pl.concat(parts)


def semantic_cache_opportunity(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    rules: CacheRules | None = None,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    answer_agreement: float = 0.8,
    max_risk: float = 0.05,
    max_calls: int = 100_000,
    num_examples: int = 3,
    model: str = DEFAULT_MODEL,
    progress: Progress | None = None,
) -> SemanticCache:
    """Hit rate, savings and risk of a semantic cache at each threshold (see the module
    docstring). With more than ``max_calls`` eligible calls, the most recent are simulated and
    the rates and the projection are of the span they cover."""
    rules = rules or CacheRules()
    levels = sorted(thresholds)
    if not levels or not all(0.0 < t <= 1.0 for t in levels):
        raise ValueError("thresholds must be in (0, 1]")
    data_dir = data_dir_of(conn)
    if data_dir is None:
        raise ValueError("the catalog has no data directory to cache embeddings in")
    calls = cache_calls(conn, scope, rules)
    eligible = calls.filter(pl.col("excluded").is_null())
    num_eligible = int(eligible["counted"].sum())
    notes: list[str] = []
    span_start = scope.start
    if eligible.height > max_calls:
        eligible = eligible.tail(max_calls)
        span_start = eligible["start_time"][0]
        eligible = eligible.with_columns(counted=pl.lit(True))
        notes.append(
            f"simulated the most recent {max_calls:,} of {num_eligible:,} calls, the cache empty "
            f"at {span_start:%Y-%m-%d %H:%M}: the rates and the projection are of that span"
        )
    counted = calls.filter(pl.col("counted") & (pl.col("start_time") >= span_start))
    texts = eligible["input_text"].to_list()
    vectors = (
        unit_vectors(
            embed_texts(texts, data_dir, model, progress=progress).vectors.astype(np.float32)
        )
        if texts
        else np.zeros((0, 1), dtype=np.float32)
    )
    hits = _hits(eligible, vectors, rules, levels)
    is_counted = eligible["counted"].to_numpy()
    hits = hits.filter(pl.Series(is_counted[hits["row"].to_numpy()]))
    hits = _judge_answers(conn, scope, rules, eligible, hits, data_dir, model, answer_agreement)
    days = (scope.end - span_start) / timedelta(days=1)
    rows = []
    for threshold in levels:
        at = hits.filter(pl.col("threshold") == threshold)
        saved = float(at["cost_usd"].fill_null(0.0).sum())
        disagreeing = int(at["disagrees"].sum())
        interval = wilson_interval(disagreeing, at.height) or (None, None)
        rows.append(
            {
                "threshold": threshold,
                "num_hits": at.height,
                "hit_rate": at.height / counted.height if counted.height else None,
                "saved_cost_usd": saved,
                "saved_latency_ms": float(at["duration_ms"].fill_null(0.0).sum()),
                "monthly_saving_usd": monthly_projection(saved, days),
                "num_disagreeing": disagreeing,
                "disagreement_rate": disagreeing / at.height if at.height else None,
                "disagreement_low": interval[0],
                "disagreement_high": interval[1],
            }
        )
    by_threshold = pl.DataFrame(rows, schema_overrides=_BY_THRESHOLD_TYPES)
    recommended, trade_off = _recommend(by_threshold, max_risk)
    return SemanticCache(
        num_calls=int(calls["counted"].sum()),
        num_eligible=num_eligible,
        num_compared=int(eligible["counted"].sum()),
        by_threshold=by_threshold,
        examples=_examples(hits, levels, num_examples),
        recommended=recommended,
        trade_off=trade_off,
        ttl=rules.ttl,
        answer_agreement=answer_agreement,
        max_risk=max_risk,
        notes=notes,
    )


_BY_THRESHOLD_TYPES = {
    "hit_rate": pl.Float64,
    "monthly_saving_usd": pl.Float64,
    "disagreement_rate": pl.Float64,
    "disagreement_low": pl.Float64,
    "disagreement_high": pl.Float64,
}


def _judge_answers(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    rules: CacheRules,
    eligible: pl.DataFrame,
    hits: pl.DataFrame,
    data_dir: Path,
    model: str,
    answer_agreement: float,
) -> pl.DataFrame:
    """``hits`` with both calls' details and the served answer beside the given one:
    ``answer_similarity`` and ``disagrees`` (answers apart, or opposite votes)."""
    calls = eligible.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    cached = calls.select(
        pl.col("row").alias("neighbour"),
        pl.col("input_text").alias("cached_input"),
        pl.col("output_text").alias("cached_output"),
        pl.col("trace_id").alias("cached_trace_id"),
    )
    hits = hits.join(calls, on="row", how="left").join(cached, on="neighbour", how="left")
    if hits.is_empty():
        return hits.with_columns(
            pl.lit(None, pl.Float64).alias("answer_similarity"), pl.lit(False).alias("disagrees")
        )
    # Each answer embedded once, each (call, entry) pair compared once: a call hits at several
    # thresholds, mostly with the same entry.
    pairs = hits.select("row", "neighbour").unique()
    involved = np.unique(np.concatenate([pairs["row"].to_numpy(), pairs["neighbour"].to_numpy()]))
    outputs = eligible["output_text"].to_list()
    vectors = unit_vectors(
        embed_texts([outputs[i] or "" for i in involved], data_dir, model).vectors.astype(
            np.float32
        )
    )
    position = np.searchsorted(involved, pairs["row"].to_numpy())
    cached_position = np.searchsorted(involved, pairs["neighbour"].to_numpy())
    pairs = pairs.with_columns(
        pl.Series(
            "answer_similarity",
            np.einsum("ij,ij->i", vectors[position], vectors[cached_position]).astype(np.float64),
        )
    )
    warm = replace(scope, start=scope.start - rules.ttl)
    votes = (
        thumbs_votes(conn, warm)
        .group_by("trace_id")
        .agg(pl.col("down").any().alias("down"), (~pl.col("down")).any().alias("up"))
        .with_columns(
            pl.when(pl.col("down")).then(pl.lit(-1)).when(pl.col("up")).then(pl.lit(1))
            .otherwise(pl.lit(0)).alias("vote")
        )
        .select("trace_id", "vote")
    )  # fmt: skip
    hits = (
        hits.join(pairs, on=["row", "neighbour"], how="left")
        .join(votes, on="trace_id", how="left")
        .join(votes.rename({"trace_id": "cached_trace_id", "vote": "cached_vote"}),
              on="cached_trace_id", how="left")
    )  # fmt: skip
    opposite = (pl.col("vote").fill_null(0) * pl.col("cached_vote").fill_null(0)) < 0
    return hits.with_columns(
        ((pl.col("answer_similarity") < answer_agreement) | opposite).alias("disagrees")
    )


def _recommend(by_threshold: pl.DataFrame, max_risk: float) -> tuple[float | None, str]:
    # The interval's upper end, not the share itself: 1 disagreeing hit in 21 is 4.8%, but
    # could well be 20%.
    usable = by_threshold.filter(
        (pl.col("num_hits") >= MIN_HITS) & (pl.col("disagreement_high") <= max_risk)
    )
    if usable.is_empty():
        return None, (
            f"No threshold has enough hits to show that at most {max_risk:.0%} of them would "
            "serve a disagreeing answer (the 95% interval's upper end): a semantic cache is not "
            "recommended on this traffic."
        )
    row = usable.row(0, named=True)
    saving = row["monthly_saving_usd"]
    saving_text = "" if saving is None else f", about ${saving:,.2f} a month"
    # Only said when a lower threshold was tried (hits only grow as the threshold falls, so a
    # lower one was left out for its risk).
    lower = (
        f" Lower thresholds hit more but risk more than {max_risk:.0%}."
        if row["threshold"] > by_threshold["threshold"].min()
        else ""
    )
    return row["threshold"], (
        f"At similarity {row['threshold']:.2f} a semantic cache would have answered "
        f"{row['hit_rate']:.1%} of calls{saving_text}; {row['disagreement_rate']:.1%} of those "
        f"hits (95% up to {row['disagreement_high']:.1%}) would have served an answer that "
        f"disagrees with the one given.{lower}"
    )


def _examples(hits: pl.DataFrame, thresholds: list[float], num: int) -> pl.DataFrame:
    columns = [
        "similarity", "input_text", "cached_input", "output_text", "cached_output",
        "answer_similarity", "disagrees", "trace_id", "cached_trace_id", "start_time",
    ]  # fmt: skip
    parts = []
    for i, threshold in enumerate(thresholds):
        upper = thresholds[i + 1] if i + 1 < len(thresholds) else np.inf
        band = hits.filter((pl.col("threshold") == threshold) & (pl.col("similarity") < upper))
        parts.append(band.sort("similarity", "span_id").head(num).select("threshold", *columns))
    return pl.concat(parts)
