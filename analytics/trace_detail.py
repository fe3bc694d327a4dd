"""One trace, span or session, read whole: the span tree, a span's detail, a session's turns.

Opening a trace by id needs a time hint to stay fast: trace ids are random, so without one
every span of the lake is tested. Links carry the trace's start time (``?trace=<id>&t=<start>``);
:func:`read_trace` then reads only the spans from :data:`HINT_SLACK` before it to
``TRACE_MARGIN`` after it (Parquet segments are sorted by ``start_time``, so the rest is skipped
by row-group statistics) and falls back to the whole lake when the hint is missing or wrong. Sessions use a wider hint, :data:`SESSION_MARGIN`.

Span categories (for colour and the waterfall legend) come from ``operation``: see
:data:`SPAN_CATEGORIES`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import polars as pl

from analytics.implicit import ImplicitRules, same_message
from analytics.scope import TRACE_MARGIN, Scope, run_scoped
from analytics.traces import read_trace_rows
from store.schema import GENERATION_OPERATIONS

__all__ = [
    "CATEGORIES",
    "HINT_SLACK",
    "REGENERATE_WITHIN",
    "SESSION_MARGIN",
    "SPAN_CATEGORIES",
    "SessionDetail",
    "SpanDetail",
    "SpanEvent",
    "TraceDetail",
    "answer_spans",
    "mark_regenerated",
    "read_session",
    "read_trace",
    "span_category",
]

#: Operation (as normalised at ingest) → category shown in the tree and the waterfall.
SPAN_CATEGORIES: dict[str, str] = {
    "chat": "llm",
    "text_completion": "llm",
    "generate_content": "llm",
    "llm": "llm",
    "embeddings": "embedding",
    "embedding": "embedding",
    "retrieval": "retrieval",
    "retriever": "retrieval",
    "reranker": "retrieval",
    "execute_tool": "tool",
    "tool": "tool",
    "guardrail": "guardrail",
    "apply_guardrail": "guardrail",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "agent": "agent",
    "chain": "agent",
    "invoke_workflow": "agent",
    "workflow": "agent",
    "plan": "agent",
}
#: Every category, in legend order.
CATEGORIES: tuple[str, ...] = (
    "llm",
    "embedding",
    "retrieval",
    "tool",
    "guardrail",
    "agent",
    "other",
)
#: How far from a session's hinted time its turns are looked for.
SESSION_MARGIN = timedelta(days=7)
#: How much earlier than a trace's time hint its spans are looked for.
HINT_SLACK = timedelta(hours=1)
#: A turn counts as regenerated when the same message is sent again within this long after it.
REGENERATE_WITHIN = ImplicitRules.regenerate_within

# Far enough apart to hold any lake (and still a valid timestamp after adding margins).
_ALL_TIME = (datetime(1970, 1, 2, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


def span_category(operation: str | None) -> str:
    """The display category of a span's ``operation`` (``other`` when unknown).

    >>> span_category("chat"), span_category("execute_tool"), span_category(None)
    ('llm', 'tool', 'other')
    """
    return SPAN_CATEGORIES.get((operation or "").lower(), "other")


@dataclass(frozen=True)
class SpanEvent:
    """A span event: when, its name and its attributes."""

    time: datetime | None
    name: str | None
    attributes: dict[str, str]


@dataclass(frozen=True)
class SpanDetail:
    """Everything stored about one span, plus its read-time cost and TPOT."""

    span_id: str
    parent_span_id: str | None
    name: str | None
    kind: str | None
    service_name: str | None
    scope_name: str | None
    start_time: datetime
    end_time: datetime
    duration_ms: float | None
    status_code: str | None
    status_message: str | None
    operation: str | None
    provider: str | None
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    ttft_ms: float | None
    tpot_ms: float | None
    finish_reasons: tuple[str, ...]
    session_id: str | None
    user_id: str | None
    input_text: str | None
    output_text: str | None
    system_prompt_hash: str | None
    cost_usd: float | None
    attributes: dict[str, str] = field(default_factory=dict)
    resource_attributes: dict[str, str] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()
    links: tuple[dict[str, Any], ...] = ()

    @property
    def category(self) -> str:
        """The display category (:func:`span_category`)."""
        return span_category(self.operation)

    @property
    def model(self) -> str | None:
        """The model that answered, else the one requested."""
        return self.response_model or self.request_model

    def request_parameters(self) -> dict[str, Any]:
        """Model parameters the span records (temperature, max tokens, …), by source key."""
        params: dict[str, Any] = {}
        for key, value in sorted(self.attributes.items()):
            if key.startswith(("gen_ai.request.", "ai.settings.", "llm.request.")) and not (
                key.endswith((".model", ".model_name"))
            ):
                params[key] = value
        invocation = self.attributes.get("llm.invocation_parameters")
        if invocation:
            try:
                parsed = json.loads(invocation)
            except ValueError:
                params["llm.invocation_parameters"] = invocation
            else:
                if isinstance(parsed, dict):
                    for key, value in parsed.items():
                        params[f"llm.invocation_parameters.{key}"] = value
        return params


def _as_dict(pairs: Any) -> dict[str, str]:
    """An Arrow map (a list of key/value pairs in Python) as a dict."""
    if not pairs:
        return {}
    if isinstance(pairs, dict):
        return dict(pairs)
    return {key: value for key, value in pairs}


def _span(row: dict[str, Any]) -> SpanDetail:
    events = tuple(
        SpanEvent(e.get("time"), e.get("name"), _as_dict(e.get("attributes")))
        for e in row.get("events") or []
    )
    links = tuple(
        {**link, "attributes": _as_dict(link.get("attributes"))} for link in row.get("links") or []
    )
    return SpanDetail(
        span_id=row["span_id"],
        parent_span_id=row["parent_span_id"] or None,
        name=row["name"],
        kind=row["kind"],
        service_name=row["service_name"],
        scope_name=row["scope_name"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        duration_ms=row["duration_ms"],
        status_code=row["status_code"],
        status_message=row["status_message"],
        operation=row["operation"],
        provider=row["provider"],
        request_model=row["request_model"],
        response_model=row["response_model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cache_read_tokens=row["cache_read_tokens"],
        cache_write_tokens=row["cache_write_tokens"],
        reasoning_tokens=row["reasoning_tokens"],
        ttft_ms=row["ttft_ms"],
        tpot_ms=row["tpot_ms"],
        finish_reasons=tuple(row["finish_reasons"] or ()),
        session_id=row["session_id"],
        user_id=row["user_id"],
        input_text=row["input_text"],
        output_text=row["output_text"],
        system_prompt_hash=row["system_prompt_hash"],
        cost_usd=row["total_cost_usd"],
        attributes=_as_dict(row["attributes"]),
        resource_attributes=_as_dict(row["resource_attributes"]),
        events=events,
        links=links,
    )


def _tree_order(spans: list[SpanDetail]) -> list[tuple[SpanDetail, int]]:
    """Spans depth-first (children by start time), with their depth. A span whose parent is
    not in the trace (not arrived, or in another system) starts a tree of its own."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanDetail]] = defaultdict(list)
    for s in spans:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children[parent].append(s)
    for group in children.values():
        group.sort(key=lambda s: (s.start_time, s.span_id))
    ordered: list[tuple[SpanDetail, int]] = []
    seen: set[str] = set()
    stack: list[tuple[SpanDetail, int]] = [(s, 0) for s in reversed(children[None])]
    while stack:
        span, depth = stack.pop()
        if span.span_id in seen:  # a parent cycle in bad data: show each span once
            continue
        seen.add(span.span_id)
        ordered.append((span, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(span.span_id, [])))
    # Spans caught in a cycle have no way down from a root: list them at the end.
    ordered.extend((s, 0) for s in spans if s.span_id not in seen)
    return ordered


