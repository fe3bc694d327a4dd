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

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from app.settings import Settings
from store.catalog import open_catalog
from store.lake import Lake

if TYPE_CHECKING:
    from store.clickhouse.catalog import Engine

__all__ = [
    "StoreUnreachable",
    "connect_store",
    "open_store",
    "open_tables",
    "store_display",
    "where_stored",
]


class StoreUnreachable(RuntimeError):
    """The ClickHouse store could not be reached (or refused the session)."""


@contextlib.contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Any error of the client inside the block as :class:`StoreUnreachable`, naming the store
    without its password (the client's errors have no common base but Exception)."""
    try:
        yield
    except Exception as exc:
        raise StoreUnreachable(f"cannot open {store_display(url)}: {exc}") from exc


def connect_store(url: str) -> tuple[Engine, str]:
    """An engine on the ClickHouse store ``url`` (its database created if missing) and the
    database's name."""
    from store.clickhouse.connect import connect, parse_store_url

    where = parse_store_url(url)
    with _reaching(url):
        return connect(where), where.database


def open_store(settings: Settings) -> Any:
    """The catalog of ``settings.store`` (ClickHouse) or else of the lake in ``data_dir``."""
    if settings.store is None:
        return open_catalog(settings.data_dir)
    from ingest.clickhouse_spans import spans_select_sql
    from store.clickhouse.catalog import open_clickhouse_catalog

    engine, database = connect_store(settings.store)
    with _reaching(settings.store):
        return open_clickhouse_catalog(
            engine,
            database,
            cache_dir=settings.data_dir,
            collector_spans=spans_select_sql(f"{database}.otel_traces"),
        )


def open_tables(settings: Settings) -> Lake:
    """Where writes go: ClickHouse's tables (created if missing) or the lake in ``data_dir``."""
    if settings.store is None:
        return Lake(settings.data_dir)
    from store.clickhouse.writer import ClickHouseTables

    engine, database = connect_store(settings.store)
    with _reaching(settings.store):
        return ClickHouseTables(
            engine, database, settings.data_dir, display=store_display(settings.store)
        )


def where_stored(settings: Settings) -> str:
    """The store of ``settings`` for people: the data folder, or the URL without its password."""
    return str(settings.data_dir) if settings.store is None else store_display(settings.store)


def store_display(url: str) -> str:
    """A store URL to print: without its password."""
    from store.clickhouse.connect import parse_store_url

    return repr(parse_store_url(url)).removeprefix("ClickHouseURL(").removesuffix(")").strip("'")
