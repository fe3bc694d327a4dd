"""Explicit feedback: how much users tell us, how often it is a thumbs-down, where, and why.

**What counts.** A *request* is a trace in scope with at least one text-generating model call
(``chat``, ``text_completion``, ``generate_content``); its *answer* is the last such call to
end. Feedback is read from the ``feedback`` table for the requests in scope whenever it arrived
(late feedback, days after the trace, counts for the trace's time). A *vote* is a thumbs record;
a user who votes twice on the same answer counts once, with their latest vote. A vote that names
a model-call span is about that call (its model, prompt, TTFT); one that names none is about the
request's answer.

**Rates.** The thumbs-down rate is down votes ÷ votes, with a Wilson 95% interval. A segment
(model, route, system prompt, provider) is compared with the rest of the scope by the difference
of their rates, with Newcombe's interval for a difference of proportions (method 10, built from
the two Wilson intervals); an interval that excludes 0 is a difference the votes support.

**Drivers.** :func:`thumbs_down_drivers` fits a logistic regression (scikit-learn) of a vote
being down on the answer's latency, TTFT, tokens, guardrail hits, model, route and system
prompt: numeric features standardised (log of latency, TTFT and tokens), categories one-hot
against their most common value. Effects are odds ratios (per standard deviation, or against
the reference category) with 95% bootstrap intervals (resampling the training votes), and the
model's quality is its ROC AUC on a held-out quarter of the votes. These are associations in
observational data, not causes: a slow model may also be the one used for hard questions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, cast

import duckdb
import numpy as np
import polars as pl

from analytics.latency import check_bucket
from analytics.quality import wilson_interval
from analytics.scope import Scope, run_scoped
from analytics.traces import GUARDRAIL_TRIGGERED_SQL
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "DRIVER_FEATURES",
    "FEEDBACK_SEGMENTS",
    "DriverModel",
    "FeedbackSummary",
    "feedback_by_segment",
    "feedback_by_time",
    "feedback_summary",
    "newcombe_interval",
    "thumbs_down_drivers",
    "thumbs_votes",
]

FeedbackSegment = Literal["model", "route", "prompt", "provider"]
#: segment -> column of :func:`thumbs_votes`
FEEDBACK_SEGMENTS: dict[str, str] = {
    "model": "model",
    "route": "route",
    "prompt": "system_prompt_hash",
    "provider": "provider",
}
#: Numeric features of the driver model (logged ones are marked) and the categorical ones.
DRIVER_FEATURES: dict[str, str] = {
    "ttft_ms": "log",
    "duration_ms": "log",
    "input_tokens": "log",
    "output_tokens": "log",
    "guardrail_hits": "linear",
    "model": "category",
    "route": "category",
    "system_prompt_hash": "category",
}

# The requests in scope and their answer (the last text-generating call to end).
_REQUESTS_CTE = """
answers AS (
    SELECT
        trace_id,
        arg_max(
            struct_pack(
                span_id := span_id, model := model, provider := provider,
                system_prompt_hash := system_prompt_hash, ttft_ms := ttft_ms,
                duration_ms := duration_ms, input_tokens := input_tokens,
                output_tokens := output_tokens
            ),
            end_time
        ) AS a
    FROM scoped_llm_calls
    WHERE list_contains($generation, operation)
    GROUP BY trace_id
), requests AS (
    SELECT t.trace_id, t.start_time, t.name AS route, t.user_id, t.session_id, answers.a
    FROM scoped_traces AS t
    JOIN answers USING (trace_id)
), request_feedback AS (
    SELECT f.*
    FROM scoped_trace_feedback AS f
    WHERE f.trace_id IN (SELECT trace_id FROM requests)
), votes AS (
    SELECT trace_id, span_id, arg_max(value, time) AS thumbs
    FROM request_feedback
    WHERE kind = 'thumbs'
    GROUP BY trace_id, span_id, coalesce(user_id, '')
)
"""

VOTES_SQL = f"""
WITH {_REQUESTS_CTE}, calls AS (
    SELECT span_id, trace_id, model, provider, system_prompt_hash, ttft_ms, duration_ms,
        input_tokens, output_tokens
    FROM scoped_llm_calls
), hits AS (
    SELECT trace_id, count(*) AS guardrail_hits
    FROM scoped_trace_guardrails
    WHERE {GUARDRAIL_TRIGGERED_SQL} AND trace_id IN (SELECT trace_id FROM requests)
    GROUP BY trace_id
)
SELECT
    r.trace_id,
    coalesce(c.span_id, r.a.span_id) AS span_id,
    r.start_time,
    v.thumbs < 0 AS down,
    r.route,
    r.session_id,
    coalesce(c.model, r.a.model) AS model,
    coalesce(c.provider, r.a.provider) AS provider,
    coalesce(c.system_prompt_hash, r.a.system_prompt_hash) AS system_prompt_hash,
    coalesce(c.ttft_ms, r.a.ttft_ms) AS ttft_ms,
    coalesce(c.duration_ms, r.a.duration_ms) AS duration_ms,
    coalesce(c.input_tokens, r.a.input_tokens) AS input_tokens,
    coalesce(c.output_tokens, r.a.output_tokens) AS output_tokens,
    coalesce(h.guardrail_hits, 0) AS guardrail_hits
