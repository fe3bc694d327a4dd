"""Routing opportunity: the intents where a cheaper model already does as well as the one most
of the traffic pays for, and what routing them there would save.

**Intents** are k-means topics of the user inputs (:func:`analytics.drift.cluster_topics`, the
Drift page's clustering) over a seeded sample of the scope's text-generating calls. Per intent
and model (the model requested: what a router chooses): the share of calls, mean cost per call, median latency, thumbs-down rate (votes on
the request, Wilson 95%) and, where an eval run scored production's answers (``flywheel eval
run --recorded reference``), the mean score of ``eval_metric``.

**Does as well.** In each intent, every model cheaper than the intent's most expensive model
with at least ``min_calls`` calls is compared with it. Quality is judged *non-inferior* when
the 95% interval of the difference (cheaper − expensive) in thumbs-down rate (Newcombe) lies
below ``margin``, each with at least ``min_votes`` votes, and, when both have at least
``min_votes`` eval scores, the 95% bootstrap interval of the difference in mean eval score lies
above −``margin``. With no quality signal at all there is no recommendation. The monthly
saving is the price difference per call times the expensive model's calls in the intent,
scaled from the sample to all calls and to 30 days.

The default margin is 5 points: showing a cheaper model within 2 points of a 10% thumbs-down
rate takes about 1,700 votes on each model, more than most intents get in a month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import duckdb
import numpy as np
import polars as pl

from analytics.drift import cluster_topics
from analytics.embeddings import DEFAULT_MODEL, Progress, embed_texts
from analytics.feedback import newcombe_interval, thumbs_votes
from analytics.quality import wilson_interval
from analytics.scope import Scope, run_scoped
from store.catalog import data_dir_of, query
from store.schema import GENERATION_OPERATIONS

__all__ = ["Routing", "bootstrap_mean_difference", "routing_opportunity"]

# A seeded sample of the text-generating calls with an input, and how many there are in all.
ROUTING_CALLS_SQL = """
WITH calls AS (
    SELECT s.trace_id, s.span_id, s.input_text, coalesce(s.request_model, c.model) AS model,
        c.total_cost_usd AS cost_usd,
        c.duration_ms
    FROM scoped_spans AS s
    JOIN scoped_llm_calls AS c ON c.trace_id = s.trace_id AND c.span_id = s.span_id
    WHERE list_contains($generation, s.operation)
        AND s.input_text IS NOT NULL AND s.input_text <> '' AND c.model IS NOT NULL
)
SELECT *, count(*) OVER () AS num_total
FROM calls
ORDER BY hash(span_id, $seed), span_id
LIMIT $sample_size
"""

# The mean score of one evaluator per production model call (the case's source span: a score
# belongs to the call that answered, not to the other calls of its request), from runs that
# scored what production answered (recorded references): the latest result of each case.
EVAL_SCORES_SQL = """
WITH runs AS (
    SELECT run_id, dataset, version FROM eval_runs
    WHERE project = $project
        AND json_extract_string(target, '$.kind') = 'recorded'
        AND json_extract_string(target, '$.source') = 'reference'
), latest AS (
    SELECT r.run_id, r.case_id, r.scores
    FROM eval_results AS r
    WHERE r.project = $project AND r.run_id IN (SELECT run_id FROM runs)
    QUALIFY row_number() OVER (
        PARTITION BY r.run_id, r.case_id ORDER BY r.time DESC, r.result_id DESC
    ) = 1
)
SELECT c.source_span_id AS span_id, avg(CAST(l.scores[$metric] AS DOUBLE)) AS eval_score
FROM latest AS l
JOIN runs AS u USING (run_id)
JOIN eval_cases AS c
    ON c.project = $project AND c.dataset = u.dataset AND c.version = u.version
    AND c.case_id = l.case_id
WHERE c.source_span_id IS NOT NULL AND l.scores[$metric] IS NOT NULL
GROUP BY c.source_span_id
"""


def bootstrap_mean_difference(
    a: np.ndarray, b: np.ndarray, *, num: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of mean(a) − mean(b), the two resampled apart.

    >>> bootstrap_mean_difference(np.array([1.0, 1.0]), np.array([0.0, 0.0]))
    (1.0, 1.0)
    """
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, a.size, (num, a.size))].mean(axis=1)
    means_b = b[rng.integers(0, b.size, (num, b.size))].mean(axis=1)
    low, high = np.quantile(means_a - means_b, [0.025, 0.975])
    return float(low), float(high)


