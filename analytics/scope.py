"""What a metric looks at: a project, a half-open time window and optional filters.

This module is the one place that turns a :class:`Scope` into SQL. Metric SQL never filters by
project, time or service itself: it reads the scoped relations ``scoped_spans``,
``scoped_llm_calls`` and ``scoped_traces`` (and the others below), which :func:`run_scoped`
defines as common table expressions over the catalog, with every value bound as a parameter.

Filter semantics, per relation:

* ``scoped_traces``: traces of the project whose (root) ``start_time`` is in ``[start, end)``,
  whose root ``service_name`` is one of ``services``, which made a call to one of ``models`` and
  whose route is one of ``routes``.
* ``scoped_llm_calls``: model calls of the project that started in the window, ran in one of
  ``services``, whose ``model`` is one of ``models`` and whose trace's route is one of ``routes``.
* ``scoped_spans``: spans of the project that started in the window and ran in one of
  ``services``; with a model filter, only spans whose model (response, else request) matches;
  with a route filter, only spans of traces on one of the routes.
* ``scoped_roots``: a lookup, not a filter: one row per trace whose root span (no parent)
  started within :data:`TRACE_MARGIN` of the window — ``project``, ``trace_id``, ``route``,
  ``user_id``, ``session_id`` of that root (the earliest root if a trace has several). Metrics
  join calls and spans to it to attribute them to their request's route, user or session.

* ``scoped_root_spans``: root spans (no parent) of the project that started in the window, in
  one of ``services``, named one of ``routes``, of traces that made a call to one of ``models``.
  The trace list reads these (one request each) instead of grouping every span.
* ``scoped_trace_spans``, ``scoped_trace_calls``: every span (model call) of the project that
  started from :data:`TRACE_SKEW` before the window to :data:`TRACE_MARGIN` after it, with no
  other filter: a request whose root is in scope is read whole, whatever service or model its
  other spans have.
* ``scoped_request_calls``, ``scoped_request_parts``: the same model calls, and the trace parts
  (``views.sql``: ``trace_parts_of``) of the same spans, without texts, attribute maps, events
  or links: use them to total or test whole requests cheaply.
* ``scoped_span_parts``: the trace parts of the project's spans that started in the window (no
  other filter), so that counting the traces with a span in the window reads no span.
* ``scoped_trace_feedback``, ``scoped_trace_annotations``: the project's feedback and
  annotations from ``TRACE_SKEW`` before the window on (late feedback counts).
* ``scoped_guardrails``: guardrail results (``store.schema.GUARDRAIL_SCHEMA``) whose ``time``
  is in the window, of spans in one of ``services``, on a call to one of ``models`` or in a
  request that called one, in a trace on one of ``routes``. ``scoped_trace_guardrails``: every
  guardrail result near the window, unfiltered, like ``scoped_trace_spans``.

An empty ``services``, ``models`` or ``routes`` tuple means "no filter".

**What is kept.** ``scoped_traces``, ``scoped_llm_calls``, ``scoped_roots``,
``scoped_root_spans`` and the ``*_parts`` and ``scoped_request_calls`` relations read
:mod:`store.derived`'s kept files for the whole hours of their windows and compute only the
partial hours at each end (and segments not kept yet) from the spans, so they equal what the
spans give. ``scoped_llm_calls`` and ``scoped_root_spans`` have every column but the texts,
attribute maps, events and links (:data:`store.derived.CALL_COLUMNS_EXCLUDED`); metrics that
need those read ``scoped_spans`` or ``scoped_trace_spans``. Spans are read with the catalog's
``spans_between``, which opens only the window's date partitions.

**Route.** A request's route is its root span's *name*. OpenTelemetry's HTTP conventions name a
server span ``{method} {http.route}`` (``POST /chat``), a low-cardinality template that already
says what ``http.route`` says and tells ``GET /items`` from ``POST /items``; a root that is not
an HTTP server (a job, an agent, an OpenInference ``query`` chain) is named for what it does.
The name is also on ``traces`` already, so filtering or grouping by route costs no read of the
attribute maps. Calls and spans of a trace whose root has not arrived have no route (they are
left out by a route filter; grouped under ``null``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from store.catalog import data_dir_of, query, quote_identifier, quote_literal, segments_sql
from store.derived import CALL_COLUMNS_EXCLUDED, Derived, whole_hours
from store.lake import SPANS

__all__ = [
    "RESERVED_PARAMS",
    "TRACE_MARGIN",
    "TRACE_SKEW",
    "Scope",
    "data_time_range",
    "list_models",
    "list_projects",
    "list_routes",
    "list_services",
    "quote_identifier",
    "run_scoped",
]


@dataclass(frozen=True)
class Scope:
    """A project, a half-open window ``[start, end)`` on ``start_time``, and optional filters."""

    project: str
    start: datetime
    end: datetime
    services: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("Scope.start and Scope.end must be timezone-aware datetimes")
        if self.end < self.start:
            raise ValueError(f"Scope.end ({self.end}) is before Scope.start ({self.start})")
        # Accept any iterable of names but store a sorted tuple, so equal scopes hash alike.
        object.__setattr__(self, "services", tuple(sorted(set(self.services))))
        object.__setattr__(self, "models", tuple(sorted(set(self.models))))
        object.__setattr__(self, "routes", tuple(sorted(set(self.routes))))


_LEADING_WITH = re.compile(r"WITH\s+(?!RECURSIVE\b)", re.IGNORECASE)

#: How far outside the window a scoped trace's spans may start and still be counted. A trace
#: is assumed to last less than this (and its clocks to disagree by less): the scoped traces
#: aggregate only the spans in [start - margin, end + margin), so a query reads the lake near
#: its window instead of grouping all of it.
TRACE_MARGIN = timedelta(days=1)

#: How much earlier than its root a span of the same request may start (the clocks of two
#: services disagree by less). A request's spans are read from its root's start minus this,
#: so reading whole requests costs no extra day of the lake before the window.
TRACE_SKEW = timedelta(minutes=5)

# Root spans near the window, one per trace: the request each call or span belongs to. Defined
# before the scoped relations, so their route filter can read it.
_SCOPED_ROOTS_SQL = """
SELECT project, trace_id, r.route AS route, r.user_id AS user_id, r.session_id AS session_id
FROM (
    SELECT
        project,
        trace_id,
        arg_min(
            struct_pack(route := name, user_id := user_id, session_id := session_id),
            struct_pack(start_time := start_time, span_id := span_id)
        ) AS r
    FROM scoped_near_roots
    GROUP BY project, trace_id
)
"""

_TRACE_WINDOW = ("trace_spans_from", "trace_spans_to")
_REQUEST_WINDOW = ("request_spans_from", "trace_spans_to")

_IN_ROUTES = "trace_id IN (SELECT trace_id FROM scoped_roots WHERE list_contains($routes, route))"

# The relation each scoped relation reads, and the predicate each optional filter adds. Spans
# are read with the catalog's `spans_between`, which opens only the window's date partitions.
_SCOPED_RELATIONS: tuple[tuple[str, str, str, str, str], ...] = (
    # (scoped name, source relation, its time column, model predicate, route predicate)
    (
        "scoped_spans",
        "spans_between($start, $end)",
        "start_time",
        "list_contains($models, coalesce(response_model, request_model))",
        _IN_ROUTES,
    ),
    # Kept rows of the window's whole hours, and the calls of its partial hours (see below).
    (
        "scoped_llm_calls",
        "scoped_call_rows",
        "start_time",
        "list_contains($models, model)",
        _IN_ROUTES,
    ),
    (
        "scoped_traces",
        # Only the spans near the window are aggregated into traces (see TRACE_MARGIN), from
        # the kept parts of its whole hours and the spans of the partial hours at its ends.
        "traces_from_parts('scoped_trace_parts')",
        "start_time",
        "list_has_any(models, $models)",
        "list_contains($routes, name)",
    ),
    (
        # Root spans only (kept ones, see below): the trace list pages through these without
        # grouping every span.
        "scoped_root_spans",
        "scoped_root_rows",
        "start_time",
        "trace_id IN (SELECT trace_id FROM scoped_request_calls WHERE list_contains($models, model))",
        "list_contains($routes, name)",
    ),
    (
        # Guardrail results (``time`` in the window): a model filter keeps the results on
        # calls to those models and those of requests that called one.
        "scoped_guardrails",
        "guardrails_between($start, $end)",
        "time",
        "(list_contains($models, model) OR trace_id IN "
        "(SELECT trace_id FROM scoped_request_calls WHERE list_contains($models, model)))",
        _IN_ROUTES,
    ),
)

# Every span, model call, feedback record and annotation that a trace of the window can have,
# unfiltered: a trace is read whole (its totals, its search text) once its root is in scope.
_WHOLE_TRACE_RELATIONS: tuple[tuple[str, str], ...] = (
    # (scoped name, relation over the project's rows near the window)
    ("scoped_trace_spans", "spans_between($request_spans_from, $trace_spans_to)"),
    ("scoped_trace_calls", "llm_calls_of('scoped_trace_spans')"),
    # Feedback and reviews come after the trace, sometimes days later: no upper bound.
    ("scoped_trace_feedback", "feedback_between($request_spans_from, 'infinity'::TIMESTAMPTZ)"),
    (
        "scoped_trace_annotations",
        "annotations_between($request_spans_from, 'infinity'::TIMESTAMPTZ)",
    ),
    ("scoped_trace_guardrails", "guardrails_between($request_spans_from, $trace_spans_to)"),
)

_UNKEPT_CALL_COLUMNS = ", ".join(CALL_COLUMNS_EXCLUDED)


@dataclass(frozen=True)
class _Derived:
    """A scoped relation read from what store.derived keeps, for one of the scope's windows.

    It holds the kept rows of the window's whole hours and, computed from the spans, the rows
    of the partial hours at each end (each its own range scan, so the reader skips the
    partitions and row groups outside it). With nothing kept, every hour is computed. Bound
    parameters: ``<name>_from`` and ``<name>_to`` (the kept hours).
    """

    name: str
    kind: str  # a store.derived.KINDS key
    time_column: str  # the kept rows' column to keep the whole hours by
    window: tuple[str, str]  # the parameters bounding the window
    edges: str  # the rows of spans ``{spans}`` (a relation name), as the kept kind has them

    def bounds(self) -> tuple[str, str]:
        return f"{self.name}_from", f"{self.name}_to"


_TRACE_PARTS = "SELECT * FROM trace_parts_of('{spans}')"
_CALL_ROWS = f"SELECT * EXCLUDE ({_UNKEPT_CALL_COLUMNS}) FROM llm_calls_of('{{spans}}')"
_ROOT_ROWS = (
    f"SELECT * EXCLUDE ({_UNKEPT_CALL_COLUMNS}) FROM {{spans}} "
    "WHERE coalesce(parent_span_id, '') = ''"
)
_DERIVED: tuple[_Derived, ...] = (
    # the requests of the window, with their spans up to TRACE_MARGIN around it
    _Derived("scoped_trace_parts", "trace_parts", "hour", _TRACE_WINDOW, _TRACE_PARTS),
    # the model calls of the window
    _Derived("scoped_call_rows", "llm_calls", "start_time", ("start", "end"), _CALL_ROWS),
    # the trace parts of the window's own spans (no filter but the project)
    _Derived("scoped_span_parts", "trace_parts", "hour", ("start", "end"), _TRACE_PARTS),
    # the root spans of the window, and of the traces' span window (to look requests up)
    _Derived("scoped_root_rows", "root_spans", "start_time", ("start", "end"), _ROOT_ROWS),
    _Derived("scoped_near_roots", "root_spans", "start_time", _TRACE_WINDOW, _ROOT_ROWS),
    # the parts and calls of requests read whole (as scoped_trace_spans and _calls are)
    _Derived("scoped_request_parts", "trace_parts", "hour", _REQUEST_WINDOW, _TRACE_PARTS),
    _Derived("scoped_request_calls", "llm_calls", "start_time", _REQUEST_WINDOW, _CALL_ROWS),
)

#: Parameter names the scope binds; a metric's own parameters must use other names.
RESERVED_PARAMS = frozenset(
    (
        "project",
        "start",
        "end",
        "services",
        "models",
        "routes",
        "trace_spans_from",
        "trace_spans_to",
        "request_spans_from",
        *(bound for derived in _DERIVED for bound in derived.bounds()),
    )
)


def _edge_spans_sql(params: Mapping[str, Any], derived: _Derived, unkept: tuple[str, ...]) -> str:
    """The spans the kept rows do not cover: the partial hours at the window's ends, and the
    kept hours' spans in segments that have nothing kept yet."""
    (lo, hi), (kept_lo, kept_hi) = derived.window, derived.bounds()
    ranges = [
        f"SELECT * FROM spans_between(${a}, ${b}) WHERE project = $project"
        for a, b in ((lo, kept_lo), (kept_hi, hi))
        if params[a] < params[b]
    ]
    if unkept and params[kept_lo] < params[kept_hi]:
        ranges.append(
            f"SELECT * FROM ({segments_sql(SPANS, unkept)}) WHERE project = $project "
            f"AND start_time >= ${kept_lo} AND start_time < ${kept_hi}"
        )
    return " UNION ALL ".join(ranges) or "SELECT * FROM spans WHERE false"