FROM votes AS v
JOIN requests AS r USING (trace_id)
LEFT JOIN calls AS c ON c.span_id = v.span_id AND c.trace_id = v.trace_id
LEFT JOIN hits AS h USING (trace_id)
ORDER BY r.start_time, r.trace_id, span_id
"""


def _params() -> dict[str, object]:
    return {"generation": list(GENERATION_OPERATIONS)}


def thumbs_votes(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Every vote on a request in scope (see the module docstring), oldest request first.

    Returns:
        Columns ``trace_id``, ``span_id`` (the call voted on), ``start_time`` (the request's),
        ``down`` (bool), ``route``, ``session_id``, ``model``, ``provider``,
        ``system_prompt_hash``, ``ttft_ms``, ``duration_ms``, ``input_tokens``,
        ``output_tokens`` and ``guardrail_hits`` (triggered guardrail results in the trace).
    """
    return cast(pl.DataFrame, pl.from_arrow(run_scoped(conn, scope, VOTES_SQL, _params())))


@dataclass(frozen=True)
class FeedbackSummary:
    """Explicit feedback on the requests in scope."""

    num_requests: int
    num_with_feedback: int
    thumbs_up: int
    thumbs_down: int
    thumbs_down_rate: float | None
    thumbs_down_interval: tuple[float, float] | None
    num_ratings: int
    mean_rating: float | None
    num_comments: int
    num_edits: int
    num_copies: int
    num_shares: int
    num_reports: int

    @property
    def feedback_rate(self) -> float | None:
        """Requests with any explicit feedback ÷ requests."""
        return self.num_with_feedback / self.num_requests if self.num_requests else None


SUMMARY_SQL = f"""
WITH {_REQUESTS_CTE}
SELECT
    (SELECT count(*) FROM requests) AS num_requests,
    (SELECT count(DISTINCT trace_id) FROM request_feedback) AS num_with_feedback,
    (SELECT count(*) FILTER (WHERE thumbs > 0) FROM votes) AS thumbs_up,
    (SELECT count(*) FILTER (WHERE thumbs < 0) FROM votes) AS thumbs_down,
    count(*) FILTER (WHERE kind = 'rating') AS num_ratings,
    avg(value) FILTER (WHERE kind = 'rating') AS mean_rating,
    count(*) FILTER (WHERE kind = 'comment') AS num_comments,
    count(*) FILTER (WHERE kind = 'edit') AS num_edits,
    count(*) FILTER (WHERE kind = 'copy') AS num_copies,
    count(*) FILTER (WHERE kind = 'share') AS num_shares,
    count(*) FILTER (WHERE kind = 'report') AS num_reports
FROM request_feedback
"""


def feedback_summary(conn: duckdb.DuckDBPyConnection, scope: Scope) -> FeedbackSummary:
    """Requests, the share with feedback, votes and the thumbs-down rate (Wilson 95%), ratings
    and the count of each other kind of feedback."""
    [row] = run_scoped(conn, scope, SUMMARY_SQL, _params()).to_pylist()
    up, down = row["thumbs_up"], row["thumbs_down"]
    return FeedbackSummary(
        num_requests=row["num_requests"],
        num_with_feedback=row["num_with_feedback"],
        thumbs_up=up,
        thumbs_down=down,
        thumbs_down_rate=down / (up + down) if up + down else None,
        thumbs_down_interval=wilson_interval(down, up + down),
        num_ratings=row["num_ratings"],
        mean_rating=row["mean_rating"],
        num_comments=row["num_comments"],
        num_edits=row["num_edits"],
        num_copies=row["num_copies"],
        num_shares=row["num_shares"],
        num_reports=row["num_reports"],
    )


