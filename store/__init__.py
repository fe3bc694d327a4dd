"""Storage layer: durable ingest into an open Parquet lake, and DuckDB views to read it.

Writes go ``LakeWriter.append`` → ``wal`` (framed Arrow IPC, fsynced before the call returns)
→ in-memory buffer → ``Lake.write`` (dedup on the table's key, one immutable zstd Parquet
segment per UTC-date partition, temp file + fsync + rename, under a cross-process flock).
Start-up replays every write-ahead log a crashed process left behind; the lake's dedup makes
that idempotent. ``Lake.compact`` merges small segments.

Reads go through ``catalog.open_catalog``: each reader process gets its own in-memory DuckDB
whose base views (``spans``, ``feedback``, ``annotations``) glob the lake on every query, and whose derived
views (``llm_calls``, ``traces``, ``sessions``) live in ``views.sql``, written to be
transpiled to ClickHouse. ``schema`` is the public column contract.

This package imports no other project package.
"""

from store.catalog import open_catalog, query, quote_identifier, quote_literal, set_prices
from store.lake import (
    ANNOTATIONS,
    DEFAULT_SPECS,
    FEEDBACK,
    SPANS,
    CompactResult,
    Lake,
    TableSpec,
    WriteResult,
)
from store.writer import Backlog, FlushResult, LakeWriter

__all__ = [
    "ANNOTATIONS",
    "DEFAULT_SPECS",
    "FEEDBACK",
    "SPANS",
    "Backlog",
    "CompactResult",
    "FlushResult",
    "Lake",
    "LakeWriter",
    "TableSpec",
    "WriteResult",
    "open_catalog",
    "query",
    "quote_identifier",
    "quote_literal",
    "set_prices",
]
