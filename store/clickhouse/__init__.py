"""ClickHouse: the OpenTelemetry Collector's ``otel_traces`` table, and Flywheel's spans in it.

Teams at scale export spans with the Collector's ClickHouse exporter. ``otel_traces.sql`` is that
exporter's table, verbatim (see its header for the source commit); :func:`collector_rows` lays
canonical spans out exactly as the exporter writes them, so the same data can be loaded into
either store and the analytics compared (``docs/design/clickhouse-backend.md``).

The exporter has no notion of a project: a span's project is its resource attribute
:data:`PROJECT_ATTRIBUTE` (absent means the default project).

The rest of the backend: ``transpile`` and ``structure`` (the analytics' DuckDB SQL rewritten
for ClickHouse), ``catalog`` (the catalog the analytics query, over an engine), ``connect``
(the ``clickhouse://`` URL and the clickhouse-connect engine), ``link`` (``otel_traces`` fed
into ``spans`` by a materialized view) and ``writer`` (``ClickHouseTables``, where every write
goes with ``--store``, and the receiver's durable writer over them). No module imports ``chdb`` or ``clickhouse-connect`` at import time; callers bring the
engine.
"""

from store.clickhouse.collector import (
    OTEL_TRACES_SCHEMA,
    PROJECT_ATTRIBUTE,
    SPAN_KIND_NAMES,
    STATUS_CODE_NAMES,
    collector_rows,
    otel_traces_ddl,
)

__all__ = [
    "OTEL_TRACES_SCHEMA",
    "PROJECT_ATTRIBUTE",
    "SPAN_KIND_NAMES",
    "STATUS_CODE_NAMES",
    "collector_rows",
    "otel_traces_ddl",
]
