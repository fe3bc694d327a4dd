"""Line-oriented and flat span JSON: Flywheel's JSONL format, feedback, and SDK span dumps.

A JSONL line is one of
* an OTLP/JSON ``TracesData``/``ExportTraceServiceRequest`` (has ``resourceSpans``) — the
  OpenTelemetry Collector's file exporter writes these;
* a flat span (``"type": "span"`` or no type) — see the README's "Flat JSONL" section;
* a feedback record (``"type": "feedback"``).
A flat span may also be an OpenTelemetry JS ``ReadableSpan`` dump (``spanContext``,
``startTime`` as ``[seconds, nanos]``), as the Vercel AI SDK fixtures are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa

from ingest.conventions import RawEvent
from ingest.otlp import add_request_json
from ingest.records import Decoded, IngestError, SpanBuilder, gc_paused, normalize_hex_id, text_map
from store.schema import DEFAULT_PROJECT, FEEDBACK_KINDS, FEEDBACK_SCHEMA, SPAN_KINDS, STATUS_CODES

#: Canonical columns a flat span may set directly; they win over what conventions derive.
OVERRIDABLE = (
    "operation",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "ttft_ms",
    "finish_reasons",
    "session_id",
    "user_id",
    "input_text",
    "output_text",
    "cost_usd",
)
_KINDS = {v: v for v in SPAN_KINDS.values()} | {f"SPAN_KIND_{v}": v for v in SPAN_KINDS.values()}
_STATUSES = {v: v for v in STATUS_CODES.values()} | {
    f"STATUS_CODE_{v}": v for v in STATUS_CODES.values()
}


class _Bad(ValueError):
    pass


def parse_time_ns(value: Any, what: str) -> int:
    """Unix nanoseconds from an integer (ns), an RFC 3339 string, or ``[seconds, nanos]``."""
    if isinstance(value, bool) or value is None:
        raise _Bad(f"{what} is missing")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]) * 1_000_000_000 + int(value[1])
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _Bad(f"{what} {value!r} is not unix nanoseconds or an RFC 3339 time") from None
        if moment.tzinfo is None:
            raise _Bad(f"{what} {value!r} has no time zone; add Z or an offset")
        fraction = text.split(".", 1)[1] if "." in text else ""
        digits = "".join(ch for ch in fraction if ch.isdigit())[:9]
        nanos = int(digits.ljust(9, "0")) if digits else 0
        return int(moment.replace(microsecond=0).timestamp()) * 1_000_000_000 + nanos
    raise _Bad(f"{what} must be unix nanoseconds or an RFC 3339 string, got {type(value).__name__}")


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be an object of attribute name -> value")
    return value


def _enum_name(value: Any, table: Mapping[str, str], codes: Mapping[int, str], what: str) -> str:
    if value is None:
        return codes[0]
    if isinstance(value, int) and not isinstance(value, bool) and value in codes:
        return codes[value]
    if isinstance(value, str) and value.upper() in table:
        return table[value.upper()]
    raise _Bad(f"unknown {what} {value!r}")


def add_flat_span(record: dict[str, Any], builder: SpanBuilder, source: str, where: str) -> None:
    """Append one flat span object (Flywheel JSONL or a ReadableSpan dump)."""
    try:
        context = record.get("spanContext")
        if isinstance(context, dict):  # OpenTelemetry JS ReadableSpan
            trace_id, span_id = context.get("traceId"), context.get("spanId")
            parent = record.get("parentSpanId") or (record.get("parentSpanContext") or {}).get(
                "spanId"
            )
            status = record.get("status") or {}
            status_code, status_message = status.get("code"), status.get("message")
            resource = _object(
                (record.get("resource") or {}).get("attributes"), "resource.attributes"
            )
            scope = (
                record.get("instrumentationScope") or record.get("instrumentationLibrary") or {}
            ).get("name")
            start, end = record.get("startTime"), record.get("endTime")
            raw_events = record.get("events") or []
            time_key = "time"
        else:
            trace_id, span_id = record.get("trace_id"), record.get("span_id")
            parent = record.get("parent_span_id")
            status_code, status_message = record.get("status_code"), record.get("status_message")
            resource = _object(record.get("resource_attributes"), "resource_attributes")
            scope = record.get("scope_name")
            start, end = record.get("start_time"), record.get("end_time")
            raw_events = record.get("events") or []
            time_key = "time"
        attrs = _object(record.get("attributes"), "attributes")
        if not isinstance(raw_events, list):
            raise _Bad("events must be a list")
        events: list[RawEvent] = []
        for i, event in enumerate(raw_events):
            if not isinstance(event, dict):
                raise _Bad(f"events[{i}] must be an object")
            events.append(
                (
                    parse_time_ns(event.get(time_key), f"events[{i}].time"),
                    str(event.get("name", "")),
                    _object(event.get("attributes"), f"events[{i}].attributes"),
                )
            )
        service = record.get("service_name") or resource.get("service.name")
        overrides = {k: record[k] for k in OVERRIDABLE if record.get(k) is not None}
        name = record.get("name", "")
        if not isinstance(name, str):
            raise _Bad("name must be a string")
        project = record.get("project")
        start_ns = parse_time_ns(start, "start_time")
        end_ns = parse_time_ns(end, "end_time")
        kind = _enum_name(record.get("kind"), _KINDS, SPAN_KINDS, "span kind")
        status = _enum_name(status_code, _STATUSES, STATUS_CODES, "status code")
    except _Bad as exc:
        builder.reject(IngestError(source, where, str(exc)))
        return
    builder.add(
        source=source,
        location=where,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        service_name=str(service) if service is not None else None,
        scope_name=scope if isinstance(scope, str) else None,
        start_ns=start_ns,
        end_ns=end_ns,
        status_code=status,
        status_message=status_message if isinstance(status_message, str) else None,
        attrs=attrs,
        resource_attrs=text_map(resource),
        events=events,
        overrides=overrides,
        project=project if isinstance(project, str) and project else None,
    )


def feedback_row(record: dict[str, Any], project: str) -> dict[str, Any]:
    """Validate one feedback record and return it as a FEEDBACK_SCHEMA row."""
    trace_id = normalize_hex_id(record.get("trace_id"), 16)
    if trace_id is None:
        raise _Bad(
            f"feedback needs a trace_id of 32 hex characters, got {record.get('trace_id')!r}"
        )
    span_id = None
    if record.get("span_id") not in (None, ""):
        span_id = normalize_hex_id(record.get("span_id"), 8)
        if span_id is None:
            raise _Bad(f"invalid span_id {record.get('span_id')!r}")
    kind = record.get("kind")
    if kind not in FEEDBACK_KINDS:
        raise _Bad(f"feedback kind must be one of {sorted(FEEDBACK_KINDS)}, got {kind!r}")
    value = record.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _Bad(f"feedback value must be a number, got {value!r}")
    if kind == "thumbs" and value not in (1, -1):
        raise _Bad(f"thumbs feedback needs value 1 or -1, got {value!r}")
    text = record.get("text")
    if text is not None and not isinstance(text, str):
        raise _Bad("feedback text must be a string")
    time_ns = parse_time_ns(record.get("time"), "time")
    feedback_id = record.get("feedback_id")
    if not isinstance(feedback_id, str) or not feedback_id:
        digest = json.dumps([trace_id, span_id, kind, value, text, time_ns, record.get("user_id")])
        feedback_id = hashlib.sha256(digest.encode()).hexdigest()[:32]
    attributes = _object(record.get("attributes"), "attributes")
    return {
        "project": record.get("project") if isinstance(record.get("project"), str) else project,
        "feedback_id": feedback_id,
        "trace_id": trace_id,
        "span_id": span_id,
        "time": time_ns,
        "kind": kind,
        "value": None if value is None else float(value),
        "text": text,
        "user_id": None if record.get("user_id") is None else str(record["user_id"]),
        "source": str(record.get("source") or "explicit"),
        "attributes": text_map(attributes),
    }


def feedback_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Feedback rows as a FEEDBACK_SCHEMA table."""
    columns = {name: [row[name] for row in rows] for name in FEEDBACK_SCHEMA.names}
    arrays = []
    for schema_field in FEEDBACK_SCHEMA:
        values = columns[schema_field.name]
        if schema_field.name == "time":
            arrays.append(pa.array(values, pa.int64()).cast(schema_field.type))
        else:
            arrays.append(pa.array(values, schema_field.type))
    return pa.Table.from_arrays(arrays, schema=FEEDBACK_SCHEMA)


