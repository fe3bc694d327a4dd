"""The store a command reads and writes: the Parquet lake (DuckDB), or ClickHouse (``--store``).

``open_store(settings)`` gives what the analytics query (``store.catalog.open_catalog``'s DuckDB
connection, or a ``store.clickhouse.catalog.ClickHouseCatalog`` with the same surface). On
ClickHouse the catalog reads Flywheel's own tables and the OpenTelemetry Collector's
``otel_traces`` through the spans view generated from the conventions file.

``open_tables(settings)`` gives where writes go: the data folder's ``store.lake.Lake``, or a
``store.clickhouse.writer.ClickHouseTables`` (the same ``write``, as INSERTs). Every writer takes
it: ``store.writer.LakeWriter(tables)`` for durable batched appends (ingest, eval runs), and
``tables.write`` for one-off rows (annotations, alerts, business metrics, eval datasets). On
ClickHouse the data folder keeps only what is local by nature: the writers' logs and locks
(``clickhouse/<database>/``) and the embeddings cache.
"""

from __future__ import annotations

from typing import Any

from app.settings import Settings
from store.catalog import open_catalog
from store.lake import Lake

__all__ = ["StoreUnreachable", "open_store", "open_tables", "store_display", "where_stored"]


class StoreUnreachable(RuntimeError):
    """The ClickHouse store could not be reached (or refused the session)."""


def open_store(settings: Settings) -> Any:
    """The catalog of ``settings.store`` (ClickHouse) or else of the lake in ``data_dir``."""
    if settings.store is None:
        return open_catalog(settings.data_dir)
    from ingest.clickhouse_spans import spans_select_sql
    from store.clickhouse.catalog import open_clickhouse_catalog
    from store.clickhouse.connect import connect, parse_store_url

    where = parse_store_url(settings.store)
    try:
        return open_clickhouse_catalog(
            connect(where),
            where.database,
            cache_dir=settings.data_dir,
            collector_spans=spans_select_sql(f"{where.database}.otel_traces"),
        )
    except Exception as exc:  # the client's errors have no common base but Exception
        raise StoreUnreachable(f"cannot open {store_display(settings.store)}: {exc}") from exc


def open_tables(settings: Settings) -> Lake:
    """Where writes go: ClickHouse's tables (created if missing) or the lake in ``data_dir``."""
    if settings.store is None:
        return Lake(settings.data_dir)
    from store.clickhouse.connect import connect, parse_store_url
    from store.clickhouse.writer import ClickHouseTables

    where = parse_store_url(settings.store)
    try:
        return ClickHouseTables(
            connect(where), where.database, settings.data_dir, display=store_display(settings.store)
        )
    except Exception as exc:  # the client's errors have no common base but Exception
        raise StoreUnreachable(f"cannot open {store_display(settings.store)}: {exc}") from exc


def where_stored(settings: Settings) -> str:
    """The store of ``settings`` for people: the data folder, or the URL without its password."""
    return str(settings.data_dir) if settings.store is None else store_display(settings.store)


def store_display(url: str) -> str:
    """A store URL to print: without its password."""
    from store.clickhouse.connect import parse_store_url

    return repr(parse_store_url(url)).removeprefix("ClickHouseURL(").removesuffix(")").strip("'")
