"""The trace list: find the slow, failed, expensive, flagged or disliked traces of a scope.

A listed trace is a **request**: a trace whose root span (no parent) started in the scope's
window (``scoped_root_spans``; the earliest root if a trace has several). A trace whose root
never reached Flywheel is not listed; it still opens by id (:mod:`analytics.trace_detail`).

Listing is two queries, so that a page never groups the whole window:

1. :data:`PAGE_IDS_SQL`, assembled from fixed fragments for the filters in use: the root spans
   of the window, narrowed by root-level filters (duration, route via the scope) and semi-joins
   on the spans, feedback and annotations near the window (error, user, session, operation,
   guardrail, feedback, label, text search); model-call totals (tokens, cost, TTFT) are
   aggregated only when a filter or the sort needs them. It returns one page of trace ids in a
   total order (the sort key, then ``trace_id``) and the number of matches.
2. :data:`TRACE_ROWS_SQL` reads the page's traces whole: their spans, model calls, feedback and
   annotations, bounded to the page's own time span.

Definitions of the columns (:data:`TRACE_COLUMNS`): ``duration_ms`` is the root span's;
``ttft_ms`` is the TTFT of the trace's first streamed model call; tokens and cost sum its model
calls (cost priced at read time, as in ``llm_calls``); ``has_error`` is any span with status
ERROR; ``guardrail_triggered`` is any guardrail span whose result shows an intervention
(:data:`GUARDRAIL_TRIGGERED_SQL`); feedback counts come from the ``feedback`` view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import duckdb
import polars as pl

from analytics.scope import Scope, run_scoped

__all__ = [
    "FEEDBACK_SIGNALS",
    "GUARDRAIL_TRIGGERED_SQL",
    "PAGE_WINDOWS",
    "RANGE_COLUMNS",
    "SORT_COLUMNS",
    "TRACE_COLUMNS",
    "Range",
    "TraceFilter",
    "TracePage",
    "count_traces",
    "list_labels",
    "list_operations",
    "list_traces",
    "read_trace_rows",
    "sample_traces",
    "sessions_by_user",
]

#: A request a guardrail intervened in: one of its guardrail spans or events has a result whose
#: action is not ``pass`` (``guardrails`` table; the verdict rules are in ``ingest/conventions.toml``).
#: Built-in detectors are left out: a truncated answer is a quality signal, not an intervention
#: (the ``guardrail_name`` / ``guardrail_category`` filters select those).
GUARDRAIL_TRIGGERED_SQL = "triggered AND source <> 'detector'"

#: Feedback signals a list can be filtered by, and the feedback rows that give each.
FEEDBACK_SIGNALS: dict[str, str] = {
    "thumbs_down": "kind = 'thumbs' AND value < 0",
    "thumbs_up": "kind = 'thumbs' AND value > 0",
    "edited": "kind = 'edit'",
    "commented": "kind = 'comment'",
    "reported": "kind = 'report'",
    "low_rating": "kind = 'rating' AND value <= 2",
}

# Columns a range filter or the sort can use, and where phase 1 finds them: "head" columns are
# the root span's; "calls" columns need the trace's model calls aggregated.
_HEAD_EXPRESSIONS = {"start_time": "c.start_time", "duration_ms": "c.duration_ms"}
_CALL_EXPRESSIONS = {
    "ttft_ms": "a.ttft_ms",
    "total_cost_usd": "CASE WHEN a.trace_id IS NULL THEN 0.0 ELSE a.total_cost_usd END",
    "input_tokens": "coalesce(a.input_tokens, 0)",
    "output_tokens": "coalesce(a.output_tokens, 0)",
    "total_tokens": "coalesce(a.input_tokens, 0) + coalesce(a.output_tokens, 0)",
}
#: Columns a :class:`Range` may bound.
RANGE_COLUMNS: tuple[str, ...] = ("duration_ms", *_CALL_EXPRESSIONS)
#: Columns the list may be sorted by.
SORT_COLUMNS: tuple[str, ...] = (
    "start_time",
    "duration_ms",
    "ttft_ms",
    "total_cost_usd",
    "total_tokens",
)

#: The columns of a page (and of a sample), in order.
TRACE_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "start_time",
    "name",
    "service_name",
    "user_id",
    "session_id",
    "duration_ms",
    "ttft_ms",
    "num_spans",
    "num_llm_calls",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "total_cost_usd",
    "models",
    "status_code",
    "has_error",
    "guardrail_triggered",
    "thumbs_up",
    "thumbs_down",
    "num_edits",
    "num_comments",
    "num_reports",
    "labels",
    "input_preview",
    "output_preview",
)

Status = Literal["any", "error", "ok"]


@dataclass(frozen=True)
class Range:
    """Bounds on one of :data:`RANGE_COLUMNS`, both inclusive; ``None`` leaves a side open."""

    column: str
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.column not in RANGE_COLUMNS:
            raise ValueError(f"cannot filter on {self.column!r}; use one of {RANGE_COLUMNS}")


@dataclass(frozen=True)
class TraceFilter:
    """What to look for, beyond the scope (project, window, services, models, routes).

    ``status``: ``error`` = a span failed, ``ok`` = none did. ``operations``: the trace has a
    span with one of these operations. ``user_id``/``session_id``: a span of the trace carries
    it. ``guardrail``: a guardrail intervened (True) or none did (False). ``guardrail_name``,
    ``guardrail_stage``, ``guardrail_category``: the trace has a triggered guardrail result
    (the ``guardrails`` table, detectors included) of that guardrail, stage and category, as
    many of them as are set. ``feedback``: any of
    these :data:`FEEDBACK_SIGNALS`. ``system_prompt``: a span of the trace has this system-prompt
    hash. ``label``: an annotation with this label. ``search``: text
    that some span's input or output contains (case-insensitive, no wildcards). ``trace_ids``:
    only these traces (another analysis picked them, e.g. the requests that missed an SLO).
    """

    status: Status = "any"
    operations: tuple[str, ...] = ()
    ranges: tuple[Range, ...] = ()
    user_id: str | None = None
    session_id: str | None = None
    guardrail: bool | None = None
    guardrail_name: str | None = None
    guardrail_stage: str | None = None
    guardrail_category: str | None = None
    feedback: tuple[str, ...] = ()
    system_prompt: str | None = None
    label: str | None = None
    search: str | None = None
    trace_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.status not in ("any", "error", "ok"):
            raise ValueError(f"status must be any, error or ok, not {self.status!r}")
        unknown = set(self.feedback) - set(FEEDBACK_SIGNALS)
        if unknown:
            raise ValueError(f"unknown feedback signal(s) {sorted(unknown)}")
        object.__setattr__(self, "operations", tuple(sorted(set(self.operations))))
        object.__setattr__(self, "feedback", tuple(sorted(set(self.feedback))))


@dataclass(frozen=True)
class TracePage:
    """One page of the trace list: ``rows`` (:data:`TRACE_COLUMNS`) and the number of matches
    (None when not counted)."""

    rows: pl.DataFrame
    num_total: int | None
    offset: int
    limit: int


# Phase 1. {trace_where}, {calls}, {join}, {where} and {order} are filled from the fragments
# below, never from values; every value is a bound parameter. Filters on the trace id (the
# semi-joins) narrow the root spans before they are grouped; ranges filter the grouped rows.
_CANDIDATES_SQL = """
WITH candidates AS (
    -- The earliest root of each trace (by start, then a hash of the span id): a scalar key is
    -- cheaper to aggregate than a struct, and a page is only read by start and duration.
    SELECT
        trace_id,
        min(start_time) AS start_time,
        arg_min(
            coalesce(duration_ms, date_diff('microsecond', start_time, end_time) / 1000.0),
            epoch_ns(start_time)::HUGEINT * 18446744073709551616 + hash(span_id)
        ) AS duration_ms
    FROM scoped_root_spans AS c
    WHERE {trace_where}
    GROUP BY trace_id
){calls}
"""

PAGE_IDS_SQL = (
    _CANDIDATES_SQL
    + """
