"""Builders of canonical rows for store tests (importable: ``from tests.store.conftest import ...``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from store.schema import FEEDBACK_SCHEMA, SPAN_SCHEMA

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
_counter = itertools.count(1)


def hex_id(n: int, width: int = 16) -> str:
    """A lower-case hex id of ``width`` digits for the number ``n``."""
    return f"{n:0{width}x}"


def span_row(**fields: Any) -> dict[str, Any]:
    """One canonical span as a dict: every schema column, defaults for the required ones.

    ``end_time`` defaults to ``start_time + duration_ms``; ``duration_ms`` to 100.
    """
    n = next(_counter)
    row: dict[str, Any] = dict.fromkeys(SPAN_SCHEMA.names)
    row.update(
        project="default",
        trace_id=hex_id(n, 32),
        span_id=hex_id(n),
        name="span",
        kind="INTERNAL",
        service_name="api",
        start_time=T0,
        duration_ms=100.0,
        status_code="UNSET",
    )
    row.update(fields)
    if row["end_time"] is None:
        row["end_time"] = row["start_time"] + timedelta(milliseconds=row["duration_ms"] or 0.0)
    return row


def spans_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (from :func:`span_row`) as a table with the canonical span schema."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=SPAN_SCHEMA)


def make_spans(
    num: int, *, start: datetime = T0, step: timedelta = timedelta(seconds=1), **fields: Any
) -> pa.Table:
    """``num`` spans, one trace each, starting ``step`` apart; ``fields`` apply to all."""
    return spans_table(span_row(start_time=start + i * step, **fields) for i in range(num))


def feedback_row(**fields: Any) -> dict[str, Any]:
    """One canonical feedback row as a dict (a thumbs-up on a fresh trace by default)."""
    n = next(_counter)
    row: dict[str, Any] = dict.fromkeys(FEEDBACK_SCHEMA.names)
    row.update(
        project="default",
        feedback_id=f"fb-{n}",
        trace_id=hex_id(n, 32),
        time=T0,
        kind="thumbs",
        value=1.0,
    )
    row.update(fields)
    return row


def feedback_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (from :func:`feedback_row`) as a table with the canonical feedback schema."""
    return pa.Table.from_pylist([dict(r) for r in rows], schema=FEEDBACK_SCHEMA)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory for one test."""
    path = tmp_path / "data"
    path.mkdir()
    return path


def as_clickhouse_holds(rows: pa.Table) -> list[dict[str, Any]]:
    """Rows as ClickHouse gives them back: it has no NULL array or map, only empty ones."""
    nested = {f.name for f in rows.schema if pa.types.is_list(f.type) or pa.types.is_map(f.type)}
    return [
        {k: [] if k in nested and v is None else v for k, v in row.items()}
        for row in rows.to_pylist()
    ]
