"""Cache opportunity: how much of the traffic a response cache would have answered, what
that would have saved, and (:mod:`analytics.semantic_cache`) what a semantic one would risk.

**Which calls.** Text-generating model calls with a user input. A call is *excluded* (never
cached, never served from a cache) when its route matches one of ``exclude_routes`` (globs), or
its input matches the time-sensitive pattern ("today", "latest", "right now", …) or the
user-specific one ("my account", "my invoice", …): see :class:`CacheRules`. With ``per_user``
the cache key includes the user, so user-specific requests can be kept in (a cache per user).

**How the cache behaves.** A call that misses stores its answer when it ends (a failed call
stores nothing); the entry lives ``ttl`` from then, and a hit serves it without refreshing it
(a fixed time to live, as Redis ``SET … EX`` and GPTCache do): a repeat served every 50 minutes
with a 1-hour time to live misses again once the stored answer is an hour old. The calls of the
``ttl`` before the window are read too, so entries stored then serve the window's first calls;
only the window's calls are counted.

**Exact cache.** Two calls are the same request when they ask the same model with the same
system prompt, the same input messages (every message attribute the span carries, not only the
last user message) and the same parameters (temperature, max tokens, …).

Savings are the latency and cost of the hits (a cache lookup is taken as free), and a 30-day
projection of the cost from the window's rate.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import cast

import duckdb
import numpy as np
import polars as pl

from analytics.cost import monthly_projection
from analytics.scope import Scope, run_scoped
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "TIME_SENSITIVE",
    "USER_SPECIFIC",
    "CacheRules",
    "ExactCache",
    "cache_calls",
    "exact_cache_opportunity",
    "simulate_exact_cache",
    "ttl_ns",
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
    """What a cache would hold and for how long (see the module docstring). The patterns are
    regular expressions (RE2, case-insensitive with ``(?i)``); an empty one excludes nothing."""

    ttl: timedelta = timedelta(hours=1)
    time_sensitive: str = TIME_SENSITIVE
    user_specific: str = USER_SPECIFIC
    exclude_routes: tuple[str, ...] = ()
    per_user: bool = False

    def __post_init__(self) -> None:
        if self.ttl <= timedelta(0):
            raise ValueError(f"the time to live must be positive, got {self.ttl}")
        for what, pattern in (("time-sensitive", self.time_sensitive),
                              ("user-specific", self.user_specific)):  # fmt: skip
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"the {what} pattern {pattern!r}: {exc}") from None


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
    """The calls a cache would see, in time order, from ``ttl`` before the window to its end:
    ``trace_id``, ``span_id``, ``start_time``, ``end_time``, ``duration_ms``, ``failed``,
    ``model``, ``system_prompt_hash``, ``user_id``, ``route``, ``input_text``, ``output_text``,
    ``cost_usd``, ``input_key`` (the exact-cache key), ``excluded`` (``route``,
    ``time_sensitive``, ``user_specific`` or null) and ``counted`` (the call is in the window;
    the others only fill the cache)."""
    rules = rules or CacheRules()
    warm = replace(scope, start=scope.start - rules.ttl)
    table = run_scoped(conn, warm, CACHE_CALLS_SQL, _params(rules))
    calls = cast(pl.DataFrame, pl.from_arrow(table))
    return calls.with_columns((pl.col("start_time") >= scope.start).alias("counted"))


def simulate_exact_cache(
    keys: Sequence[str], starts_ns: np.ndarray, ends_ns: np.ndarray, stores: np.ndarray, ttl_ns: int
) -> np.ndarray:
    """Which calls an exact cache with a fixed time to live answers.

    Args:
        keys: each call's cache key, the calls in start order.
        starts_ns, ends_ns: each call's start and end (integers, e.g. ns since the epoch).
        stores: whether a call that misses stores its answer (a failed one does not).
        ttl_ns: how long an entry lives after the call that stored it ended.

    Returns:
        One bool per call: a hit (an entry of its key, stored by a call that ended before it
        started, at most ``ttl_ns`` before).

    >>> ns = np.array
    >>> simulate_exact_cache(["a", "a", "a", "a"], ns([0, 20, 40, 90]), ns([10, 30, 50, 95]),
    ...                      ns([True, True, True, True]), 50).tolist()
    [False, True, True, False]
    """
    hits = np.zeros(len(keys), dtype=bool)
    stored: dict[str, list[int]] = {}  # per key, the end times of the misses that stored
    for i, key in enumerate(keys):
        ends = stored.setdefault(key, [])
        start = int(starts_ns[i])
        # The newest entry stored before this call started (strictly: not its own answer).
        newest = bisect.bisect_left(ends, start)
        if newest and start - ends[newest - 1] <= ttl_ns:
            hits[i] = True
        elif stores[i]:
            bisect.insort(ends, int(ends_ns[i]))
    return hits


def ttl_ns(rules: CacheRules) -> int:
    """The rules' time to live in nanoseconds."""
    return int(rules.ttl / timedelta(microseconds=1)) * 1000


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


def _exact_hits(calls: pl.DataFrame, rules: CacheRules) -> pl.Series:
    """Per call (in ``calls``' order, which is start order): a hit of the exact cache."""
    kept = calls.with_row_index("_row").filter(pl.col("excluded").is_null())
    hits = simulate_exact_cache(
        kept["input_key"].to_list(),
        kept["start_time"].dt.epoch("ns").to_numpy(),
        kept["end_time"].dt.epoch("ns").to_numpy(),
        ~kept["failed"].to_numpy(),
        ttl_ns(rules),
    )
    column = np.zeros(calls.height, dtype=bool)
    column[kept["_row"].to_numpy()] = hits
    return pl.Series("hit", column)


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
    everything = cache_calls(conn, scope, rules)
    calls = everything.with_columns(_exact_hits(everything, rules)).filter(pl.col("counted"))
    hits = calls
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
