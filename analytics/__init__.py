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

Modules, one per metric family: ``scope`` (scoping, routes and filter lists), ``latency``
(percentiles of request latency, TTFT and TPOT; histograms; prefill vs decode), ``throughput``
(requests per minute, tokens per second, concurrency), ``slos`` (the SLO file) and ``goodput``
(good requests against the SLOs, burn rates), ``overview`` (the Overview page), ``cost`` (the
price table and spend), ``guardrails`` (trigger rates, latency, false-positive signals, spikes,
read from the ``guardrails`` table ingest fills) and ``quality`` (format errors, refusals,
truncation, empty output, content filtering), ``changes`` (model version, system prompt,
route, tool and price changes, and the metrics before and after each) and ``alerts`` (rules as
data, evaluated over windows), ``embeddings`` (offline sentence embeddings, cached in the lake)
and ``drift`` (embedding drift between two windows with Evidently's methods), ``columns``
(the same windows column by column: lengths, tokens, latency, TTFT, language, route, model),
``feedback`` (explicit feedback: rates, segments, what predicts a thumbs-down) and ``implicit``
(regenerations, rephrases, corrections, abandonment and follow-up sentiment, from sessions),
``business`` (active users, retention, sessions, imported daily metrics, and their correlation
with quality), ``preferences`` (DPO pairs and SFT examples from feedback), ``cache`` and
``semantic_cache`` (what an exact or a semantic response cache would have saved and risked) and ``routing`` (intents where
a cheaper model already does as well).

This package imports ``store`` and nothing else of the project; ``app`` imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analytics.business import (
    quality_business_correlation,
    retention_cohorts,
    session_stats,
    user_activity,
)
from analytics.cache import exact_cache_opportunity
from analytics.changes import change_events, change_impact
from analytics.columns import column_drift
from analytics.cost import (
    cost_by_dimension,
    cost_by_time,
    cost_projection,
    cost_summary,
    most_expensive_traces,
    unpriced_models,
)
from analytics.drift import drift_by_day, embedding_drift, topic_shift
from analytics.feedback import (
    feedback_by_segment,
    feedback_by_time,
    feedback_summary,
    thumbs_down_drivers,
)
from analytics.goodput import (
    bad_requests,
    burn_rate_by_time,
    goodput_by_dimension,
    goodput_by_time,
    goodput_summary,
    slo_misses,
)
from analytics.guardrails import (
    blocks_followed_by_pass,
    guardrail_latency,
    guardrail_rate_by_category,
    guardrail_rate_by_dimension,
    guardrail_rate_by_guardrail,
    guardrail_rate_by_time,
    guardrail_results,
    guardrail_spikes,
)
from analytics.implicit import implicit_turns
from analytics.latency import (
    latency_by_dimension,
    latency_by_time,
    latency_histogram,
    latency_percentiles,
    prefill_decode_by_model,
)
from analytics.overview import overview_summary, requests_by_time, top_models
from analytics.quality import quality_rates
from analytics.routing import routing_opportunity
from analytics.semantic_cache import semantic_cache_opportunity
from analytics.throughput import concurrency_by_time, throughput_by_time, throughput_summary

#: Every metric function, for completeness checks (each needs a test and a README row).
METRICS: tuple[Callable[..., Any], ...] = (
    latency_percentiles,
    overview_summary,
    requests_by_time,
    top_models,
    latency_by_dimension,
    latency_by_time,
    latency_histogram,
    prefill_decode_by_model,
    throughput_summary,
    throughput_by_time,
    concurrency_by_time,
    goodput_summary,
    goodput_by_time,
    goodput_by_dimension,
    burn_rate_by_time,
    slo_misses,
    bad_requests,
    cost_summary,
    cost_by_dimension,
    cost_by_time,
    most_expensive_traces,
    unpriced_models,
    cost_projection,
    guardrail_rate_by_guardrail,
    guardrail_rate_by_category,
    guardrail_rate_by_time,
    guardrail_rate_by_dimension,
    guardrail_latency,
    blocks_followed_by_pass,
    guardrail_spikes,
    guardrail_results,
    quality_rates,
    change_events,
    change_impact,
    embedding_drift,
    drift_by_day,
    topic_shift,
    column_drift,
    feedback_summary,
    feedback_by_time,
    feedback_by_segment,
    thumbs_down_drivers,
    implicit_turns,
    user_activity,
    retention_cohorts,
    session_stats,
    quality_business_correlation,
    exact_cache_opportunity,
    semantic_cache_opportunity,
    routing_opportunity,
)
