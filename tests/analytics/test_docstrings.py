"""The formula examples in analytics docstrings hold, and every public function has a docstring."""

from __future__ import annotations

import doctest
import inspect
from types import ModuleType

import pytest

import analytics
from analytics import (
    alerts,
    business,
    cache,
    changes,
    columns,
    cost,
    drift,
    embeddings,
    feedback,
    goodput,
    guardrails,
    implicit,
    latency,
    overview,
    preferences,
    quality,
    routing,
    scope,
    semantic_cache,
    slos,
    throughput,
)

MODULES = (
    scope, latency, overview, cost, goodput, slos, throughput, guardrails, quality, changes, alerts,
    embeddings, drift, columns, feedback, implicit, business, preferences, cache, semantic_cache, routing,
)  # fmt: skip


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    failures, _ = doctest.testmod(module, raise_on_error=False, verbose=False)
    assert failures == 0


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_public_functions_have_docstrings(module: ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name}"


def test_every_registered_metric_is_public_and_documented() -> None:
    for metric in analytics.METRICS:
        module = inspect.getmodule(metric)
        assert module is not None and metric.__name__ in module.__all__
        assert inspect.getdoc(metric)
