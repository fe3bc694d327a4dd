"""Preference and fine-tuning data from feedback: DPO pairs and SFT examples.

* **From edits.** A user's edit of an answer (feedback ``kind = edit`` with the edited text) is a
  pair: ``chosen`` the edited text, ``rejected`` the answer as generated, ``prompt`` the user
  message it answered (the last user message of the call the edit names, or of the request's
  answer when it names none).
* **From regenerations.** A turn the user regenerated (:mod:`analytics.implicit`: the same
  message again soon after) and the turn that re-sent it answer the same prompt; when exactly
  one of the two answers got a thumbs up (the other a thumbs down or no vote), it is
  ``chosen`` and the other ``rejected``.
* **SFT examples** are answers rated at least ``min_rating`` or voted up, and never voted down.

Pairs whose two texts are equal (after trimming) and rows without a prompt are left out; the
same (prompt, chosen, rejected) — or (prompt, completion) — is kept once, the oldest.
"""

from __future__ import annotations

import hashlib
from typing import cast

import duckdb
import polars as pl

from analytics.feedback import thumbs_votes
from analytics.implicit import implicit_turns
from analytics.scope import Scope, run_scoped
from store.schema import GENERATION_OPERATIONS

__all__ = ["PREFERENCE_SOURCES", "preference_pairs", "sft_examples"]

PREFERENCE_SOURCES = ("edit", "regeneration")

_ANSWERS_CTE = """
calls AS (
    SELECT trace_id, span_id, end_time, input_text, output_text,
        coalesce(response_model, request_model) AS model
    FROM scoped_spans
    WHERE list_contains($generation, operation)
), answers AS (
    SELECT trace_id, arg_max(span_id, end_time) AS span_id
    FROM calls
    GROUP BY trace_id
), requests AS (
    SELECT t.trace_id, t.start_time, t.name AS route
    FROM scoped_traces AS t
    WHERE t.trace_id IN (SELECT trace_id FROM answers)
)
"""

EDITS_SQL = f"""
WITH {_ANSWERS_CTE}
SELECT
    f.trace_id,
    r.start_time,
    r.route,
    c.model,
    c.input_text AS prompt,
    f.text AS chosen,
    c.output_text AS rejected
FROM scoped_trace_feedback AS f
JOIN requests AS r USING (trace_id)
JOIN answers AS a USING (trace_id)
JOIN calls AS c ON c.trace_id = f.trace_id AND c.span_id = coalesce(f.span_id, a.span_id)
WHERE f.kind = 'edit' AND f.text IS NOT NULL
ORDER BY r.start_time, f.trace_id, f.time
"""

ANSWERS_SQL = f"""
WITH {_ANSWERS_CTE}
SELECT
    r.trace_id,
    r.start_time,
    r.route,
    c.model,
    c.input_text AS prompt,
    c.output_text AS answer,
    (SELECT max(value) FROM scoped_trace_feedback AS g
     WHERE g.trace_id = r.trace_id AND g.kind = 'rating') AS rating
FROM requests AS r
JOIN answers AS a USING (trace_id)
JOIN calls AS c ON c.trace_id = a.trace_id AND c.span_id = a.span_id
ORDER BY r.start_time, r.trace_id
"""

_PAIR_SCHEMA = {
    "prompt": pl.String,
    "chosen": pl.String,
    "rejected": pl.String,
    "source": pl.String,
    "trace_id": pl.String,
    "other_trace_id": pl.String,
    "model": pl.String,
    "route": pl.String,
}


def _params() -> dict[str, object]:
    return {"generation": list(GENERATION_OPERATIONS)}


