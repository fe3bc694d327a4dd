"""Cache opportunity: how much of the traffic an exact or a semantic response cache would have
answered, what that would have saved, and what it would have risked.

**Which calls.** Text-generating model calls with a user input. A call is *excluded* (never
cached, never served from a cache) when its route matches one of ``exclude_routes`` (globs), or
its input matches the time-sensitive pattern ("today", "latest", "right now", …) or the
user-specific one ("my account", "my invoice", …): see :class:`CacheRules`. A failed call is
never stored. With ``per_user`` the cache key includes the user, so user-specific requests can
be kept in (a cache per user).

**Exact cache.** Two calls are the same request when they ask the same model with the same
system prompt, the same input messages (every message attribute the span carries, not only the
last user message) and the same parameters (temperature, max tokens, …). A call is a *hit*
when an identical call had finished before it started, the latest of them at most ``ttl``
before it (an entry lives ``ttl`` after the last call that stored or read it).

**Semantic cache.** A call is a hit at threshold *t* when an earlier call to the same model with
the same system prompt, finished at most ``ttl`` before it started, has an input whose
embedding's cosine similarity to this call's is at least *t*; the answer served would be that
nearest earlier call's. The **risk** at *t* is the share of hits whose served answer disagrees
with the answer actually given: the two answers' embeddings have cosine below
``answer_agreement``, or one got a thumbs up and the other a thumbs down. The recommended
threshold is the lowest whose disagreement share is at most ``max_risk`` with 95% confidence
(the Wilson interval's upper end; and at least :data:`MIN_HITS` hits): 1 disagreeing hit in 21
is 4.8%, but could well be 20%, so a recommendation needs enough hits to rule that out.

Savings are the latency and cost of the hits (a cache lookup is taken as free), and a 30-day
projection of the cost from the window's rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import cast

import duckdb
import numpy as np
import polars as pl

from analytics.cost import monthly_projection
from analytics.embeddings import DEFAULT_MODEL, Progress, embed_texts
from analytics.feedback import thumbs_votes
from analytics.quality import wilson_interval
from analytics.scope import Scope, run_scoped
from store.catalog import data_dir_of
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MIN_HITS",
    "CacheRules",
    "ExactCache",
    "SemanticCache",
    "cache_calls",
    "exact_cache_opportunity",
    "nearest_earlier",
    "semantic_cache_opportunity",
]

#: Inputs that ask about the present: an answer cached an hour ago may be wrong now.
TIME_SENSITIVE = (
    r"(?i)\b(today|tonight|tomorrow|yesterday|now|right now|currently|at the moment|latest|"
    r"this (morning|week|month|year)|what time|status of)\b"
)
#: Inputs about the user's own data: another user's cached answer is wrong (or a leak).
USER_SPECIFIC = (
    r"(?i)\b(my|our) (account|order|orders|invoice|invoices|bill|billing|subscription|plan|"
    r"payment|card|password|data|team|workspace|ticket|balance|profile)\b"
)
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
#: A threshold is recommended only with at least this many hits to judge its risk on.
MIN_HITS = 20
#: Span attributes that carry a call's input messages or parameters (any convention): the
#: exact cache key hashes them all. Prefixes end with a dot.
INPUT_ATTRIBUTES = (
    "gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.prompt", "ai.prompt.messages",
    "ai.prompt", "langfuse.observation.input", "input.value", "traceloop.entity.input",
    "llm.invocation_parameters",
)  # fmt: skip
INPUT_PREFIXES = ("llm.input_messages.", "gen_ai.prompt.", "gen_ai.request.", "ai.settings.")


@dataclass(frozen=True)
class CacheRules:
    """What a cache would hold and for how long (see the module docstring)."""

    ttl: timedelta = timedelta(hours=1)
    time_sensitive: str = TIME_SENSITIVE
    user_specific: str = USER_SPECIFIC
    exclude_routes: tuple[str, ...] = ()
    per_user: bool = False

    def __post_init__(self) -> None:
        if self.ttl <= timedelta(0):
            raise ValueError(f"the time to live must be positive, got {self.ttl}")


# The scope's text-generating calls with an input, their cache key and why one is excluded.
CACHE_CALLS_SQL = """
SELECT
    s.trace_id,
    s.span_id,
    s.start_time,
    s.end_time,
    s.duration_ms,
    coalesce(s.status_code = 'ERROR', false) AS failed,
    coalesce(s.request_model, s.response_model) AS model,
    s.system_prompt_hash,
    coalesce(s.user_id, r.user_id) AS user_id,
    r.route,
    s.input_text,
    s.output_text,
    c.total_cost_usd AS cost_usd,
    md5(concat_ws(chr(31),
        coalesce(s.request_model, s.response_model, ''),
        coalesce(s.system_prompt_hash, ''),
        s.input_text,
        CAST(list_sort(list_filter(map_entries(s.attributes), lambda e:
            (list_contains($input_keys, e.key)
             OR len(list_filter($input_prefixes, lambda p: starts_with(e.key, p))) > 0)
            AND e.key NOT IN ('gen_ai.request.model', 'ai.settings.model')
        )) AS VARCHAR),
        CASE WHEN $per_user THEN coalesce(s.user_id, r.user_id, '') ELSE '' END
    )) AS input_key,
    CASE
        WHEN len(list_filter($route_globs, lambda g: r.route GLOB g)) > 0 THEN 'route'
        WHEN $time_pattern <> '' AND regexp_matches(s.input_text, $time_pattern)
            THEN 'time_sensitive'
        WHEN NOT $per_user AND $user_pattern <> '' AND regexp_matches(s.input_text, $user_pattern)
            THEN 'user_specific'
    END AS excluded
