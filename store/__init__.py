"""Storage layer: durable ingest into an open Parquet lake, and DuckDB views to read it.

Writes go ``LakeWriter.append`` → ``wal`` (framed Arrow IPC, fsynced before the call returns;
the append that fills the buffer goes to the lake with it instead, before returning)
→ in-memory buffer → ``Lake.write`` (dedup on the table's key, one immutable zstd Parquet
segment per UTC-date partition, temp file + fsync + rename, under a cross-process flock).
Start-up replays every write-ahead log a crashed process left behind; the lake's dedup makes
that idempotent. ``Lake.compact`` merges small segments.

Reads go through ``catalog.open_catalog``: each reader process gets its own in-memory DuckDB
whose base views (``spans``, ``feedback``, ``annotations``, ``guardrails``, ``alerts``) glob the lake on every query, and whose derived
views (``llm_calls``, ``traces``, ``sessions``) live in ``views.sql``, written to be
transpiled to ClickHouse. ``schema`` is the public column contract.

This package imports no other project package.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names re-exported here, by module. Loaded on first use (PEP 562), so a process that only needs
# ``store.schema`` (the receiver's decoder workers) does not import DuckDB.
_EXPORTS = {
    "store.catalog": ("open_catalog", "query", "quote_identifier", "quote_literal", "set_prices"),
    "store.lake": (
        "ALERTS",
        "ANNOTATIONS",
        "DEFAULT_SPECS",
        "FEEDBACK",
        "GUARDRAILS",
        "SPANS",
        "CompactResult",
        "Lake",
        "TableSpec",
        "WriteResult",
    ),
    "store.writer": ("Backlog", "FlushResult", "LakeWriter"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ALERTS",
    "ANNOTATIONS",
    "DEFAULT_SPECS",
    "FEEDBACK",
    "GUARDRAILS",
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