TREE_SCHEMA: dict[str, Any] = {
    "span_id": pl.String,
    "parent_span_id": pl.String,
    "depth": pl.Int64,
    "name": pl.String,
    "category": pl.String,
    "kind": pl.String,
    "service_name": pl.String,
    "offset_ms": pl.Float64,
    "duration_ms": pl.Float64,
    "status_code": pl.String,
    "model": pl.String,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "ttft_ms": pl.Float64,
    "cost_usd": pl.Float64,
    "num_children": pl.Int64,
}


@dataclass(frozen=True)
class TraceDetail:
    """A trace read whole. ``tree`` has one row per span in depth-first order (columns in
    :data:`TREE_SCHEMA`; ``offset_ms`` is the start relative to the trace's first span)."""

    project: str
    trace_id: str
    start_time: datetime
    end_time: datetime
    spans: tuple[SpanDetail, ...]
    tree: pl.DataFrame
    feedback: pl.DataFrame
    annotations: pl.DataFrame

    @property
    def root(self) -> SpanDetail:
        """The first span of the tree (the root when it arrived)."""
        return self.spans[0]

    @property
    def duration_ms(self) -> float:
        """The root span's duration, else first start to last end."""
        root = self.root
        if root.parent_span_id is None and root.duration_ms is not None:
            return root.duration_ms
        return (self.end_time - self.start_time) / timedelta(milliseconds=1)

    def span(self, span_id: str) -> SpanDetail | None:
        """The span with this id, if the trace has it."""
        return next((s for s in self.spans if s.span_id == span_id), None)


