"""The sample data as the Collector's ClickHouse exporter stores it, read by the analytics.

The sample traces go two ways: through Flywheel's file ingest into the Parquet lake (DuckDB),
and, request by request, into ``otel_traces`` exactly as the exporter writes it
(``ingest.clickhouse_rows``) on ClickHouse (chdb), where the catalog reads them through the
``spans`` view generated from the conventions file (``ingest.clickhouse_spans``). The page
functions give the same numbers on both. (The analytics tests themselves also run on ClickHouse:
``FLYWHEEL_TEST_ENGINE=clickhouse``; this is the exporter's layout end to end.)
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from analytics import cost, latency, overview, throughput
from analytics.cost import install_prices
from analytics.scope import Scope, data_time_range, list_models, list_services
from ingest.clickhouse_rows import otel_traces_rows
from ingest.clickhouse_spans import spans_select_sql
from ingest.files import iter_file
from store.catalog import open_catalog
from store.clickhouse import otel_traces_ddl
from store.clickhouse.catalog import ChdbEngine, ClickHouseCatalog, open_clickhouse_catalog
from store.lake import Lake
from tests.clickhouse_session import new_database, process_session
from tests.engines import SAMPLE_TRACES as SAMPLE
from tests.engines import assert_close, sample_requests

PROJECT = "default"


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, ClickHouseCatalog]:
    data_dir = tmp_path_factory.mktemp("collector")
    lake = Lake(data_dir)
    for batch in iter_file(SAMPLE, project=PROJECT):
        lake.write("spans", batch.spans)
    duck = open_catalog(data_dir)
    install_prices(duck)

    database = new_database()
    engine = ChdbEngine(process_session(), database)
    engine.query(otel_traces_ddl(database), {})  # the Collector's table, as it creates it
    engine.insert("otel_traces", pa.concat_tables(otel_traces_rows(r) for r in sample_requests()))
    catalog = open_clickhouse_catalog(
        engine, database, collector_spans=spans_select_sql(f"{database}.otel_traces")
    )
    assert catalog.reads_collector
    install_prices(catalog)
    return duck, catalog


def _frames(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == want.columns
    assert_close(got.to_dicts(), want.to_dicts())


def test_the_filters_list_the_same_services_models_and_time_range(engines) -> None:  # type: ignore[no-untyped-def]
    duck, ch = engines
    assert data_time_range(ch, PROJECT) == data_time_range(duck, PROJECT)
    assert list_services(ch, PROJECT) == list_services(duck, PROJECT)
    assert list_models(ch, PROJECT) == list_models(duck, PROJECT)
    assert len(list_models(duck, PROJECT)) >= 3


def _scopes(duck: Any) -> list[Scope]:
    first, last = data_time_range(duck, PROJECT)
    assert first is not None and last is not None
    end = last + timedelta(seconds=1)
    return [
        Scope(PROJECT, first, end),
        Scope(PROJECT, end - timedelta(days=3), end),
        Scope(PROJECT, first, end, models=(list_models(duck, PROJECT)[0],)),
    ]


def test_the_overview_is_the_same(engines) -> None:  # type: ignore[no-untyped-def]
    duck, ch = engines
    for scope in _scopes(duck):
        want = asdict(overview.overview_summary(duck, scope))
        assert want["num_requests"] > 0
        assert_close(asdict(overview.overview_summary(ch, scope)), want)
        _frames(overview.top_models(ch, scope), overview.top_models(duck, scope))
        bucket = timedelta(hours=6)
        _frames(
            overview.requests_by_time(ch, scope, bucket),
            overview.requests_by_time(duck, scope, bucket),
        )


def test_latency_throughput_and_cost_are_the_same(engines) -> None:  # type: ignore[no-untyped-def]
    duck, ch = engines
    scope = _scopes(duck)[0]
    for kind in ("request", "ttft", "tpot"):
        _frames(
            latency.latency_by_dimension(ch, scope, kind, "model"),
            latency.latency_by_dimension(duck, scope, kind, "model"),
        )
    assert_close(
        asdict(throughput.throughput_summary(ch, scope)),
        asdict(throughput.throughput_summary(duck, scope)),
    )
    for by in ("model", "user", "route"):
        want = cost.cost_by_dimension(duck, scope, by)
        assert want.height > 0
        _frames(cost.cost_by_dimension(ch, scope, by), want)
    _frames(cost.most_expensive_traces(ch, scope), cost.most_expensive_traces(duck, scope))
