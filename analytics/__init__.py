"""Analytics: pure functions from (catalog connection, scope) to typed results.

Every metric takes a DuckDB connection from ``store.catalog.open_catalog`` and an
:class:`analytics.scope.Scope` (project, half-open window ``[start, end)``, optional service
and model filters). :mod:`analytics.scope` is the only code that turns a scope into SQL: a
metric's SQL is a named ``UPPER_SNAKE_SQL`` constant above the function that runs it, and it
reads the scoped relations ``scoped_traces``, ``scoped_llm_calls`` and ``scoped_spans``, never
the raw views, so no metric repeats filter logic. Values are bound as parameters.

Results are frozen dataclasses or Polars frames with documented columns. Percentiles have one
method everywhere (linear interpolation, :mod:`analytics.latency`). Cost is computed at read
time from the versioned price table in ``prices.toml`` (:mod:`analytics.cost`).

Modules, one per metric family: ``scope`` (scoping and filter lists), ``latency``
(percentiles), ``overview`` (the Overview page), ``cost`` (prices).

This package imports ``store`` and nothing else of the project; ``app`` imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analytics.latency import latency_percentiles
from analytics.overview import overview_summary, requests_by_time, top_models

#: Every metric function, for completeness checks (each needs a test and a README row).
METRICS: tuple[Callable[..., Any], ...] = (
    latency_percentiles,
    overview_summary,
    requests_by_time,
    top_models,
)