BY_TIME_SQL = f"""
WITH {_REQUESTS_CTE}, buckets AS (
    SELECT unnest(range(
        time_bucket($bucket, $start::TIMESTAMPTZ, 'UTC'), $end::TIMESTAMPTZ, $bucket
    )) AS bucket_start
), per_request AS (
    SELECT
        time_bucket($bucket, r.start_time, 'UTC') AS bucket_start,
        count(*) AS requests,
        count(*) FILTER (WHERE r.trace_id IN (SELECT trace_id FROM request_feedback))
            AS with_feedback
    FROM requests AS r
    GROUP BY 1
), per_vote AS (
    SELECT
        time_bucket($bucket, r.start_time, 'UTC') AS bucket_start,
        count(*) FILTER (WHERE v.thumbs > 0) AS thumbs_up,
        count(*) FILTER (WHERE v.thumbs < 0) AS thumbs_down
    FROM votes AS v
    JOIN requests AS r USING (trace_id)
    GROUP BY 1
), per_kind AS (
    SELECT
        time_bucket($bucket, r.start_time, 'UTC') AS bucket_start,
        count(*) FILTER (WHERE f.kind = 'rating') AS ratings,
        avg(f.value) FILTER (WHERE f.kind = 'rating') AS mean_rating,
        count(*) FILTER (WHERE f.kind = 'comment') AS comments,
        count(*) FILTER (WHERE f.kind = 'edit') AS edits,
        count(*) FILTER (WHERE f.kind IN ('copy', 'share')) AS copies_shares,
        count(*) FILTER (WHERE f.kind = 'report') AS reports
    FROM request_feedback AS f
    JOIN requests AS r USING (trace_id)
    GROUP BY 1
)
SELECT
    b.bucket_start,
    coalesce(q.requests, 0) AS requests,
    coalesce(q.with_feedback, 0) AS with_feedback,
    coalesce(v.thumbs_up, 0) AS thumbs_up,
    coalesce(v.thumbs_down, 0) AS thumbs_down,
    coalesce(k.ratings, 0) AS ratings,
    k.mean_rating,
    coalesce(k.comments, 0) AS comments,
    coalesce(k.edits, 0) AS edits,
    coalesce(k.copies_shares, 0) AS copies_shares,
    coalesce(k.reports, 0) AS reports
FROM buckets AS b
LEFT JOIN per_request AS q USING (bucket_start)
LEFT JOIN per_vote AS v USING (bucket_start)
LEFT JOIN per_kind AS k USING (bucket_start)
ORDER BY b.bucket_start
"""


def _with_rate(frame: pl.DataFrame) -> pl.DataFrame:
    intervals = [
        wilson_interval(d, u + d)
        for u, d in zip(frame["thumbs_up"], frame["thumbs_down"], strict=True)
    ]
    votes = pl.col("thumbs_up") + pl.col("thumbs_down")
    return frame.with_columns(
        pl.when(votes > 0).then(pl.col("thumbs_down") / votes).alias("thumbs_down_rate"),
        pl.Series("rate_low", [i[0] if i else None for i in intervals], dtype=pl.Float64),
        pl.Series("rate_high", [i[1] if i else None for i in intervals], dtype=pl.Float64),
    )


def feedback_by_time(
    conn: duckdb.DuckDBPyConnection, scope: Scope, bucket: timedelta
) -> pl.DataFrame:
    """Feedback per time bucket of the requests' start, every bucket present.

    Returns:
        Columns ``bucket_start``, ``requests``, ``with_feedback`` (requests with any
        feedback), ``thumbs_up``, ``thumbs_down``, ``ratings``, ``mean_rating``, ``comments``,
        ``edits``, ``copies_shares``, ``reports``, ``thumbs_down_rate`` (null without votes)
        and its Wilson interval ``rate_low``/``rate_high``.
    """
    check_bucket(scope, bucket)
    table = run_scoped(conn, scope, BY_TIME_SQL, _params() | {"bucket": bucket})
    return _with_rate(cast(pl.DataFrame, pl.from_arrow(table)))