def _derived_sql(derived: _Derived, files: tuple[str, ...], edge_spans: str) -> str:
    edges = derived.edges.format(spans=edge_spans)
    if not files:
        return edges
    listed = ", ".join(quote_literal(name) for name in files)
    lo, hi = derived.bounds()
    column = derived.time_column
    return (
        f"SELECT * FROM read_parquet([{listed}]) "
        f"WHERE project = $project AND {column} >= ${lo} AND {column} < ${hi} "
        f"UNION ALL BY NAME {edges}"
    )


def _scope_ctes(
    conn: duckdb.DuckDBPyConnection, scope: Scope
) -> tuple[dict[str, str], dict[str, Any]]:
    """The scoped relations' definitions (name → ``"name" AS (…)``, each after those it reads),
    and their bound parameters."""
    trace_spans_from = scope.start - TRACE_MARGIN
    trace_spans_to = scope.end + TRACE_MARGIN
    # Kept per-segment work exists for the Parquet lake only (DuckDB's catalog).
    data_dir = data_dir_of(conn) if isinstance(conn, duckdb.DuckDBPyConnection) else None
    kept = (
        Derived(data_dir).ensure(conn, trace_spans_from, trace_spans_to)
        if data_dir is not None
        else None
    )
    params: dict[str, Any] = {
        "project": scope.project,
        "start": scope.start,
        "end": scope.end,
        "trace_spans_from": trace_spans_from,
        "trace_spans_to": trace_spans_to,
        "request_spans_from": scope.start - TRACE_SKEW,
    }
    for derived in _DERIVED:
        lo, hi = (params[name] for name in derived.window)
        if kept is None or kept.start >= kept.end:  # nothing kept: compute every hour
            params.update(zip(derived.bounds(), (hi, hi), strict=True))
        else:  # every window lies inside the traces' span window, whose segments are listed
            params.update(zip(derived.bounds(), whole_hours(lo, hi), strict=True))
    if scope.services:
        params["services"] = list(scope.services)
    if scope.models:
        params["models"] = list(scope.models)
    if scope.routes:
        params["routes"] = list(scope.routes)
    ctes: dict[str, str] = {}
    for derived in _DERIVED:
        edge_spans = f"{derived.name}_edge_spans"
        ctes[edge_spans] = (
            f"{quote_identifier(edge_spans)} AS NOT MATERIALIZED "
            f"({_edge_spans_sql(params, derived, kept.unkept if kept is not None else ())})"
        )
        files = kept.files.get(derived.kind, ()) if kept is not None else ()
        ctes[derived.name] = (
            f"{quote_identifier(derived.name)} AS NOT MATERIALIZED "
            f"({_derived_sql(derived, files, edge_spans)})"
        )
    ctes["scoped_roots"] = f"{quote_identifier('scoped_roots')} AS ({_SCOPED_ROOTS_SQL.strip()})"
    for scoped, source in _WHOLE_TRACE_RELATIONS:
        ctes[scoped] = (
            f"{quote_identifier(scoped)} AS (SELECT * FROM {source} WHERE project = $project)"
        )
    for scoped, view, time_column, model_predicate, route_predicate in _SCOPED_RELATIONS:
        predicates = ["project = $project", f"{time_column} >= $start", f"{time_column} < $end"]
        if scope.services:
            predicates.append("list_contains($services, service_name)")
        if scope.models:
            predicates.append(model_predicate)
        if scope.routes:
            predicates.append(route_predicate)
        where = " AND ".join(predicates)
        source = view if "(" in view else quote_identifier(view)
        ctes[scoped] = f"{quote_identifier(scoped)} AS (SELECT * FROM {source} WHERE {where})"
    return ctes, params


