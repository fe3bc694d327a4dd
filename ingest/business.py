"""The product's own daily metrics (revenue, sign-ups, …) from CSV or Parquet, for the lake.

A file has one row per (day, metric): columns ``date`` (``2026-11-24``, or a timestamp whose
UTC day is taken), ``metric`` (a name) and ``value`` (a number, or empty for none), and
optionally ``project``. A bad row is reported with its line (CSV) or row number (Parquet) and
the reason; the valid rows are kept. Rows become ``store.schema.BUSINESS_METRIC_SCHEMA`` rows;
re-importing the same values adds nothing, and a changed value replaces the earlier one when
read.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from store.schema import BUSINESS_METRIC_SCHEMA

__all__ = ["MetricsImport", "read_business_metrics"]

REQUIRED = ("date", "metric", "value")


@dataclass
class MetricsImport:
    """What a file gave: the rows to write, and one error per rejected row."""

    table: pa.Table
    errors: list[str] = field(default_factory=list)


def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).date()
    return None


def _number(value: Any) -> tuple[bool, float | None]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return True, None
    if isinstance(value, bool):
        return False, None
    if isinstance(value, int | float):
        return (True, float(value)) if math.isfinite(value) else (False, None)
    try:
        number = float(str(value).strip())
    except ValueError:
        return False, None
    return (True, number) if math.isfinite(number) else (False, None)


def read_business_metrics(path: Path | str, project: str) -> MetricsImport:
    """Read one CSV (``.csv``, ``.csv.gz``) or Parquet file of daily metrics."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        frame = pl.read_parquet(path)
        first_row, unit = 0, "row"
    elif name.endswith((".csv", ".csv.gz")):
        frame = pl.read_csv(path, infer_schema=False)  # every column as text: we parse
        first_row, unit = 2, "line"  # line 1 is the header
    else:
        raise ValueError(f"{path}: want a .csv, .csv.gz or .parquet file")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; want {', '.join(REQUIRED)}"
            f" (and optionally project), got {', '.join(frame.columns) or 'none'}"
        )
    imported_at = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    has_project = "project" in frame.columns
    for index, record in enumerate(frame.iter_rows(named=True)):
        where = f"{path}: {unit} {index + first_row}"
        day = _day(record["date"])
        if day is None:
            errors.append(f"{where}: date {record['date']!r} is not a date like 2026-11-24")
            continue
        metric = record["metric"]
        if not isinstance(metric, str) or not metric.strip():
            errors.append(f"{where}: metric is empty")
            continue
        ok, value = _number(record["value"])
        if not ok:
            errors.append(f"{where}: value {record['value']!r} is not a number")
            continue
        row_project = record["project"] if has_project and record["project"] else project
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)
        key = f"{row_project}\x1f{metric.strip()}\x1f{day.isoformat()}\x1f{value!r}"
        rows.append(
            {"project": str(row_project), "metric_id": hashlib.sha256(key.encode()).hexdigest()[:32],
             "time": when, "metric": metric.strip(), "value": value, "imported_at": imported_at,
             "source": path.name}
        )  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=BUSINESS_METRIC_SCHEMA)
    return MetricsImport(table, errors)
