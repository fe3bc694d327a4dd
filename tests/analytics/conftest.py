"""``FLYWHEEL_TEST_ENGINE=clickhouse`` runs the analytics tests on ClickHouse (chdb).

Every test module here opens its catalog with ``store.catalog.open_catalog``; with the variable
set, that name is :func:`tests.clickhouse_lake.open_clickhouse_lake` instead, in the test modules
and the helpers they import, so the same tests and references check the ClickHouse backend.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from store import catalog

ENGINE = os.environ.get("FLYWHEEL_TEST_ENGINE", "duckdb")


@pytest.fixture(autouse=True, scope="session")
def _catalog_engine() -> Iterator[None]:
    if ENGINE == "duckdb":
        yield
        return
    if ENGINE != "clickhouse":
        raise pytest.UsageError(f"FLYWHEEL_TEST_ENGINE={ENGINE!r}: use duckdb or clickhouse")
    from tests.clickhouse_lake import open_clickhouse_lake

    original = catalog.open_catalog
    patched = []
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name.startswith("tests.") and getattr(module, "open_catalog", None) is original:
            module.open_catalog = open_clickhouse_lake  # type: ignore[attr-defined]
            patched.append(module)
    yield
    for module in patched:
        module.open_catalog = original  # type: ignore[attr-defined]