TRACE_SPANS_SQL = """
SELECT s.*, c.total_cost_usd, c.tpot_ms
FROM scoped_trace_spans AS s
LEFT JOIN (
    SELECT span_id, total_cost_usd, tpot_ms FROM scoped_trace_calls WHERE trace_id = $f_trace
) AS c ON c.span_id = s.span_id
WHERE s.trace_id = $f_trace
ORDER BY s.start_time, s.span_id
"""

TRACE_FEEDBACK_SQL = """
SELECT feedback_id, span_id, time, kind, value, text, user_id, source
FROM scoped_trace_feedback
WHERE list_contains($f_ids, trace_id)
ORDER BY time, feedback_id
"""

TRACE_ANNOTATIONS_SQL = """
SELECT annotation_id, trace_id, span_id, time, label, score, comment, author
FROM scoped_trace_annotations
WHERE list_contains($f_ids, trace_id)
ORDER BY time, annotation_id
"""


def _around(project: str, moment: datetime | None, before: timedelta, after: timedelta) -> Scope:
    """A scope whose ``scoped_trace_*`` relations cover ``moment - before`` to
    ``moment + after`` (give ``after`` ≥ ``TRACE_MARGIN``), or all time without a moment."""
    if moment is None:
        return Scope(project, *_ALL_TIME)
    # scoped_trace_* reach TRACE_MARGIN past the window's end.
    end = moment + max(after - TRACE_MARGIN, timedelta(0)) + timedelta(microseconds=1)
    return Scope(project, moment - before, end)


def _frame(table: Any) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def read_trace(
    conn: duckdb.DuckDBPyConnection,
    project: str,
    trace_id: str,
    around: datetime | None = None,
) -> TraceDetail | None:
    """A trace's spans (tree order), feedback and annotations; None if it has no span.

    ``around`` is the trace's start (links carry it): only spans from :data:`HINT_SLACK` before
    it to ``TRACE_MARGIN`` after it are read. Without it, or if nothing is found there, the
    whole lake is searched.
    """
    # The hint may be rounded (or the start of the session's turn): allow an hour before it.
    scopes = [_around(project, around, HINT_SLACK, TRACE_MARGIN)] if around is not None else []
    scopes.append(_around(project, None, HINT_SLACK, TRACE_MARGIN))
    for scope in scopes:
        rows = run_scoped(conn, scope, TRACE_SPANS_SQL, {"f_trace": trace_id}).to_pylist()
        if rows:
            break
    else:
        return None
    spans = [_span(row) for row in rows]
    ordered = _tree_order(spans)
    start = min(s.start_time for s in spans)
    end = max(s.end_time for s in spans)
    num_children: dict[str, int] = defaultdict(int)
    for s in spans:
        if s.parent_span_id:
            num_children[s.parent_span_id] += 1
    tree = pl.DataFrame(
        [
            {
                "span_id": s.span_id,
                "parent_span_id": s.parent_span_id,
                "depth": depth,
                "name": s.name,
                "category": s.category,
                "kind": s.kind,
                "service_name": s.service_name,
                "offset_ms": (s.start_time - start) / timedelta(milliseconds=1),
                "duration_ms": s.duration_ms
                if s.duration_ms is not None
                else (s.end_time - s.start_time) / timedelta(milliseconds=1),
                "status_code": s.status_code,
                "model": s.model,
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
                "ttft_ms": s.ttft_ms,
                "cost_usd": s.cost_usd,
                "num_children": num_children.get(s.span_id, 0),
            }
            for s, depth in ordered
        ],
        schema=TREE_SCHEMA,
    )
    hint = Scope(project, start, start + timedelta(microseconds=1))
    ids = {"f_ids": [trace_id]}
    return TraceDetail(
        project=project,
        trace_id=trace_id,
        start_time=start,
        end_time=end,
        spans=tuple(s for s, _ in ordered),
        tree=tree,
        feedback=_frame(run_scoped(conn, hint, TRACE_FEEDBACK_SQL, ids)),
        annotations=_frame(run_scoped(conn, hint, TRACE_ANNOTATIONS_SQL, ids)),
    )


