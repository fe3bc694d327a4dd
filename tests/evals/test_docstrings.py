"""The examples in evals docstrings hold, and every public name has a docstring."""

from __future__ import annotations

import doctest
import inspect
from types import ModuleType

import pytest

from evals import cases, compare, datasets, evaluators, judge, replay, replay_traces, targets

MODULES = (cases, datasets, targets, evaluators, judge, replay, replay_traces, compare)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    failures, tried = doctest.testmod(module, raise_on_error=False, verbose=False)
    assert failures == 0
    assert tried > 0, f"{module.__name__} has no example"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_public_names_have_docstrings(module: ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{module.__name__}.{name}"
