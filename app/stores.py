"""The store a command reads: the Parquet lake (DuckDB), or ClickHouse (``--store``).

``open_store(settings)`` gives what the analytics query (``store.catalog.open_catalog``'s DuckDB
connection, or a ``store.clickhouse.catalog.ClickHouseCatalog`` with the same surface). On
ClickHouse the catalog reads Flywheel's own tables and the OpenTelemetry Collector's
``otel_traces`` through the spans view generated from the conventions file; the data folder
then only caches computed embeddings.
"""

from __future__ import annotations

from typing import Any

from app.settings import Settings
from store.catalog import open_catalog

__all__ = ["open_store", "store_display"]


def open_store(settings: Settings) -> Any:
    """The catalog of ``settings.store`` (ClickHouse) or else of the lake in ``data_dir``."""
    if settings.store is None:
        return open_catalog(settings.data_dir)
    from ingest.clickhouse_spans import spans_select_sql
    from store.clickhouse.catalog import open_clickhouse_catalog
    from store.clickhouse.connect import connect, parse_store_url

    where = parse_store_url(settings.store)
    return open_clickhouse_catalog(
        connect(where),
        where.database,
        cache_dir=settings.data_dir,
        collector_spans=spans_select_sql(f"{where.database}.otel_traces"),
    )


def store_display(url: str) -> str:
    """A store URL to print: without its password."""
    from store.clickhouse.connect import parse_store_url

    return repr(parse_store_url(url)).removeprefix("ClickHouseURL(").removesuffix(")").strip("'")