def _used_ctes(ctes: dict[str, str], body: str) -> str:
    """The ``WITH`` body of the definitions ``body`` reads, directly or through another one.

    Every definition is bound and optimized even when nothing reads it, which costs tens of
    milliseconds a query (the kept-file lists are long), so the unread ones are left out.
    """
    wanted: set[str] = set()
    pending = [body]
    while pending:
        text = pending.pop()
        for name in ctes.keys() - wanted:
            if re.search(rf"\b{name}\b", text):
                wanted.add(name)
                pending.append(ctes[name].split(" AS ", 1)[1])
    return ",\n".join(definition for name, definition in ctes.items() if name in wanted)


def run_scoped(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    sql: str,
    params: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Run metric ``sql`` (which reads ``scoped_*`` relations) on its own cursor; return Arrow.

    ``params`` are the metric's own named parameters (``$name``); they must not reuse the
    scope's names (:data:`RESERVED_PARAMS`). Metric SQL may read ``$start`` and ``$end`` (e.g.
    to lay out time buckets) but never filters with them.
    """
    for key in params or {}:
        if key in RESERVED_PARAMS:
            raise ValueError(f"parameter name {key!r} is reserved for the scope")
    body = sql.strip()
    # A metric may have its own WITH clause: the scope's CTEs go first, the metric's after.
    own_with = _LEADING_WITH.match(body)
    cur = conn.cursor()  # DuckDB connections are not thread-safe; a cursor per query is.
    try:
        cur.execute("SET TimeZone = 'UTC'")
        for attempt in (1, 2):
            definitions, bound = _scope_ctes(cur, scope)
            bound.update(params or {})
            ctes = _used_ctes(definitions, body)
            if not ctes:
                text = body
            elif own_with:
                text = f"WITH {ctes},\n{body[own_with.end() :]}"
            else:
                text = f"WITH {ctes}\n{body}"
            # DuckDB rejects unused parameters; which of the scope's a query uses depends on
            # what is kept (a window without kept rows reads no kept-hours bounds).
            bound = {
                key: value
                for key, value in bound.items()
                if key not in RESERVED_PARAMS or re.search(rf"\${key}\b", text)
            }
            try:
                return query(cur, text, bound)
            except duckdb.IOException:
                # A kept trace part vanished under the query (its segment was compacted):
                # list the parts again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
    finally:
        cur.close()


def _run(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    cur = conn.cursor()
    try:
        cur.execute("SET TimeZone = 'UTC'")
        rows: list[dict[str, Any]] = query(cur, sql, dict(params) or None).to_pylist()
        return rows
    finally:
        cur.close()


DATA_TIME_RANGE_SQL = """
SELECT min(start_time) AS first, max(start_time) AS last FROM spans WHERE project = $project
"""


def data_time_range(
    conn: duckdb.DuckDBPyConnection, project: str
) -> tuple[datetime | None, datetime | None]:
    """Earliest and latest span ``start_time`` of a project (``(None, None)`` when it has none)."""
    row = _run(conn, DATA_TIME_RANGE_SQL, {"project": project})[0]
    return row["first"], row["last"]


LIST_PROJECTS_SQL = """
SELECT DISTINCT project FROM spans ORDER BY project
"""


def list_projects(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every project that has spans, sorted."""
    return [row["project"] for row in _run(conn, LIST_PROJECTS_SQL, {})]


