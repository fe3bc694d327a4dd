"""Implicit feedback: what users tell us without a button, read from the order of their turns.

A *turn* is a request (trace) of a session: its answer is its last text-generating model call,
whose last user message is the turn's *input*. Turns of a session are ordered by start; each is
judged against the turn after it (its *follow-up*) by these rules, every threshold a field of
:class:`ImplicitRules`:

* **regenerated** — the follow-up re-sends the same message (:func:`same_message`: the same
  first line, whitespace and case aside, or a difflib ratio of at least ``near_identical``
  with the same numbers) within ``regenerate_within`` of the answer's end.
* **rephrased** — the follow-up, within ``rephrase_within``, is not the same message but means
  the same: cosine similarity of their embeddings at least ``rephrase_similarity``.
* **corrected** — the follow-up, within ``correction_within``, pushes back: it matches the
  correction lexicon (:data:`CORRECTION_PATTERN`: "no, I meant…", "that's wrong", "be
  shorter", "check again"…) or reads like one of its phrases (cosine similarity to the
  nearest of :data:`CORRECTION_EXAMPLES` at least ``correction_similarity``; with
  all-MiniLM-L6-v2 "This reply is incorrect." scores 0.63, ordinary follow-ups 0.1-0.4).
* **abandoned** — the stream was cancelled (a finish reason of ``cancelled``/``canceled``/
  ``aborted``), or the turn is the session's last and the session has ended (no turn for
  ``session_timeout``; undetermined, null, when the window ends first) without a positive
  signal on it (thumbs up, a rating of 4 or more, a copy or share).
* **follow-up sentiment** — VADER's compound score (-1 to 1) of the follow-up; negative at or
  below ``negative_sentiment``.

Every rule reads a message's first line (what follows may be context the app appended, such as
retrieved documents). Conversation length is the number of turns of each session. Embeddings (for rephrase and
correction) come from :mod:`analytics.embeddings` and are cached in the lake; without them
(``embed=False``) only the lexicon finds corrections and nothing is a rephrase.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, cast

import duckdb
import polars as pl

from analytics.embeddings import DEFAULT_MODEL, Progress, embed_texts, row_cosines, unit_vectors
from analytics.scope import Scope, run_scoped
from store.catalog import data_dir_of
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "CORRECTION_EXAMPLES",
    "CORRECTION_PATTERN",
    "IMPLICIT_SIGNALS",
    "ImplicitRules",
    "implicit_rates",
    "implicit_turns",
    "same_message",
]

#: signal column -> label, in the page's order
IMPLICIT_SIGNALS: dict[str, str] = {
    "regenerated": "Regenerated",
    "rephrased": "Rephrased",
    "corrected": "Corrected",
    "abandoned": "Abandoned",
    "negative_followup": "Negative follow-up",
}

CORRECTION_PATTERN = re.compile(
    r"^\s*(?:no[,.!]?\s+(?:i\s+meant|i\s+mean|that'?s|it'?s|not)|no,|nope\b)"
    r"|\b(?:that'?s|that\s+is|this\s+is|it'?s|you'?re|you\s+are)\s+(?:wrong|incorrect|not\s+right"
    r"|not\s+what\s+i)"
    r"|\bnot\s+what\s+i\s+(?:asked|meant|wanted)\b"
    r"|\bi\s+meant\b"
    r"|\b(?:be|make\s+it|much|way)\s+(?:shorter|briefer|more\s+concise)\b|\btoo\s+long\b"
    r"|\b(?:check|look|try)\s+(?:it\s+)?again\b|\bdouble[-\s]check\b"
    r"|\byou\s+(?:misunderstood|got\s+it\s+wrong|didn'?t\s+answer)\b"
    r"|\bwrong\s+answer\b|\bthat\s+doesn'?t\s+(?:work|help|answer)\b",
    re.IGNORECASE,
)
#: Phrases a correction reads like (for follow-ups the lexicon misses).
CORRECTION_EXAMPLES: tuple[str, ...] = (
    "No, that is not what I meant.",
    "That answer is wrong.",
    "Please make it shorter.",
    "Can you check that again?",
    "You misunderstood my question.",
    "That doesn't work.",
)
CANCELLED = ("cancelled", "canceled", "aborted", "abort", "cancel")


@dataclass(frozen=True)
class ImplicitRules:
    """The thresholds of the rules in the module docstring."""

    regenerate_within: timedelta = timedelta(seconds=30)
    near_identical: float = 0.95
    rephrase_within: timedelta = timedelta(minutes=3)
    rephrase_similarity: float = 0.8
    correction_within: timedelta = timedelta(minutes=5)
    correction_similarity: float = 0.55
    session_timeout: timedelta = timedelta(minutes=30)
    negative_sentiment: float = -0.05


_NUMBERS = re.compile(r"\d+")


def _first_line(text: str) -> str:
    return " ".join(text.split("\n", 1)[0].split()).casefold()


def same_message(first: str | None, second: str | None, near_identical: float = 0.95) -> bool:
    """Whether two user messages are the same one sent again: the same first line (whitespace
    and case aside; what follows, such as retrieved context, may differ) or nearly so.

    >>> same_message("How do I  reset my key?", "how do I reset my key?")
    True
    >>> same_message("How do I reset my key?", "How do I reset my keys?")
    True
    >>> same_message("How do I reset my key?", "What does a key cost?")
    False
    >>> same_message("Why did build 2352 fail?", "Why did build 8236 fail?")
    False
    """
    if not first or not second:
        return False
    a, b = _first_line(first), _first_line(second)
    if a == b:
        return True
    # a typo apart, but never a different number (an id, an amount: another question)
    if _NUMBERS.findall(a) != _NUMBERS.findall(b):
        return False
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    # the cheap upper bounds first: most pairs are told apart without the full comparison
    return (
        matcher.real_quick_ratio() >= near_identical
        and matcher.quick_ratio() >= near_identical
        and matcher.ratio() >= near_identical
    )


@cache
def _sentiment() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


TURNS_SQL = """
WITH sampled AS (
    SELECT session_id
    FROM (SELECT DISTINCT session_id FROM scoped_traces WHERE session_id IS NOT NULL)
    ORDER BY hash(session_id, $seed), session_id
    LIMIT $max_sessions
), turn_traces AS (
    SELECT trace_id
    FROM scoped_traces
    WHERE session_id IN (SELECT session_id FROM sampled)
), answers AS (
    SELECT
        trace_id,
        arg_max(
            struct_pack(
                input_text := input_text, output_text := output_text, end_time := end_time,
                finish_reasons := finish_reasons, model := coalesce(response_model, request_model)
            ),
            end_time
        ) AS a
    FROM scoped_spans
    -- only the sampled sessions' calls: their texts are all this reads
    WHERE list_contains($generation, operation)
        AND trace_id IN (SELECT trace_id FROM turn_traces)
    GROUP BY trace_id
), positive AS (
    SELECT DISTINCT trace_id
    FROM scoped_trace_feedback
    WHERE trace_id IN (SELECT trace_id FROM turn_traces)
        AND ((kind = 'thumbs' AND value > 0) OR (kind = 'rating' AND value >= 4)
        OR kind IN ('copy', 'share'))
)
SELECT
    t.trace_id,
    t.session_id,
    t.user_id,
    t.name AS route,
    t.start_time,
    a.a.end_time AS end_time,
    a.a.model AS model,
    a.a.input_text AS input_text,
    a.a.output_text AS output_text,
    a.a.finish_reasons AS finish_reasons,
    t.trace_id IN (SELECT trace_id FROM positive) AS positive