def decode_records(
    records: Iterable[tuple[str, Any]],
    *,
    source: str,
    project: str = DEFAULT_PROJECT,
    builder: SpanBuilder | None = None,
) -> Decoded:
    """Decode parsed JSON records, each with its location (``line 3``, ``[5]``)."""
    builder = builder if builder is not None else SpanBuilder(project)
    feedback: list[dict[str, Any]] = []
    with gc_paused():
        _decode_into(records, builder, feedback, source, project)
    decoded = builder.decoded()
    decoded.feedback = feedback_table(feedback)
    return decoded


def _decode_into(
    records: Iterable[tuple[str, Any]],
    builder: SpanBuilder,
    feedback: list[dict[str, Any]],
    source: str,
    project: str,
) -> None:
    for where, record in records:
        if not isinstance(record, dict):
            builder.reject(
                IngestError(source, where, f"expected a JSON object, got {type(record).__name__}")
            )
            continue
        if "resourceSpans" in record or "resourceLogs" in record or "resourceMetrics" in record:
            add_request_json(record, builder, source, where=f"{where}: ")
            continue
        kind = record.get("type", "span")
        if kind == "feedback":
            try:
                feedback.append(feedback_row(record, project))
            except _Bad as exc:
                builder.reject(IngestError(source, where, str(exc)))
        elif kind == "span":
            add_flat_span(record, builder, source, where)
        else:
            builder.reject(
                IngestError(source, where, f"unknown record type {kind!r}: want span or feedback")
            )


def decode_jsonl_lines(
    lines: Iterable[tuple[int, bytes]], *, source: str, project: str = DEFAULT_PROJECT
) -> Decoded:
    """Decode numbered JSONL lines; a line that is not JSON is rejected, the rest land."""
    parse_errors: list[IngestError] = []

    def parsed() -> Iterable[tuple[str, Any]]:
        for number, line in lines:
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                parse_errors.append(IngestError(source, f"line {number}", f"invalid JSON: {exc}"))

    decoded = decode_records(parsed(), source=source, project=project)
    decoded.errors = parse_errors + decoded.errors
    return decoded