# The answer of each listed request: its last generation call (by end time, then span id).
ANSWER_SPANS_SQL = """
SELECT s.*, c.total_cost_usd, c.tpot_ms
FROM scoped_trace_spans AS s
JOIN scoped_trace_calls AS c ON c.trace_id = s.trace_id AND c.span_id = s.span_id
WHERE list_contains($f_ids, s.trace_id) AND list_contains($f_generation, s.operation)
QUALIFY row_number() OVER (PARTITION BY s.trace_id ORDER BY s.end_time DESC, s.span_id DESC) = 1
"""


def answer_spans(
    conn: duckdb.DuckDBPyConnection, scope: Scope, trace_ids: Sequence[str]
) -> dict[str, SpanDetail]:
    """The answer of each of these requests of ``scope`` (its last generation call), by trace
    id; a request without a generation call is left out."""
    if not trace_ids:
        return {}
    params = {"f_ids": list(trace_ids), "f_generation": list(GENERATION_OPERATIONS)}
    rows = run_scoped(conn, scope, ANSWER_SPANS_SQL, params).to_pylist()
    return {row["trace_id"]: _span(row) for row in rows}


@dataclass(frozen=True)
class SessionDetail:
    """A session's turns (requests) in order, with feedback and implicit signals.

    ``turns`` has the trace list's columns (:data:`analytics.traces.TRACE_COLUMNS`) plus
    ``turn`` (1, 2, …) and ``regenerated`` (the user sent the same message again within
    :data:`REGENERATE_WITHIN` of the turn's end). ``feedback`` holds the feedback records of
    all turns (with ``trace_id``), oldest first.
    """

    project: str
    session_id: str
    turns: pl.DataFrame
    feedback: pl.DataFrame

    @property
    def user_ids(self) -> list[str]:
        """The distinct users of the session's turns."""
        return sorted({u for u in self.turns["user_id"].to_list() if u})


SESSION_TRACES_SQL = """
SELECT trace_id, min(start_time) AS start_time
FROM scoped_trace_spans
WHERE session_id = $f_session
GROUP BY trace_id
ORDER BY start_time, trace_id
"""

SESSION_FEEDBACK_SQL = """
SELECT trace_id, feedback_id, span_id, time, kind, value, text, user_id, source
FROM scoped_trace_feedback
WHERE list_contains($f_ids, trace_id)
ORDER BY time, feedback_id
"""


def mark_regenerated(turns: pl.DataFrame) -> pl.DataFrame:
    """Add ``turn`` (1, 2, … by start time) and ``regenerated`` to one session's trace rows.

    A turn is regenerated when the next turn sends the same message
    (:func:`analytics.implicit.same_message`) and starts within :data:`REGENERATE_WITHIN` of
    this turn's end (start + duration).
    """
    turns = turns.sort("start_time", "trace_id")
    starts = turns["start_time"].to_list()
    inputs = turns["input_preview"].to_list()
    ends = [
        start + timedelta(milliseconds=duration or 0.0)
        for start, duration in zip(starts, turns["duration_ms"], strict=True)
    ]
    regenerated = [
        i + 1 < len(starts)
        and starts[i + 1] - ends[i] <= REGENERATE_WITHIN
        and same_message(inputs[i], inputs[i + 1])
        for i in range(len(starts))
    ]
    return turns.with_columns(
        pl.Series("turn", range(1, len(starts) + 1), dtype=pl.Int64),
        pl.Series("regenerated", regenerated, dtype=pl.Boolean),
    )


def read_session(
    conn: duckdb.DuckDBPyConnection,
    project: str,
    session_id: str,
    around: datetime | None = None,
) -> SessionDetail | None:
    """A session's turns and feedback; None if no span carries the session id.

    ``around`` (a time in the session) limits the search to :data:`SESSION_MARGIN` of it;
    without it the whole lake is searched.
    """
    scope = _around(project, around, SESSION_MARGIN, SESSION_MARGIN)
    rows = run_scoped(conn, scope, SESSION_TRACES_SQL, {"f_session": session_id}).to_pylist()
    if not rows:
        return None
    ids = [r["trace_id"] for r in rows]
    turns = read_trace_rows(conn, project, ids, [r["start_time"] for r in rows])
    turns = mark_regenerated(turns.sort("start_time", "trace_id"))
    starts = turns["start_time"].to_list()
    hint = Scope(project, min(starts), min(starts) + timedelta(microseconds=1))
    feedback = _frame(run_scoped(conn, hint, SESSION_FEEDBACK_SQL, {"f_ids": ids}))
    return SessionDetail(project, session_id, turns, feedback)