def _answers(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Each request's answer with its prompt, best rating and votes (:func:`thumbs_votes`: a
    user's latest vote on an answer counts): ``voted_up`` when voted up and never down."""
    answers = cast(pl.DataFrame, pl.from_arrow(run_scoped(conn, scope, ANSWERS_SQL, _params())))
    votes = (
        thumbs_votes(conn, scope)
        .group_by("trace_id")
        .agg(pl.col("down").any().alias("voted_down"), (~pl.col("down")).any().alias("any_up"))
    )
    return (
        answers.join(votes, on="trace_id", how="left")
        .with_columns(pl.col("voted_down").fill_null(False), pl.col("any_up").fill_null(False))
        .with_columns(voted_up=pl.col("any_up") & ~pl.col("voted_down"))
        .drop("any_up")
    )


def _usable(frame: pl.DataFrame, *texts: str) -> pl.DataFrame:
    """Rows with a prompt and non-empty texts, the texts not all equal; each distinct row once."""
    frame = frame.filter(pl.col("prompt").str.strip_chars() != "")
    for column in texts:
        frame = frame.filter(
            pl.col(column).is_not_null() & (pl.col(column).str.strip_chars() != "")
        )
    if len(texts) == 2:
        frame = frame.filter(
            pl.col(texts[0]).str.strip_chars() != pl.col(texts[1]).str.strip_chars()
        )
    key = [
        hashlib.sha256("\x1f".join(row).encode()).hexdigest()
        for row in frame.select("prompt", *texts).iter_rows()
    ]
    return (
        frame.with_columns(pl.Series("_key", key, dtype=pl.String))
        .unique("_key", keep="first", maintain_order=True)
        .drop("_key")
    )


def preference_pairs(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    sources: tuple[str, ...] = PREFERENCE_SOURCES,
) -> pl.DataFrame:
    """DPO pairs from the requests in scope (see the module docstring), oldest first.

    Returns:
        Columns ``prompt``, ``chosen``, ``rejected``, ``source`` (edit/regeneration),
        ``trace_id`` (the request of the rejected answer), ``other_trace_id`` (of the chosen
        one, for a regeneration), ``model``, ``route``.
    """
    unknown = set(sources) - set(PREFERENCE_SOURCES)
    if unknown:
        raise ValueError(
            f"unknown source(s) {sorted(unknown)}; want {', '.join(PREFERENCE_SOURCES)}"
        )
    parts = []
    if "edit" in sources:
        edits = cast(pl.DataFrame, pl.from_arrow(run_scoped(conn, scope, EDITS_SQL, _params())))
        parts.append(
            edits.with_columns(source=pl.lit("edit"), other_trace_id=pl.lit(None, pl.String))
            .select(list(_PAIR_SCHEMA))
            .cast(_PAIR_SCHEMA)  # type: ignore[arg-type]
        )
    if "regeneration" in sources:
        answers = _answers(conn, scope)
        by_trace = {row["trace_id"]: row for row in answers.iter_rows(named=True)}
        turns = implicit_turns(conn, scope, embed=False, max_sessions=1 << 62)
        rows = []
        for first, second in (
            turns.filter(pl.col("regenerated")).select("trace_id", "next_trace_id").iter_rows()
        ):
            a, b = by_trace.get(first), by_trace.get(second)
            if a is None or b is None:
                continue
            up_a, up_b = a["voted_up"], b["voted_up"]
            if up_a == up_b:
                continue
            chosen, rejected = (a, b) if up_a else (b, a)
            rows.append(
                {"prompt": rejected["prompt"], "chosen": chosen["answer"],
                 "rejected": rejected["answer"], "source": "regeneration",
                 "trace_id": rejected["trace_id"], "other_trace_id": chosen["trace_id"],
                 "model": rejected["model"], "route": rejected["route"]}
            )  # fmt: skip
        parts.append(pl.DataFrame(rows, schema=_PAIR_SCHEMA))
    if not parts:
        return pl.DataFrame(schema=_PAIR_SCHEMA)
    return _usable(pl.concat(parts), "chosen", "rejected")


def sft_examples(
    conn: duckdb.DuckDBPyConnection, scope: Scope, min_rating: float = 4.0
) -> pl.DataFrame:
    """Answers rated at least ``min_rating`` or voted up, never voted down; oldest first.

    Returns:
        Columns ``prompt``, ``completion``, ``trace_id``, ``model``, ``route``, ``rating``.
    """
    good = (
        _answers(conn, scope)
        .filter(((pl.col("rating") >= min_rating) | pl.col("voted_up")) & ~pl.col("voted_down"))
        .select(
            "prompt", pl.col("answer").alias("completion"), "trace_id", "model", "route", "rating"
        )
    )
    return _usable(good, "completion")