FROM scoped_traces AS t
JOIN answers AS a USING (trace_id)
ORDER BY t.session_id, t.start_time, t.trace_id
"""

_TURN_SCHEMA = {
    "regenerated": pl.Boolean,
    "rephrased": pl.Boolean,
    "corrected": pl.Boolean,
    "abandoned": pl.Boolean,
    "followup_sentiment": pl.Float64,
    "negative_followup": pl.Boolean,
    "similarity": pl.Float64,
}


def implicit_turns(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    rules: ImplicitRules = ImplicitRules(),
    *,
    embed: bool = True,
    model: str = DEFAULT_MODEL,
    max_sessions: int = 2000,
    seed: int = 0,
    progress: Progress | None = None,
    sentiment: bool = True,
) -> pl.DataFrame:
    """Every turn in scope of up to ``max_sessions`` sessions (a uniform sample by a
    ``seed``-ed hash of the session id, so rates of a large window cost a bounded number of
    embeddings), with its follow-up and the signals of the module docstring.

    Returns:
        Columns ``trace_id``, ``session_id``, ``user_id``, ``route``, ``model``,
        ``start_time``, ``end_time``, ``turn`` (1, 2, … in its session), ``session_turns``,
        ``input_text``, ``next_input``, ``next_trace_id``, ``gap_s`` (seconds from the answer's
        end to the follow-up), ``similarity`` (input to follow-up, when embedded),
        ``regenerated``, ``rephrased``, ``corrected``, ``abandoned`` (null: undetermined),
        ``followup_sentiment`` (null without a follow-up, or with ``sentiment=False``, which
        skips VADER: a third of the time on long windows) and ``negative_followup``.
    """
    params = {"generation": list(GENERATION_OPERATIONS), "max_sessions": max_sessions, "seed": seed}
    table = run_scoped(conn, scope, TURNS_SQL, params)
    turns = cast(pl.DataFrame, pl.from_arrow(table))
    if turns.is_empty():
        return turns.with_columns(
            pl.lit(None, pl.Int64).alias("turn"), pl.lit(None, pl.Int64).alias("session_turns"),
            pl.lit(None, pl.String).alias("next_input"),
            pl.lit(None, pl.String).alias("next_trace_id"), pl.lit(None, pl.Float64).alias("gap_s"),
            *[pl.lit(None, dtype).alias(name) for name, dtype in _TURN_SCHEMA.items()],
        )  # fmt: skip
    turns = turns.with_columns(
        pl.int_range(1, pl.len() + 1).over("session_id").alias("turn"),
        pl.len().over("session_id").alias("session_turns"),
        pl.col("input_text").shift(-1).over("session_id").alias("next_input"),
        pl.col("trace_id").shift(-1).over("session_id").alias("next_trace_id"),
        (
            (
                pl.col("start_time").shift(-1).over("session_id") - pl.col("end_time")
            ).dt.total_microseconds()
            / 1e6
        ).alias("gap_s"),
    )
    inputs = turns["input_text"].to_list()
    follow = turns["next_input"].to_list()
    gaps = turns["gap_s"].to_list()
    n = turns.height
    # only a follow-up soon enough to be a regeneration or a rephrase needs comparing
    soon = max(rules.regenerate_within, rules.rephrase_within).total_seconds()
    same = [
        gap is not None and gap <= soon and same_message(a, b, rules.near_identical)
        for a, b, gap in zip(inputs, follow, gaps, strict=True)
    ]
    similarity: list[float | None] = [None] * n
    example_similarity: list[float] = [0.0] * n
    pairs = [i for i in range(n) if inputs[i] and follow[i]]
    data_dir = data_dir_of(conn)
    if embed and pairs and data_dir is not None:
        firsts = [inputs[i].split("\n", 1)[0] for i in pairs]
        seconds = [follow[i].split("\n", 1)[0] for i in pairs]
        vectors = embed_texts(
            firsts + seconds + list(CORRECTION_EXAMPLES), data_dir, model, progress=progress
        ).vectors
        a, b = vectors[: len(pairs)], vectors[len(pairs) : 2 * len(pairs)]
        examples = vectors[2 * len(pairs) :]
        cos = row_cosines(a, b)
        nearest = (unit_vectors(b) @ unit_vectors(examples).T).max(axis=1)
        for j, i in enumerate(pairs):
            similarity[i] = float(cos[j])
            example_similarity[i] = float(nearest[j])
    analyzer = _sentiment() if sentiment else None
    scores = [
        None
        if text is None or analyzer is None
        # the message's first line (what follows may be context the app appended), capped
        else float(analyzer.polarity_scores(text.split("\n", 1)[0][:500])["compound"])
        for text in follow
    ]
    ends = turns["end_time"].to_list()
    finishes = turns["finish_reasons"].to_list()
    positives = turns["positive"].to_list()
    next_ids = turns["next_trace_id"].to_list()
    regenerated: list[bool] = []
    rephrased: list[bool] = []
    corrected: list[bool] = []
    abandoned: list[bool | None] = []
    for i in range(n):
        gap = gaps[i]
        has_next = follow[i] is not None and gap is not None
        regenerated.append(has_next and same[i] and gap <= rules.regenerate_within.total_seconds())
        sim = similarity[i]
        rephrased.append(
            has_next and not same[i] and sim is not None and sim >= rules.rephrase_similarity
            and gap <= rules.rephrase_within.total_seconds()
        )  # fmt: skip
        pushes_back = bool(follow[i]) and (
            CORRECTION_PATTERN.search(follow[i].split("\n", 1)[0]) is not None
            or example_similarity[i] >= rules.correction_similarity
        )
        corrected.append(
            has_next and pushes_back and gap <= rules.correction_within.total_seconds()
        )
        cancelled = any(str(r).lower() in CANCELLED for r in finishes[i] or [])
        if cancelled:
            abandoned.append(True)
        elif next_ids[i] is not None:
            abandoned.append(False)
        elif ends[i] is None or ends[i] + rules.session_timeout > scope.end:
            abandoned.append(None)  # the session may go on after the window
        else:
            abandoned.append(not positives[i])
    return turns.drop("positive").with_columns(
        pl.Series("similarity", similarity, dtype=pl.Float64),
        pl.Series("regenerated", regenerated, dtype=pl.Boolean),
        pl.Series("rephrased", rephrased, dtype=pl.Boolean),
        pl.Series("corrected", corrected, dtype=pl.Boolean),
        pl.Series("abandoned", abandoned, dtype=pl.Boolean),
        pl.Series("followup_sentiment", scores, dtype=pl.Float64),
        pl.Series(
            "negative_followup",
            [
                None if analyzer is None else s is not None and s <= rules.negative_sentiment
                for s in scores
            ],
            dtype=pl.Boolean,
        ),
    )


def implicit_rates(turns: pl.DataFrame, by: str | None = None) -> pl.DataFrame:
    """Each signal's rate over the turns of :func:`implicit_turns` (abandonment over the turns
    it could be judged on), overall or per value of column ``by`` (e.g. ``route``, or a
    ``day`` column the caller adds).

    Returns:
        Columns ``by`` (when given), ``turns``, ``sessions``, ``mean_session_turns`` and, per
        signal, ``<signal>`` (count) and ``<signal>_rate``.
    """
    aggregations: list[pl.Expr] = [
        pl.len().alias("turns"),
        pl.col("session_id").n_unique().alias("sessions"),
        (pl.len() / pl.col("session_id").n_unique()).alias("mean_session_turns"),
    ]
    for signal in IMPLICIT_SIGNALS:
        count = pl.col(signal).fill_null(False).sum().cast(pl.Int64)
        judged = pl.col(signal).is_not_null().sum()
        aggregations += [
            count.alias(signal),
            pl.when(judged > 0).then(count / judged).alias(f"{signal}_rate"),
        ]
    if by is None:
        return turns.select(aggregations)
    return turns.group_by(by).agg(aggregations).sort(by, nulls_last=True)