LIST_SERVICES_SQL = """
SELECT DISTINCT service_name FROM spans
WHERE project = $project AND service_name IS NOT NULL
ORDER BY service_name
"""


def list_services(conn: duckdb.DuckDBPyConnection, project: str) -> list[str]:
    """Every service name seen in a project, sorted."""
    return [row["service_name"] for row in _run(conn, LIST_SERVICES_SQL, {"project": project})]


LIST_MODELS_SQL = """
SELECT DISTINCT model FROM llm_calls
WHERE project = $project AND model IS NOT NULL
ORDER BY model
"""


def list_models(conn: duckdb.DuckDBPyConnection, project: str) -> list[str]:
    """Every model name (response model, else request model) called in a project, sorted."""
    return [row["model"] for row in _run(conn, LIST_MODELS_SQL, {"project": project})]


LIST_ROUTES_SQL = """
SELECT DISTINCT name AS route FROM spans
WHERE project = $project AND coalesce(parent_span_id, '') = '' AND name IS NOT NULL
ORDER BY route
"""


def list_routes(conn: duckdb.DuckDBPyConnection, project: str) -> list[str]:
    """Every route (root span name, see the module docstring) seen in a project, sorted."""
    return [row["route"] for row in _run(conn, LIST_ROUTES_SQL, {"project": project})]