@dataclass(frozen=True)
class Routing:
    """Intents, their models, and where routing to a cheaper model would save.

    ``intents``: ``intent``, ``num_calls`` (sampled), ``share``, ``examples`` (3 inputs nearest
    the centre). ``by_model``: ``intent``, ``model``, ``num_calls``, ``share_of_intent``,
    ``mean_cost_usd``, ``median_latency_ms``, ``votes``, ``thumbs_down``, ``thumbs_down_rate``,
    ``down_low``, ``down_high``, ``num_scored``, ``eval_score``. ``candidates``: every
    (intent, expensive model, cheaper model) compared: ``intent``, ``from_model``,
    ``to_model``, ``from_cost_usd``, ``to_cost_usd``, ``down_difference``, ``down_low``,
    ``down_high``, ``eval_difference``, ``eval_low``, ``eval_high``, ``monthly_calls``,
    ``monthly_saving_usd``, ``recommended``, ``reason``. ``recommendations``: the recommended
    rows, largest saving first (one per intent: its largest saving).
    """

    num_calls: int
    num_sampled: int
    intents: pl.DataFrame
    by_model: pl.DataFrame
    candidates: pl.DataFrame
    recommendations: pl.DataFrame
    margin: float
    eval_metric: str | None


def _eval_scores(conn: duckdb.DuckDBPyConnection, project: str, metric: str) -> pl.DataFrame:
    table = query(conn.cursor(), EVAL_SCORES_SQL, {"project": project, "metric": metric})
    return cast(pl.DataFrame, pl.from_arrow(table))


def _model_stats(calls: pl.DataFrame) -> pl.DataFrame:
    stats = (
        calls.group_by("intent", "model")
        .agg(
            pl.len().alias("num_calls"),
            pl.col("cost_usd").mean().alias("mean_cost_usd"),
            pl.col("duration_ms").median().alias("median_latency_ms"),
            pl.col("down").is_not_null().sum().alias("votes"),
            pl.col("down").fill_null(False).sum().alias("thumbs_down"),
            pl.col("eval_score").is_not_null().sum().alias("num_scored"),
            pl.col("eval_score").mean().alias("eval_score"),
        )
        .with_columns(
            (pl.col("num_calls") / pl.col("num_calls").sum().over("intent")).alias(
                "share_of_intent"
            ),
            pl.when(pl.col("votes") > 0)
            .then(pl.col("thumbs_down") / pl.col("votes"))
            .alias("thumbs_down_rate"),
        )
    )
    bounds = [
        wilson_interval(int(k), int(n)) or (None, None)
        for k, n in zip(stats["thumbs_down"], stats["votes"], strict=True)
    ]
    return stats.with_columns(
        pl.Series("down_low", [b[0] for b in bounds], pl.Float64),
        pl.Series("down_high", [b[1] for b in bounds], pl.Float64),
    ).sort("intent", "mean_cost_usd", descending=[False, True], nulls_last=True)


