"""Files into the lake: decode each file a batch at a time, guard it, append it through the
writer; and the guardrail results of spans already stored: in the lake's segments
(``backfill_guardrails``), or written to ClickHouse by the OpenTelemetry Collector
(``backfill_collector_spans``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ingest.files import DEFAULT_BATCH_SPANS, iter_file, list_input_files
from ingest.guard import Guard
from ingest.records import IngestError
from ingest.redaction import RedactionPolicy, parse_policy
from store.lake import FEEDBACK, GUARDRAILS, SPANS, Lake, conform
from store.schema import DEFAULT_PROJECT
from store.writer import LakeWriter


@dataclass
class FileReport:
    """What one file gave: spans and feedback accepted, and an error per rejected record."""

    path: Path
    num_spans: int = 0
    num_feedback: int = 0
    num_guardrail_results: int = 0
    errors: list[IngestError] = field(default_factory=list)

    @property
    def num_rejected(self) -> int:
        """Records of this file that were rejected."""
        return len(self.errors)


def ingest_paths(
    paths: Iterable[Path],
    writer: LakeWriter,
    *,
    project: str = DEFAULT_PROJECT,
    batch_spans: int = DEFAULT_BATCH_SPANS,
    on_file: Callable[[FileReport], None] | None = None,
    guard: Guard | None = None,
) -> list[FileReport]:
    """Ingest files and folders; every accepted batch is durable (in the log) when this returns.

    Each batch passes ``guard`` (default: built-in detectors, secrets masked) before the log:
    its guardrail results land in the ``guardrails`` table and redacted text never reaches disk.
    """
    guard = guard if guard is not None else Guard()
    reports = []
    for path in list_input_files(list(paths)):
        report = FileReport(path)
        if not path.exists():
            report.errors.append(IngestError(str(path), "file", "no such file"))
        else:
            for decoded in iter_file(path, project=project, batch_spans=batch_spans):
                if decoded.spans.num_rows:
                    guarded = guard.apply(decoded.spans)
                    writer.append_many(
                        [("spans", guarded.spans), ("guardrails", guarded.guardrails),
                         ("feedback", guarded.feedback)]
                    )  # fmt: skip
                    report.num_spans += guarded.spans.num_rows
                    report.num_guardrail_results += guarded.guardrails.num_rows
                    report.num_feedback += guarded.feedback.num_rows
                    report.errors.extend(
                        IngestError(str(path), where, reason) for where, reason in guarded.errors
                    )
                if decoded.feedback.num_rows:
                    writer.append("feedback", decoded.feedback)
                    report.num_feedback += decoded.feedback.num_rows
                report.errors.extend(decoded.errors)
        reports.append(report)
        if on_file is not None:
            on_file(report)
    return reports


@dataclass
class BackfillReport:
    """What one backfill pass found: segments (or days) read, spans in them, guardrail results
    and span-carried feedback derived, and how many of those rows were new."""

    num_segments: int = 0
    num_spans: int = 0
    num_results: int = 0
    num_new: int = 0
    num_feedback: int = 0


def _backfill(
    batches: Iterable[tuple[Any, pa.Table]],
    tables: Lake,
    on_batch: Callable[[Any, int], None] | None,
) -> BackfillReport:
    """Guard each stored batch and write what it derives: its guardrail results and the
    feedback its spans carry. Both are keyed by where they came from, so writing them again
    adds nothing; stored text is not rewritten (redaction happens only on the way in), so
    detections are recorded as flagged, not masked."""
    guard = Guard(RedactionPolicy(parse_policy('[default]\nsecret = "off"').default))
    report = BackfillReport()
    for label, stored in batches:
        spans = conform(SPANS, stored)
        guarded = guard.apply(spans)
        written = 0
        for spec, rows in ((GUARDRAILS, guarded.guardrails), (FEEDBACK, guarded.feedback)):
            if rows.num_rows:
                written += tables.write(spec.name, rows).num_written
        report.num_segments += 1
        report.num_spans += spans.num_rows
        report.num_results += guarded.guardrails.num_rows
        report.num_feedback += guarded.feedback.num_rows
        report.num_new += written
        if on_batch is not None:
            on_batch(label, written)
    return report


def backfill_guardrails(
    data_dir: Path | str,
    *,
    on_segment: Callable[[Path, int], None] | None = None,
) -> BackfillReport:
    """Write the guardrail results and span feedback of spans already in the lake (ingested
    before the guard stage existed, or under other rules), a segment at a time; running it
    again adds nothing."""
    lake = Lake(data_dir)
    segments = ((path, pq.read_table(path)) for path in lake.list_segments(SPANS.name))
    return _backfill(segments, lake, on_segment)


#: One UTC day of stored spans, and the days there are (the table's sort key: a range read).
DAY_SPANS_SQL = "SELECT * FROM spans WHERE start_time >= ? AND start_time < ?"
SPAN_RANGE_SQL = "SELECT min(start_time), max(start_time) FROM spans"


def backfill_collector_spans(
    conn: Any,
    tables: Lake,
    *,
    since: datetime | None = None,
    on_window: Callable[[datetime, int], None] | None = None,
) -> BackfillReport:
    """Write the guardrail results and the feedback carried by the spans the OpenTelemetry
    Collector stored in ClickHouse (its ``otel_traces``, linked into ``spans`` by
    ``store.clickhouse.link``), which no ingest of Flywheel's saw. ``conn`` is a
    ``store.clickhouse.catalog.ClickHouseCatalog`` and ``tables`` its database's tables.

    Spans are read one UTC day at a time from ``since`` (default: the first span); the spans
    Flywheel ingested itself are read too, and their results, written then, are found already
    stored. Running it again (from a cron job over the last hours, say) adds only what is new.
    ``num_segments`` counts the days read.
    """
    if not conn.reads_collector:
        return BackfillReport()  # no Collector table: every span came through Flywheel's ingest
    first, last = conn.execute(SPAN_RANGE_SQL).fetchone()
    if first is None or last is None:
        return BackfillReport()
    start = max(first, since) if since is not None else first
    days = _days(start.replace(hour=0, minute=0, second=0, microsecond=0), last)
    batches = ((day, conn.execute(DAY_SPANS_SQL, [day, end]).to_arrow_table()) for day, end in days)
    return _backfill(batches, tables, on_window)


def _days(first: datetime, last: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Consecutive one-day windows from ``first`` until one holds ``last``."""
    day = first
    while day <= last:
        yield day, day + timedelta(days=1)
        day += timedelta(days=1)