FROM scoped_spans AS s
JOIN scoped_llm_calls AS c ON c.trace_id = s.trace_id AND c.span_id = s.span_id
LEFT JOIN scoped_roots AS r ON r.trace_id = s.trace_id
WHERE list_contains($generation, s.operation) AND s.input_text IS NOT NULL AND s.input_text <> ''
ORDER BY s.start_time, s.span_id
"""


def _params(rules: CacheRules) -> dict[str, object]:
    return {
        "generation": list(GENERATION_OPERATIONS),
        "input_keys": list(INPUT_ATTRIBUTES),
        "input_prefixes": list(INPUT_PREFIXES),
        "per_user": rules.per_user,
        "route_globs": list(rules.exclude_routes),
        "time_pattern": rules.time_sensitive,
        "user_pattern": rules.user_specific,
    }


def cache_calls(
    conn: duckdb.DuckDBPyConnection, scope: Scope, rules: CacheRules | None = None
) -> pl.DataFrame:
    """The calls a cache would see, in time order: ``trace_id``, ``span_id``, ``start_time``,
    ``end_time``, ``duration_ms``, ``failed``, ``model``, ``system_prompt_hash``, ``user_id``,
    ``route``, ``input_text``, ``output_text``, ``cost_usd``, ``input_key`` (the exact-cache
    key) and ``excluded`` (``route``, ``time_sensitive``, ``user_specific`` or null)."""
    table = run_scoped(conn, scope, CACHE_CALLS_SQL, _params(rules or CacheRules()))
    return cast(pl.DataFrame, pl.from_arrow(table))


@dataclass(frozen=True)
class ExactCache:
    """What an exact cache would have done over a scope.

    ``hit_rate`` is hits over every call (excluded ones included: they reach the model);
    ``repeats`` lists the most repeated inputs: ``input_text``, ``model``, ``num_calls``,
    ``num_hits``, ``saved_cost_usd``.
    """

    num_calls: int
    num_excluded: dict[str, int]
    num_hits: int
    hit_rate: float | None
    saved_cost_usd: float
    saved_latency_ms: float
    monthly_saving_usd: float | None
    ttl: timedelta
    repeats: pl.DataFrame


def _exact_hits(calls: pl.DataFrame, ttl: timedelta) -> pl.Series:
    """Per call (in ``calls``' order): a hit of an exact cache — the latest identical call
    that ended before it started (and so stored or read the entry) ended at most ``ttl``
    before it. Failed calls ask but store nothing, like the semantic cache's."""
    frame = calls.with_row_index("_row")
    kept = frame.filter(pl.col("excluded").is_null())
    entries = kept.filter(~pl.col("failed")).select(
        "input_key", pl.col("end_time").alias("_entry_end")
    )
    # Not the previous identical call alone: it may still be running while an older one's
    # answer is cached. Strictly before: a call that took no time is not its own entry.
    asked = (
        kept.select("_row", "input_key", "start_time")
        .sort("start_time")
        .join_asof(
            entries.sort("_entry_end"), left_on="start_time", right_on="_entry_end",
            by="input_key", strategy="backward", allow_exact_matches=False,
            check_sortedness=False,  # sorted just above
        )
        .select("_row", (pl.col("start_time") - pl.col("_entry_end") <= ttl).alias("hit"))
    )  # fmt: skip
    hits = frame.join(asked, on="_row", how="left")
    return hits.sort("_row")["hit"].fill_null(False)


def _days(scope: Scope) -> float:
    return (scope.end - scope.start) / timedelta(days=1)


def exact_cache_opportunity(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    rules: CacheRules | None = None,
    *,
    num_repeats: int = 10,
) -> ExactCache:
    """The share of model calls an exact cache would have answered, and what it would have
    saved (see the module docstring for the key and the time to live)."""
    rules = rules or CacheRules()
    calls = cache_calls(conn, scope, rules)
    hits = calls.with_columns(_exact_hits(calls, rules.ttl).alias("hit"))
    hit_rows = hits.filter(pl.col("hit"))
    saved_cost = float(hit_rows["cost_usd"].fill_null(0.0).sum())
    excluded = (
        hits.filter(pl.col("excluded").is_not_null()).group_by("excluded").len().sort("excluded")
    )
    repeats = (
        hits.filter(pl.col("excluded").is_null())
        .group_by("input_key")
        .agg(
            pl.col("input_text").first(),
            pl.col("model").first(),
            pl.len().alias("num_calls"),
            pl.col("hit").sum().alias("num_hits"),
            pl.col("cost_usd").filter(pl.col("hit")).sum().alias("saved_cost_usd"),
        )
        .filter(pl.col("num_calls") > 1)
        .sort(["num_hits", "num_calls", "input_key"], descending=[True, True, False])
        .drop("input_key")
        .head(num_repeats)
    )
    return ExactCache(
        num_calls=calls.height,
        num_excluded={row["excluded"]: row["len"] for row in excluded.to_dicts()},
        num_hits=hit_rows.height,
        hit_rate=hit_rows.height / calls.height if calls.height else None,
        saved_cost_usd=saved_cost,
        saved_latency_ms=float(hit_rows["duration_ms"].fill_null(0.0).sum()),
        monthly_saving_usd=monthly_projection(saved_cost, _days(scope)),
        ttl=rules.ttl,
        repeats=repeats,
    )


def nearest_earlier(
    vectors: np.ndarray,
    starts_ns: np.ndarray,
    ends_ns: np.ndarray,
    ttl_ns: int,
    *,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row (sorted by start), the most similar earlier row that had ended before it
    started, at most ``ttl_ns`` before: (index or -1, cosine similarity or -inf).

    Args:
        vectors: one unit-length embedding per row, rows in start-time order.
        starts_ns, ends_ns: each row's start and end (integers, e.g. ns since the epoch).
        ttl_ns: how long an entry lives after the call that stored it ended.
        block: rows compared at once (memory is ``block`` × the rows in one ``ttl``).

    Returns:
        (index of the neighbour, its similarity), -1 and -inf where there is none.

    >>> v = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> index, sim = nearest_earlier(v, np.array([0, 10, 20]), np.array([5, 15, 25]), 100)
    >>> index.tolist(), [round(float(s), 2) for s in sim]
    ([-1, 0, 1], [-inf, 0.0, 0.8])
    """
    n = len(vectors)
    best_index = np.full(n, -1, dtype=np.int64)
    best_sim = np.full(n, -np.inf, dtype=np.float64)
    if n == 0:
        return best_index, best_sim
    longest = max(int((ends_ns - starts_ns).max()), 0)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        # Candidates start no earlier than ttl + the longest call before this block's first.
        first = int(np.searchsorted(starts_ns, starts_ns[lo] - ttl_ns - longest, side="left"))
        sims = vectors[lo:hi] @ vectors[first:hi].T
        start = starts_ns[lo:hi, None]
        end = ends_ns[None, first:hi]
        # Only rows before this one: a call that took no time must not answer itself.
        earlier = np.arange(first, hi)[None, :] < np.arange(lo, hi)[:, None]
        valid = earlier & (end <= start) & (start - end <= ttl_ns)
        sims = np.where(valid, sims, -np.inf)
        column = np.argmax(sims, axis=1)
        best = sims[np.arange(hi - lo), column]
        found = np.isfinite(best)
        best_index[lo:hi] = np.where(found, first + column, -1)
        best_sim[lo:hi] = best
    return best_index, best_sim


@dataclass(frozen=True)
class SemanticCache:
    """What a semantic cache would have done at each similarity threshold.

    ``by_threshold``: ``threshold``, ``num_hits``, ``hit_rate`` (over every call),
    ``saved_cost_usd``, ``saved_latency_ms``, ``monthly_saving_usd``, ``num_disagreeing``,
    ``disagreement_rate`` (over hits) with ``disagreement_low``/``disagreement_high`` (Wilson
    95%). ``examples``: for each threshold, the hits with a similarity just above it (below
    the next threshold), for a person to judge: ``threshold``, ``similarity``, ``input_text``,
    ``cached_input``, ``output_text``, ``cached_output``, ``answer_similarity``,
    ``disagrees``, ``trace_id``, ``cached_trace_id``, ``start_time``.
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


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return cast(np.ndarray, vectors / np.where(norms > 0, norms, 1.0))


def _neighbours(eligible: pl.DataFrame, vectors: np.ndarray, rules: CacheRules) -> pl.DataFrame:
    """``eligible`` with each call's nearest earlier call of its group (same model and system
    prompt, and user with ``per_user``): ``neighbour`` (row or -1) and ``similarity``."""
    keys = ["model", "system_prompt_hash"] + (["user_id"] if rules.per_user else [])
    frame = eligible.with_row_index("_row")
    neighbour = np.full(frame.height, -1, dtype=np.int64)
    similarity = np.full(frame.height, -np.inf)
    ttl_ns = int(rules.ttl / timedelta(microseconds=1)) * 1000
    for _, group in frame.group_by(keys, maintain_order=True):
        rows = group["_row"].to_numpy()
        # A failed call is never stored: it can ask, not answer. Its end is put in the far
        # past (out of every call's ttl) rather than the far future, which would widen every
        # block's candidate window to the whole history.
        starts = group["start_time"].dt.epoch("ns").to_numpy()
        ends = np.where(
            group["failed"].to_numpy(), np.iinfo(np.int64).min // 2,
            group["end_time"].dt.epoch("ns").to_numpy(),
        )  # fmt: skip
        index, sims = nearest_earlier(vectors[rows], starts, ends, ttl_ns)
        neighbour[rows] = np.where(index >= 0, rows[np.maximum(index, 0)], -1)
        # float32 dot products put identical texts at 1 ± 2e-7: round them to what they are
        similarity[rows] = np.where(np.isfinite(sims), np.round(sims, 6), sims)
    return eligible.with_columns(
        pl.Series("neighbour", neighbour), pl.Series("similarity", similarity)
    )


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
    docstring); the most recent ``max_calls`` eligible calls are compared."""
    rules = rules or CacheRules()
    thresholds = sorted(thresholds)
    if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
        raise ValueError("thresholds must be in (0, 1]")
    data_dir = data_dir_of(conn)
    if data_dir is None:
        raise ValueError("the catalog has no data directory to cache embeddings in")
    calls = cache_calls(conn, scope, rules)
    eligible = calls.filter(pl.col("excluded").is_null())
    num_eligible = eligible.height
    notes: list[str] = []
    if eligible.height > max_calls:
        notes.append(f"compared the most recent {max_calls:,} of {eligible.height:,} calls")
        eligible = eligible.tail(max_calls)
    texts = eligible["input_text"].to_list()
    vectors = (
        _unit(embed_texts(texts, data_dir, model, progress=progress).vectors.astype(np.float32))
        if texts
        else np.zeros((0, 1))
    )
    paired = _neighbours(eligible, vectors, rules)
    hits = paired.filter(pl.col("similarity") >= thresholds[0])
    hits = _judge_answers(conn, scope, eligible, hits, data_dir, model, answer_agreement)
    days = _days(scope)
    rows = []
    for threshold in thresholds:
        at = hits.filter(pl.col("similarity") >= threshold)
        saved = float(at["cost_usd"].fill_null(0.0).sum())
        disagreeing = int(at["disagrees"].sum())
        interval = wilson_interval(disagreeing, at.height) or (None, None)
        rows.append(
            {
                "threshold": threshold,
                "num_hits": at.height,
                "hit_rate": at.height / calls.height if calls.height else None,
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
        num_calls=calls.height,
        num_eligible=num_eligible,
        num_compared=eligible.height,
        by_threshold=by_threshold,
        examples=_examples(hits, thresholds, num_examples),
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
    eligible: pl.DataFrame,
    hits: pl.DataFrame,
    data_dir: Path,
    model: str,
    answer_agreement: float,
) -> pl.DataFrame:
    """``hits`` with the served answer beside the given one: ``answer_similarity`` and
    ``disagrees`` (answers apart, or opposite votes)."""
    cached = eligible.with_row_index("neighbour").select(
        pl.col("neighbour").cast(pl.Int64),
        pl.col("input_text").alias("cached_input"),
        pl.col("output_text").alias("cached_output"),
        pl.col("trace_id").alias("cached_trace_id"),
    )
    hits = hits.join(cached, on="neighbour", how="left")
    if hits.is_empty():
        return hits.with_columns(
            pl.lit(None, pl.Float64).alias("answer_similarity"), pl.lit(False).alias("disagrees")
        )
    given = [t or "" for t in hits["output_text"].to_list()]
    served = [t or "" for t in hits["cached_output"].to_list()]
    vectors = _unit(embed_texts(given + served, data_dir, model).vectors.astype(np.float32))
    n = hits.height
    answer_similarity = np.einsum("ij,ij->i", vectors[:n], vectors[n:])
    votes = (
        thumbs_votes(conn, scope)
        .group_by("trace_id")
        .agg(pl.col("down").any().alias("down"), (~pl.col("down")).any().alias("up"))
        .with_columns(
            pl.when(pl.col("down")).then(pl.lit(-1)).when(pl.col("up")).then(pl.lit(1))
            .otherwise(pl.lit(0)).alias("vote")
        )
        .select("trace_id", "vote")
    )  # fmt: skip
    hits = (
        hits.with_columns(pl.Series("answer_similarity", answer_similarity))
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
        # The top band has no upper bound: float32 similarities of equal texts can pass 1.
        upper = thresholds[i + 1] if i + 1 < len(thresholds) else np.inf
        band = hits.filter((pl.col("similarity") >= threshold) & (pl.col("similarity") < upper))
        parts.append(
            band.sort("similarity", "span_id").head(num).select(columns)
            .with_columns(pl.lit(threshold).alias("threshold"))
        )  # fmt: skip
    return pl.concat(parts).select("threshold", *columns)