SELECT c.trace_id, c.start_time
FROM candidates AS c{join}
WHERE {where}
ORDER BY {order}
LIMIT $page_limit OFFSET $page_offset
"""
)

COUNT_TRACES_SQL = (
    _CANDIDATES_SQL
    + """
SELECT count(*) AS num_total
FROM candidates AS c{join}
WHERE {where}
"""
)

#: Widths of the windows a page sorted by start time is first looked for in, narrowest first:
#: the newest (or oldest) page of a long window is found without reading all of it.
PAGE_WINDOWS: tuple[timedelta, ...] = (
    timedelta(hours=1),
    timedelta(hours=8),
    timedelta(hours=64),
)

_CALLS_CTE = """, call_totals AS (
    SELECT
        trace_id,
        sum(total_cost_usd) AS total_cost_usd,
        CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
        CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
        arg_min(ttft_ms, start_time) FILTER (WHERE ttft_ms IS NOT NULL) AS ttft_ms
    FROM scoped_request_calls
    WHERE trace_id IN (SELECT trace_id FROM candidates)
    GROUP BY trace_id
)"""
_CALLS_JOIN = "\nLEFT JOIN call_totals AS a ON a.trace_id = c.trace_id"

_IN_SPANS = "c.trace_id {negate}IN (SELECT trace_id FROM scoped_trace_spans WHERE {predicate})"
# A trace has an error when any of its spans does: the kept trace parts say so per hour.
_WITH_ERROR = (
    "c.trace_id {negate}IN (SELECT trace_id FROM scoped_request_parts WHERE has_error = 1)"
)
_SPAN_PREDICATES = {
    "operations": "list_contains($f_operations, operation)",
    "user": "user_id = $f_user",
    "session": "session_id = $f_session",
    "prompt": "system_prompt_hash = $f_prompt",
    "search": "input_text ILIKE $f_search ESCAPE '\\' OR output_text ILIKE $f_search ESCAPE '\\'",
}
_IN_FEEDBACK = "c.trace_id IN (SELECT trace_id FROM scoped_trace_feedback WHERE {predicate})"
_IN_LABEL = "c.trace_id IN (SELECT trace_id FROM scoped_trace_annotations WHERE label = $f_label)"
_IN_GUARDRAILS = (
    "c.trace_id {negate}IN (SELECT trace_id FROM scoped_trace_guardrails WHERE {predicate})"
)
_GUARDRAIL_FIELDS = (
    ("guardrail_name", "guardrail"),
    ("guardrail_stage", "stage"),
    ("guardrail_category", "category"),
)


def _like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards escaped, so the text matches literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _phase_one(
    filters: TraceFilter, order_column: str | None
) -> tuple[str, str, list[str], list[str], dict[str, Any]]:
    """The calls CTE, its join, the predicates on the trace id and on the grouped rows, and
    their parameters, for ``filters``."""
    where: list[str] = []
    params: dict[str, Any] = {}

    def in_spans(key: str, negate: bool = False) -> None:
        predicate = _SPAN_PREDICATES[key]
        where.append(_IN_SPANS.format(negate="NOT " if negate else "", predicate=predicate))

    if filters.status != "any":
        where.append(_WITH_ERROR.format(negate="NOT " if filters.status == "ok" else ""))
    if filters.operations:
        in_spans("operations")
        params["f_operations"] = list(filters.operations)
    if filters.user_id is not None:
        in_spans("user")
        params["f_user"] = filters.user_id
    if filters.session_id is not None:
        in_spans("session")
        params["f_session"] = filters.session_id
    if filters.system_prompt is not None:
        in_spans("prompt")
        params["f_prompt"] = filters.system_prompt
    if filters.guardrail is not None:
        negate = "" if filters.guardrail else "NOT "
        where.append(_IN_GUARDRAILS.format(negate=negate, predicate=GUARDRAIL_TRIGGERED_SQL))
    matching = [(f, c) for f, c in _GUARDRAIL_FIELDS if getattr(filters, f) is not None]
    if matching:
        predicate = " AND ".join(["triggered", *(f"{c} = $f_{f}" for f, c in matching)])
        where.append(_IN_GUARDRAILS.format(negate="", predicate=predicate))
        params.update({f"f_{f}": getattr(filters, f) for f, _ in matching})
    if filters.search:
        in_spans("search")
        params["f_search"] = _like_pattern(filters.search)
    if filters.feedback:
        either = " OR ".join(f"({FEEDBACK_SIGNALS[s]})" for s in filters.feedback)
        where.append(_IN_FEEDBACK.format(predicate=either))
    if filters.label is not None:
        where.append(_IN_LABEL)
        params["f_label"] = filters.label
    if filters.trace_ids is not None:
        where.append("list_contains($f_trace_ids, c.trace_id)")
        params["f_trace_ids"] = list(filters.trace_ids)
    trace_where, where = where, []
    needs_calls = order_column in _CALL_EXPRESSIONS
    for i, bound in enumerate(filters.ranges):
        expression = _HEAD_EXPRESSIONS.get(bound.column) or _CALL_EXPRESSIONS[bound.column]
        needs_calls = needs_calls or bound.column in _CALL_EXPRESSIONS
        if bound.min is not None:
            where.append(f"{expression} >= $f_min_{i}")
            params[f"f_min_{i}"] = bound.min
        if bound.max is not None:
            where.append(f"{expression} <= $f_max_{i}")
            params[f"f_max_{i}"] = bound.max
    calls, join = (_CALLS_CTE, _CALLS_JOIN) if needs_calls else ("", "")
    return calls, join, trace_where or ["TRUE"], where or ["TRUE"], params


def _sql(
    template: str, filters: TraceFilter, order_column: str | None
) -> tuple[str, dict[str, Any]]:
    calls, join, trace_where, where, params = _phase_one(filters, order_column)
    return template.format(
        trace_where=" AND ".join(trace_where),
        calls=calls,
        join=join,
        where=" AND ".join(where),
        order="{order}",
    ), params


def _windows(scope: Scope, descending: bool) -> list[Scope]:
    """Growing windows at the end (or start) of ``scope``, ending with ``scope`` itself."""
    steps = []
    for width in PAGE_WINDOWS:
        if width >= scope.end - scope.start:
            break
        if descending:
            steps.append(dataclasses.replace(scope, start=scope.end - width))
        else:
            steps.append(dataclasses.replace(scope, end=scope.start + width))
    return [*steps, scope]


def _page_ids(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    filters: TraceFilter,
    order: str,
    order_column: str | None,
    params: dict[str, Any],
    descending: bool = True,
) -> tuple[list[str], list[datetime]]:
    """Trace ids and start times of one page. Sorted by start time and unfiltered, the page is
    looked for in growing windows at the sorted end: once a window holds a full page, every
    request outside it sorts after that page, so the page is the same as the whole window's.
    A filter makes matches sparse and unpredictable (errors slower than 5 s: none in the last
    hour), and each window that falls short costs a query, so a filtered page is looked for in
    the whole window at once."""
    template, filter_params = _sql(PAGE_IDS_SQL, filters, order_column)
    sql = template.format(order=order)
    growing = order_column == "start_time" and filters == TraceFilter()
    windows = _windows(scope, descending) if growing else [scope]
    for window in windows:
        rows = run_scoped(conn, window, sql, {**filter_params, **params}).to_pylist()
        if len(rows) == params["page_limit"] or window is scope:
            break
    return [r["trace_id"] for r in rows], [r["start_time"] for r in rows]


def count_traces(
    conn: duckdb.DuckDBPyConnection, scope: Scope, filters: TraceFilter | None = None
) -> int:
    """How many requests in ``scope`` match ``filters`` (the trace list's length)."""
    template, params = _sql(COUNT_TRACES_SQL, filters or TraceFilter(), None)
    return int(run_scoped(conn, scope, template, params).to_pylist()[0]["num_total"])


def list_traces(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    filters: TraceFilter | None = None,
    *,
    sort: str = "start_time",
    descending: bool = True,
    limit: int = 50,
    offset: int = 0,
    count: bool = True,
) -> TracePage:
    """One page of the requests in ``scope`` that match ``filters``, sorted by ``sort``.

    The order is total (ties broken by ``trace_id``), so pages neither overlap nor skip; a
    missing sort value (a trace without streamed calls has no TTFT) sorts last either way.
    ``count=False`` leaves ``num_total`` None (count later with :func:`count_traces`).
    """
    if sort not in SORT_COLUMNS:
        raise ValueError(f"cannot sort by {sort!r}; use one of {SORT_COLUMNS}")
    if limit < 1 or offset < 0:
        raise ValueError("limit must be at least 1 and offset at least 0")
    filters = filters or TraceFilter()
    direction = "DESC" if descending else "ASC"
    expression = _HEAD_EXPRESSIONS.get(sort) or _CALL_EXPRESSIONS[sort]
    order = f"{expression} {direction} NULLS LAST, c.trace_id {direction}"
    ids, starts = _page_ids(
        conn,
        scope,
        filters,
        order,
        sort,
        {"page_limit": limit, "page_offset": offset},
        descending,
    )
    num_total = count_traces(conn, scope, filters) if count else None
    return TracePage(read_trace_rows(conn, scope.project, ids, starts), num_total, offset, limit)


def sample_traces(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    filters: TraceFilter | None = None,
    *,
    num: int = 10,
    seed: int = 0,
) -> pl.DataFrame:
    """``num`` traces drawn at random (without replacement) from those that match ``filters``.

    The draw is the ``num`` smallest ``md5(trace_id || seed)``: the same seed and data give the
    same traces, and a new seed gives an independent draw.
    """
    order = "md5(c.trace_id || $f_seed), c.trace_id"
    ids, starts = _page_ids(
        conn,
        scope,
        filters or TraceFilter(),
        order,
        None,
        {"page_limit": num, "page_offset": 0, "f_seed": str(seed)},
    )
    return read_trace_rows(conn, scope.project, ids, starts)


# Phase 2: the page's traces, read whole. $f_ids is the page in order; list_contains (not a
# semi-join) lets DuckDB test the ids inside the Parquet scan.
TRACE_ROWS_SQL = f"""
WITH page_spans AS (
    SELECT * FROM scoped_trace_spans WHERE list_contains($f_ids, trace_id)
), span_totals AS (
    SELECT
        trace_id,
        min(start_time) AS first_start,
        max(end_time) AS last_end,
        count(*) AS num_spans,
        bool_or(status_code = 'ERROR') AS has_error,
        arg_min(user_id, start_time) FILTER (WHERE user_id IS NOT NULL) AS user_id,
        arg_min(session_id, start_time) FILTER (WHERE session_id IS NOT NULL) AS session_id,
        arg_min(
            struct_pack(
                name := name,
                service_name := service_name,
                status_code := status_code,
                start_time := start_time,
                end_time := end_time,
                duration_ms := duration_ms,
                input_text := input_text,
                output_text := output_text
            ),
            struct_pack(
                not_root := coalesce(parent_span_id, '') <> '',
                start_time := start_time,
                span_id := span_id
            )
        ) AS root
    FROM page_spans
    GROUP BY trace_id
), call_totals AS (
    SELECT
        trace_id,
        count(*) AS num_llm_calls,
        CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
        CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
        sum(total_cost_usd) AS total_cost_usd,
        arg_min(ttft_ms, start_time) FILTER (WHERE ttft_ms IS NOT NULL) AS ttft_ms,
        list_sort(list_distinct(list(model) FILTER (WHERE model IS NOT NULL))) AS models,
        arg_min(input_text, start_time) FILTER (WHERE input_text IS NOT NULL) AS first_input,
        arg_max(output_text, start_time) FILTER (WHERE output_text IS NOT NULL) AS last_output
    FROM scoped_trace_calls
    WHERE list_contains($f_ids, trace_id)
    GROUP BY trace_id
), feedback_totals AS (
    SELECT
        trace_id,
        count(*) FILTER (WHERE {FEEDBACK_SIGNALS["thumbs_up"]}) AS thumbs_up,
        count(*) FILTER (WHERE {FEEDBACK_SIGNALS["thumbs_down"]}) AS thumbs_down,
        count(*) FILTER (WHERE {FEEDBACK_SIGNALS["edited"]}) AS num_edits,
        count(*) FILTER (WHERE {FEEDBACK_SIGNALS["commented"]}) AS num_comments,
        count(*) FILTER (WHERE {FEEDBACK_SIGNALS["reported"]}) AS num_reports
    FROM scoped_trace_feedback
    WHERE list_contains($f_ids, trace_id)
    GROUP BY trace_id
), labels AS (
    SELECT trace_id, list_sort(list_distinct(list(label))) AS labels
    FROM scoped_trace_annotations
    WHERE list_contains($f_ids, trace_id)
    GROUP BY trace_id
)
SELECT
    s.trace_id,
    s.root.start_time AS start_time,
    s.root.name AS name,
    s.root.service_name AS service_name,
    s.user_id,
    s.session_id,
    coalesce(
        s.root.duration_ms,
        date_diff('microsecond', s.root.start_time, s.root.end_time) / 1000.0
    ) AS duration_ms,
    c.ttft_ms,
    s.num_spans,
    coalesce(c.num_llm_calls, 0) AS num_llm_calls,
    coalesce(c.input_tokens, 0) AS input_tokens,
    coalesce(c.output_tokens, 0) AS output_tokens,
    coalesce(c.input_tokens, 0) + coalesce(c.output_tokens, 0) AS total_tokens,
    CASE WHEN c.trace_id IS NULL THEN 0.0 ELSE c.total_cost_usd END AS total_cost_usd,
    coalesce(c.models, []::VARCHAR[]) AS models,
    s.root.status_code AS status_code,
    s.has_error,
    s.trace_id IN (
        SELECT trace_id FROM scoped_trace_guardrails
        WHERE list_contains($f_ids, trace_id) AND {GUARDRAIL_TRIGGERED_SQL}
    ) AS guardrail_triggered,
    coalesce(f.thumbs_up, 0) AS thumbs_up,
    coalesce(f.thumbs_down, 0) AS thumbs_down,
    coalesce(f.num_edits, 0) AS num_edits,
    coalesce(f.num_comments, 0) AS num_comments,
    coalesce(f.num_reports, 0) AS num_reports,
    coalesce(l.labels, []::VARCHAR[]) AS labels,
    coalesce(s.root.input_text, c.first_input) AS input_preview,
    coalesce(s.root.output_text, c.last_output) AS output_preview
FROM span_totals AS s
LEFT JOIN call_totals AS c ON c.trace_id = s.trace_id
LEFT JOIN feedback_totals AS f ON f.trace_id = s.trace_id
LEFT JOIN labels AS l ON l.trace_id = s.trace_id
ORDER BY list_position($f_ids, s.trace_id)
"""


def read_trace_rows(
    conn: duckdb.DuckDBPyConnection,
    project: str,
    trace_ids: Sequence[str],
    starts: Sequence[datetime],
) -> pl.DataFrame:
    """List rows (:data:`TRACE_COLUMNS`) of the given traces, in the given order.

    ``starts`` are the traces' start times (at least roughly): the spans read are bounded to
    within ``TRACE_MARGIN`` of them, so a page reads its own stretch of the lake.
    """
    if not trace_ids:
        return _empty_rows()
    first, last = min(starts), max(starts)
    around = Scope(project, first, last + timedelta(microseconds=1))
    table = run_scoped(conn, around, TRACE_ROWS_SQL, {"f_ids": list(trace_ids)})
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.select(TRACE_COLUMNS)


def _empty_rows() -> pl.DataFrame:
    schema: dict[str, Any] = {
        "trace_id": pl.String,
        "start_time": pl.Datetime("us", "UTC"),
        "name": pl.String,
        "service_name": pl.String,
        "user_id": pl.String,
        "session_id": pl.String,
        "duration_ms": pl.Float64,
        "ttft_ms": pl.Float64,
        "num_spans": pl.Int64,
        "num_llm_calls": pl.Int64,
        "input_tokens": pl.Int64,
        "output_tokens": pl.Int64,
        "total_tokens": pl.Int64,
        "total_cost_usd": pl.Float64,
        "models": pl.List(pl.String),
        "status_code": pl.String,
        "has_error": pl.Boolean,
        "guardrail_triggered": pl.Boolean,
        "thumbs_up": pl.Int64,
        "thumbs_down": pl.Int64,
        "num_edits": pl.Int64,
        "num_comments": pl.Int64,
        "num_reports": pl.Int64,
        "labels": pl.List(pl.String),
        "input_preview": pl.String,
        "output_preview": pl.String,
    }
    return pl.DataFrame(schema=schema)


SESSIONS_BY_USER_SQL = f"""
WITH user_traces AS (
    SELECT trace_id, min(start_time) AS start_time
    FROM scoped_root_spans
    WHERE trace_id IN (SELECT trace_id FROM scoped_trace_spans WHERE user_id = $f_user)
    GROUP BY trace_id
), span_totals AS (
    SELECT
        trace_id,
        max(end_time) AS end_time,
        bool_or(status_code = 'ERROR') AS has_error,
        arg_min(session_id, start_time) FILTER (WHERE session_id IS NOT NULL) AS session_id
    FROM scoped_trace_spans
    WHERE trace_id IN (SELECT trace_id FROM user_traces)
    GROUP BY trace_id
), call_totals AS (
    SELECT trace_id, sum(total_cost_usd) AS total_cost_usd
    FROM scoped_request_calls
    WHERE trace_id IN (SELECT trace_id FROM user_traces)
    GROUP BY trace_id
), feedback_totals AS (
    SELECT
        trace_id,
        count(*) FILTER (WHERE {FEEDBACK_SIGNALS["thumbs_up"]}) AS thumbs_up,
        count(*) FILTER (WHERE {FEEDBACK_SIGNALS["thumbs_down"]}) AS thumbs_down
    FROM scoped_trace_feedback
    WHERE trace_id IN (SELECT trace_id FROM user_traces)
    GROUP BY trace_id
)
SELECT
    s.session_id,
    min(t.start_time) AS start_time,
    max(s.end_time) AS end_time,
    count(*) AS num_traces,
    count(*) FILTER (WHERE s.has_error) AS num_errors,
    coalesce(sum(c.total_cost_usd), 0.0) AS total_cost_usd,
    CAST(coalesce(sum(f.thumbs_up), 0) AS BIGINT) AS thumbs_up,
    CAST(coalesce(sum(f.thumbs_down), 0) AS BIGINT) AS thumbs_down,
    arg_min(t.trace_id, t.start_time) AS first_trace_id
FROM user_traces AS t
JOIN span_totals AS s ON s.trace_id = t.trace_id
LEFT JOIN call_totals AS c ON c.trace_id = t.trace_id
LEFT JOIN feedback_totals AS f ON f.trace_id = t.trace_id
GROUP BY s.session_id
ORDER BY start_time, s.session_id NULLS LAST
"""


def sessions_by_user(conn: duckdb.DuckDBPyConnection, scope: Scope, user_id: str) -> pl.DataFrame:
    """A user's sessions with a request in ``scope``, oldest first.

    Columns: ``session_id`` (null groups the user's requests without a session),
    ``start_time``, ``end_time``, ``num_traces``, ``num_errors`` (traces with a failed span),
    ``total_cost_usd``, ``thumbs_up``, ``thumbs_down``, ``first_trace_id``.
    """
    frame = pl.from_arrow(run_scoped(conn, scope, SESSIONS_BY_USER_SQL, {"f_user": user_id}))
    assert isinstance(frame, pl.DataFrame)
    return frame


LIST_OPERATIONS_SQL = """
SELECT DISTINCT operation FROM scoped_spans WHERE operation IS NOT NULL ORDER BY operation
"""


def list_operations(conn: duckdb.DuckDBPyConnection, scope: Scope) -> list[str]:
    """Every span operation seen in the scope, sorted (for the operation filter)."""
    rows = run_scoped(conn, scope, LIST_OPERATIONS_SQL).to_pylist()
    return [row["operation"] for row in rows]


LIST_LABELS_SQL = """
SELECT DISTINCT label FROM scoped_trace_annotations ORDER BY label
"""


def list_labels(conn: duckdb.DuckDBPyConnection, scope: Scope) -> list[str]:
    """Every annotation label used near the scope's window, sorted (for the label filter)."""
    return [row["label"] for row in run_scoped(conn, scope, LIST_LABELS_SQL).to_pylist()]
