"""Reviewer annotations: label a trace or span, count labels, export annotated traces.

An annotation (``store.schema.ANNOTATION_SCHEMA``) is a label with an optional score and
comment, written by a named reviewer about a trace or one of its spans. The lake is append-only:
a changed mind is a new annotation; all of them are shown.

Annotations are written straight to the lake (``Lake.write``: one small segment, fsynced and
renamed under the writer lock), not through the write-ahead log, because each one is a single
row that a person is waiting on; ``flywheel compact`` merges the small segments.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from analytics.scope import Scope, run_scoped
from store.lake import ANNOTATIONS, Lake, as_lake
from store.schema import ANNOTATION_SCHEMA

__all__ = [
    "MAX_LABEL_CHARS",
    "Annotation",
    "annotated_traces_jsonl",
    "annotations_by_label",
    "new_annotation",
    "write_annotations",
]

#: Labels are short names to filter and count by; comments hold the prose.
MAX_LABEL_CHARS = 80


@dataclass(frozen=True)
class Annotation:
    """One reviewer annotation of a trace (``span_id`` None) or of a span."""

    project: str
    annotation_id: str
    trace_id: str
    span_id: str | None
    time: datetime
    label: str
    score: float | None = None
    comment: str | None = None
    author: str | None = None


def new_annotation(
    project: str,
    trace_id: str,
    label: str,
    *,
    span_id: str | None = None,
    score: float | None = None,
    comment: str | None = None,
    author: str | None = None,
    time: datetime | None = None,
) -> Annotation:
    """A validated annotation with a fresh id, stamped now (UTC) unless ``time`` is given."""
    label = " ".join(label.split())
    if not label:
        raise ValueError("an annotation needs a label")
    if len(label) > MAX_LABEL_CHARS:
        raise ValueError(f"a label has at most {MAX_LABEL_CHARS} characters")
    if score is not None and not math.isfinite(score):
        raise ValueError("the score must be a finite number")
    stamp = time or datetime.now(UTC)
    if stamp.tzinfo is None:
        raise ValueError("the annotation time must be timezone-aware")
    return Annotation(
        project=project,
        annotation_id=uuid.uuid4().hex,
        trace_id=trace_id,
        span_id=span_id or None,
        time=stamp,
        label=label,
        score=score,
        comment=(comment or "").strip() or None,
        author=(author or "").strip() or None,
    )


def write_annotations(where: Lake | Path | str, annotations: Sequence[Annotation]) -> int:
    """Append annotations to the ``annotations`` table of ``where`` (a data directory's lake,
    or another store's tables: ``store.lake.as_lake``); returns how many were new."""
    rows = [{**asdict(a), "attributes": None} for a in annotations]
    table = pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA)
    return as_lake(where).write(ANNOTATIONS.name, table).num_written


ANNOTATIONS_BY_LABEL_SQL = """
SELECT
    label,
    count(*) AS num_annotations,
    count(DISTINCT trace_id) AS num_traces,
    count(DISTINCT span_id) AS num_spans,
    avg(score) AS mean_score,
    max(time) AS last_time
FROM scoped_trace_annotations
WHERE trace_id IN (SELECT trace_id FROM scoped_root_spans)
GROUP BY label
ORDER BY num_annotations DESC, label
"""


def annotations_by_label(conn: duckdb.DuckDBPyConnection, scope: Scope) -> pl.DataFrame:
    """Per label, annotations of the requests in scope: ``num_annotations``, ``num_traces``,
    ``num_spans`` (span-level ones), ``mean_score`` (over scored ones) and ``last_time``."""
    frame = pl.from_arrow(run_scoped(conn, scope, ANNOTATIONS_BY_LABEL_SQL))
    assert isinstance(frame, pl.DataFrame)
    return frame


ANNOTATED_SPANS_SQL = """
WITH annotated AS (
    SELECT trace_id, list(struct_pack(
        annotation_id, span_id, time, label, score, comment, author
    ) ORDER BY time, annotation_id) AS annotations
    FROM scoped_trace_annotations
    WHERE trace_id IN (SELECT trace_id FROM scoped_root_spans)
        AND ($f_label IS NULL OR label = $f_label)
    GROUP BY trace_id
)
SELECT a.trace_id, a.annotations, s.* EXCLUDE (trace_id)
FROM annotated AS a
JOIN scoped_trace_spans AS s ON s.trace_id = a.trace_id
ORDER BY a.trace_id, s.start_time, s.span_id
"""


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        # Arrow maps come back as lists of (key, value) pairs.
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {k: _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    return value


def annotated_traces_jsonl(
    conn: duckdb.DuckDBPyConnection, scope: Scope, label: str | None = None
) -> Iterator[str]:
    """One JSON line per annotated request in scope (optionally only those with ``label``):
    ``{"trace_id", "annotations": [...], "spans": [canonical span rows]}``; times in ISO 8601.
    """
    rows = run_scoped(conn, scope, ANNOTATED_SPANS_SQL, {"f_label": label}).to_pylist()
    current: str | None = None
    record: dict[str, Any] = {}
    for row in rows:
        if row["trace_id"] != current:
            if current is not None:
                yield json.dumps(record, ensure_ascii=False, sort_keys=True)
            current = row["trace_id"]
            record = {
                "trace_id": current,
                "annotations": _jsonable(row["annotations"]),
                "spans": [],
            }
        span = {k: v for k, v in row.items() if k != "annotations"}
        record["spans"].append(_jsonable(span))
    if current is not None:
        yield json.dumps(record, ensure_ascii=False, sort_keys=True)