def _compare(
    calls: pl.DataFrame,
    stats: pl.DataFrame,
    *,
    margin: float,
    min_calls: int,
    min_votes: int,
    scale: float,
    seed: int,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (intent,), group in stats.group_by("intent", maintain_order=True):
        priced = group.filter(pl.col("mean_cost_usd").is_not_null())
        if priced.height < 2:
            continue
        top = priced.row(0, named=True)  # the most expensive model of the intent
        if top["num_calls"] < min_calls:
            continue
        mine = calls.filter((pl.col("intent") == intent) & (pl.col("model") == top["model"]))
        for other in priced.iter_rows(named=True):
            if other["model"] == top["model"] or other["mean_cost_usd"] >= top["mean_cost_usd"]:
                continue
            theirs = calls.filter(
                (pl.col("intent") == intent) & (pl.col("model") == other["model"])
            )
            row = _judge(top, other, mine, theirs, margin, min_calls, min_votes, seed)
            per_call = top["mean_cost_usd"] - other["mean_cost_usd"]
            row.update(
                intent=intent, from_model=top["model"], to_model=other["model"],
                from_cost_usd=top["mean_cost_usd"], to_cost_usd=other["mean_cost_usd"],
                monthly_calls=top["num_calls"] * scale,
                monthly_saving_usd=per_call * top["num_calls"] * scale,
            )  # fmt: skip
            rows.append(row)
    return rows


def _judge(
    top: dict[str, Any],
    other: dict[str, Any],
    mine: pl.DataFrame,
    theirs: pl.DataFrame,
    margin: float,
    min_calls: int,
    min_votes: int,
    seed: int,
) -> dict[str, Any]:
    """Is ``other`` non-inferior to ``top`` on the votes and eval scores both have?"""
    out: dict[str, Any] = dict.fromkeys(
        ("down_difference", "down_low", "down_high", "eval_difference", "eval_low", "eval_high")
    )
    reasons: list[str] = []
    signals = 0
    ok = other["num_calls"] >= min_calls
    if not ok:
        reasons.append(f"{other['num_calls']} calls to {other['model']} (fewer than {min_calls})")
    if top["votes"] >= min_votes and other["votes"] >= min_votes:
        signals += 1
        interval = newcombe_interval(
            int(other["thumbs_down"]),
            int(other["votes"]),
            int(top["thumbs_down"]),
            int(top["votes"]),
        )
        assert interval is not None
        out["down_difference"] = other["thumbs_down_rate"] - top["thumbs_down_rate"]
        out["down_low"], out["down_high"] = interval
        if interval[1] > margin:
            ok = False
            reasons.append(
                f"thumbs-down rate {out['down_difference']:+.1%} (95% up to {interval[1]:+.1%}, "
                f"margin {margin:.0%})"
            )
    a = theirs["eval_score"].drop_nulls().to_numpy()
    b = mine["eval_score"].drop_nulls().to_numpy()
    if a.size >= min_votes and b.size >= min_votes:
        signals += 1
        low, high = bootstrap_mean_difference(a, b, seed=seed)
        out["eval_difference"] = float(a.mean() - b.mean())
        out["eval_low"], out["eval_high"] = low, high
        if low < -margin:
            ok = False
            reasons.append(f"eval score {out['eval_difference']:+.3f} (95% down to {low:+.3f})")
    if signals == 0:
        ok = False
        reasons.append(f"fewer than {min_votes} votes or eval scores on each model")
    out["recommended"] = ok
    out["reason"] = "does as well" if ok else "; ".join(reasons)
    return out


_CANDIDATE_SCHEMA = {
    "intent": pl.Int64, "from_model": pl.String, "to_model": pl.String,
    "from_cost_usd": pl.Float64, "to_cost_usd": pl.Float64, "down_difference": pl.Float64,
    "down_low": pl.Float64, "down_high": pl.Float64, "eval_difference": pl.Float64,
    "eval_low": pl.Float64, "eval_high": pl.Float64, "monthly_calls": pl.Float64,
    "monthly_saving_usd": pl.Float64, "recommended": pl.Boolean, "reason": pl.String,
}  # fmt: skip


def routing_opportunity(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    *,
    num_intents: int = 8,
    sample_size: int = 5000,
    margin: float = 0.05,
    min_calls: int = 30,
    min_votes: int = 20,
    eval_metric: str | None = "judge",
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    progress: Progress | None = None,
) -> Routing:
    """Intents of the scope's inputs, their models' cost and quality, and the cheaper models
    that already do as well (see the module docstring)."""
    data_dir = data_dir_of(conn)
    if data_dir is None:
        raise ValueError("the catalog has no data directory to cache embeddings in")
    params = {"generation": list(GENERATION_OPERATIONS), "sample_size": sample_size, "seed": seed}
    calls = cast(pl.DataFrame, pl.from_arrow(run_scoped(conn, scope, ROUTING_CALLS_SQL, params)))
    num_total = int(calls["num_total"][0]) if calls.height else 0
    if calls.height < num_intents:
        raise ValueError(f"{calls.height} calls are too few for {num_intents} intents")
    texts = calls["input_text"].to_list()
    vectors = embed_texts(texts, data_dir, model, progress=progress).vectors
    labels, distances = cluster_topics(vectors, num_intents, seed)
    votes = thumbs_votes(conn, scope).group_by("span_id").agg(pl.col("down").any())
    calls = calls.with_columns(
        pl.Series("intent", labels.astype(np.int64)), pl.Series("distance", distances)
    ).join(votes, on="span_id", how="left")
    if eval_metric:
        scores = _eval_scores(conn, scope.project, eval_metric)
        calls = calls.join(scores, on="span_id", how="left")
    else:
        calls = calls.with_columns(pl.lit(None, pl.Float64).alias("eval_score"))
    intents = (
        calls.sort("distance")
        .group_by("intent")
        .agg(pl.len().alias("num_calls"), pl.col("input_text").unique(maintain_order=True)
             .head(3).alias("examples"))
        .with_columns((pl.col("num_calls") / calls.height).alias("share"))
        .sort("num_calls", "intent", descending=[True, False])
    )  # fmt: skip
    stats = _model_stats(calls)
    days = (scope.end - scope.start) / timedelta(days=1)
    scale = (num_total / calls.height) * (30.0 / days) if days > 0 else 0.0
    rows = _compare(
        calls, stats, margin=margin, min_calls=min_calls, min_votes=min_votes, scale=scale,
        seed=seed,
    )  # fmt: skip
    candidates = pl.DataFrame(rows, schema=_CANDIDATE_SCHEMA)
    recommendations = (
        candidates.filter(pl.col("recommended"))
        .sort("monthly_saving_usd", descending=True)
        .unique("intent", keep="first", maintain_order=True)
    )
    return Routing(
        num_calls=num_total,
        num_sampled=calls.height,
        intents=intents,
        by_model=stats,
        candidates=candidates,
        recommendations=recommendations,
        margin=margin,
        eval_metric=eval_metric,
    )
