"""What a metric looks at: a project, a half-open time window and optional filters.

This module is the one place that turns a :class:`Scope` into SQL. Metric SQL never filters by
project, time or service itself: it reads the scoped relations ``scoped_spans``,
``scoped_llm_calls`` and ``scoped_traces``, which :func:`run_scoped` defines as common table
expressions over the catalog views, with every value bound as a parameter.

Filter semantics, per relation:

* ``scoped_traces``: traces of the project whose (root) ``start_time`` is in ``[start, end)``,
  whose root ``service_name`` is one of ``services`` and which made a call to one of ``models``.
* ``scoped_llm_calls``: model calls of the project that started in the window, ran in one of
  ``services`` and whose ``model`` is one of ``models``.
* ``scoped_spans``: spans of the project that started in the window and ran in one of
  ``services``; with a model filter, only spans whose model (response, else request) matches.

An empty ``services`` or ``models`` tuple means "no filter".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from store.catalog import query, quote_identifier

__all__ = [
    "Scope",
    "data_time_range",
    "list_models",
    "list_projects",
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

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("Scope.start and Scope.end must be timezone-aware datetimes")
        if self.end < self.start:
            raise ValueError(f"Scope.end ({self.end}) is before Scope.start ({self.start})")
        # Accept any iterable of names but store a sorted tuple, so equal scopes hash alike.
        object.__setattr__(self, "services", tuple(sorted(set(self.services))))
        object.__setattr__(self, "models", tuple(sorted(set(self.models))))


_LEADING_WITH = re.compile(r"WITH\s+(?!RECURSIVE\b)", re.IGNORECASE)

# The view each scoped relation reads, and the column (or expression) each filter tests.
_SCOPED_RELATIONS: tuple[tuple[str, str, str], ...] = (
    # (scoped name, catalog view, model predicate with a $models list parameter)
    ("scoped_spans", "spans", "list_contains($models, coalesce(response_model, request_model))"),
    ("scoped_llm_calls", "llm_calls", "list_contains($models, model)"),
    (
        "scoped_traces",
        # Only the spans near the window are aggregated into traces (see TRACE_MARGIN).
        "traces_between($trace_spans_from, $trace_spans_to)",
        "list_has_any(models, $models)",
    ),
)

#: How far outside the window a scoped trace's spans may start and still be counted. A trace
#: is assumed to last less than this (and its clocks to disagree by less): the scoped traces
#: aggregate only the spans in [start - margin, end + margin), so a query reads the lake near
#: its window instead of grouping all of it.
TRACE_MARGIN = timedelta(days=1)


def _scope_ctes(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The ``WITH`` body that defines the scoped relations, and its bound parameters."""
    params: dict[str, Any] = {
        "project": scope.project,
        "start": scope.start,
        "end": scope.end,
        "trace_spans_from": scope.start - TRACE_MARGIN,
        "trace_spans_to": scope.end + TRACE_MARGIN,
    }
    if scope.services:
        params["services"] = list(scope.services)
    if scope.models:
        params["models"] = list(scope.models)
    ctes = []
    for scoped, view, model_predicate in _SCOPED_RELATIONS:
        predicates = ["project = $project", "start_time >= $start", "start_time < $end"]
        if scope.services:
            predicates.append("list_contains($services, service_name)")
        if scope.models:
            predicates.append(model_predicate)
        where = " AND ".join(predicates)
        source = view if "(" in view else quote_identifier(view)
        ctes.append(f"{quote_identifier(scoped)} AS (SELECT * FROM {source} WHERE {where})")
    return ",\n".join(ctes), params


def run_scoped(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    sql: str,
    params: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Run metric ``sql`` (which reads ``scoped_*`` relations) on its own cursor; return Arrow.

    ``params`` are the metric's own named parameters (``$name``); they must not reuse the
    scope's names (``project``, ``start``, ``end``, ``services``, ``models``). Metric SQL may
    read ``$start`` and ``$end`` (e.g. to lay out time buckets) but never filters with them.
    """
    ctes, bound = _scope_ctes(scope)
    for key, value in (params or {}).items():
        if key in bound or key in ("services", "models", "trace_spans_from", "trace_spans_to"):
            raise ValueError(f"parameter name {key!r} is reserved for the scope")
        bound[key] = value
    body = sql.strip()
    # A metric may have its own WITH clause: the scope's CTEs go first, the metric's after.
    own_with = _LEADING_WITH.match(body)
    text = f"WITH {ctes},\n{body[own_with.end() :]}" if own_with else f"WITH {ctes}\n{body}"
    cur = conn.cursor()  # DuckDB connections are not thread-safe; a cursor per query is.
    try:
        cur.execute("SET TimeZone = 'UTC'")
        return query(cur, text, bound)
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