def newcombe_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float] | None:
    """Newcombe's 95% interval (method 10) for the difference of two proportions k1/n1 − k2/n2;
    None when either is empty.

    >>> [round(x, 4) for x in newcombe_interval(56, 70, 48, 80)]
    [0.0524, 0.3339]
    """
    first, second = wilson_interval(k1, n1), wilson_interval(k2, n2)
    if first is None or second is None:
        return None
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = first, second
    diff = p1 - p2
    return (
        diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def feedback_by_segment(
    conn: duckdb.DuckDBPyConnection, scope: Scope, by: FeedbackSegment = "model"
) -> pl.DataFrame:
    """The thumbs-down rate of each segment against the rest of the scope.

    Returns:
        Columns ``segment`` (null: votes on calls without it), ``votes``, ``thumbs_down``,
        ``thumbs_down_rate`` with its Wilson interval ``rate_low``/``rate_high``,
        ``diff_vs_rest`` (this rate − the other votes' rate) with Newcombe's interval
        ``diff_low``/``diff_high`` (null when the segment holds every vote); most votes first.
    """
    if by not in FEEDBACK_SEGMENTS:
        raise ValueError(f"by must be one of {', '.join(FEEDBACK_SEGMENTS)}, not {by!r}")
    votes = thumbs_votes(conn, scope)
    total, total_down = votes.height, int(votes["down"].sum())
    grouped = (
        votes.group_by(pl.col(FEEDBACK_SEGMENTS[by]).alias("segment"))
        .agg(pl.len().alias("votes"), pl.col("down").sum().cast(pl.Int64).alias("thumbs_down"))
        .sort(["votes", "segment"], descending=[True, False], nulls_last=True)
    )
    rows = []
    for segment, n, k in grouped.iter_rows():
        interval = wilson_interval(k, n)
        diff = newcombe_interval(k, n, total_down - k, total - n)
        rows.append(
            {"segment": segment, "votes": n, "thumbs_down": k, "thumbs_down_rate": k / n,
             "rate_low": interval[0] if interval else None,
             "rate_high": interval[1] if interval else None,
             "diff_vs_rest": k / n - (total_down - k) / (total - n) if total > n else None,
             "diff_low": diff[0] if diff else None, "diff_high": diff[1] if diff else None}
        )  # fmt: skip
    return pl.DataFrame(
        rows,
        schema={"segment": pl.String, "votes": pl.Int64, "thumbs_down": pl.Int64,
                "thumbs_down_rate": pl.Float64, "rate_low": pl.Float64, "rate_high": pl.Float64,
                "diff_vs_rest": pl.Float64, "diff_low": pl.Float64, "diff_high": pl.Float64},
    )  # fmt: skip


@dataclass(frozen=True)
class DriverModel:
    """What predicts a thumbs-down: ``effects`` (``feature``, ``kind`` numeric/category,
    ``odds_ratio``, ``low``/``high`` (95% bootstrap), ``supported`` (the interval excludes 1)),
    strongest first; the held-out ``roc_auc``; vote counts and the down rate."""

    effects: pl.DataFrame
    roc_auc: float | None
    num_train: int
    num_test: int
    down_rate: float


def _design(votes: pl.DataFrame) -> tuple[np.ndarray, list[str], list[str]]:
    """The feature matrix (standardised numerics, one-hot categories without their most common
    value), the feature names and each one's kind."""
    columns: list[np.ndarray] = []
    names: list[str] = []
    kinds: list[str] = []
    for feature, how in DRIVER_FEATURES.items():
        values = votes[feature]
        if how == "category":
            filled = values.fill_null("(none)").cast(pl.String)
            counts = filled.value_counts(sort=True)
            if counts.height < 2:
                continue
            for level in counts[feature].to_list()[1:]:
                columns.append((filled == level).cast(pl.Float64).to_numpy())
                names.append(f"{feature} = {level}")
                kinds.append("category")
            continue
        x = values.cast(pl.Float64)
        if how == "log":
            x = (x.clip(lower_bound=0) + 1).log()
        median = x.median()
        if median is None:
            continue
        array = x.fill_null(median).to_numpy()
        spread = float(array.std())
        if spread == 0:
            continue
        columns.append((array - array.mean()) / spread)
        names.append(feature)
        kinds.append("numeric")
    matrix = np.column_stack(columns) if columns else np.empty((votes.height, 0))
    return matrix, names, kinds


def thumbs_down_drivers(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    *,
    seed: int = 0,
    bootstrap: int = 200,
    test_share: float = 0.25,
) -> DriverModel:
    """Fit the driver model of the module docstring on the votes in scope.

    Raises:
        ValueError: fewer than 40 votes, or votes of one kind only.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    votes = thumbs_votes(conn, scope)
    y = votes["down"].cast(pl.Int64).to_numpy()
    if len(y) < 40 or y.min() == y.max():
        raise ValueError(f"too few votes to model: {len(y)}, {int(y.sum())} of them down")
    x, names, kinds = _design(votes)
    train_x, test_x, train_y, test_y = train_test_split(
        x, y, test_size=test_share, random_state=seed, stratify=y
    )
    model = LogisticRegression(max_iter=2000).fit(train_x, train_y)
    auc = (
        float(roc_auc_score(test_y, model.predict_proba(test_x)[:, 1]))
        if test_y.min() != test_y.max()
        else None
    )
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(train_y), len(train_y))
        if train_y[pick].min() == train_y[pick].max():
            continue
        draws.append(LogisticRegression(max_iter=2000).fit(train_x[pick], train_y[pick]).coef_[0])
    low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    effects = pl.DataFrame(
        {"feature": names, "kind": kinds, "odds_ratio": np.exp(model.coef_[0]),
         "low": np.exp(low), "high": np.exp(high)},
        schema={"feature": pl.String, "kind": pl.String, "odds_ratio": pl.Float64,
                "low": pl.Float64, "high": pl.Float64},
    ).with_columns(supported=(pl.col("low") > 1) | (pl.col("high") < 1))  # fmt: skip
    effects = effects.sort(pl.col("odds_ratio").log().abs(), descending=True)
    return DriverModel(effects, auc, len(train_y), len(test_y), float(y.mean()))
