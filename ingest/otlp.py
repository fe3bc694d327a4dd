"""OTLP trace decoders: ``ExportTraceServiceRequest`` as protobuf or as OTLP/JSON -> rows.

Pure functions at the edge: bytes (or parsed JSON) in, a ``Decoded`` out. Both forms of the
same request give identical rows. OTLP/JSON is walked by hand rather than through
``json_format`` because OTLP/JSON ids are hex, not base64 (otlp.md §2). Lenient where real SDKs
deviate: enum names as well as integers, numbers as strings or numbers, ids in either case or
base64, attribute values sent as JSON strings.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ingest.conventions import RawEvent
from ingest.records import Decoded, IngestError, SpanBuilder, gc_paused, text_map
from store.schema import DEFAULT_PROJECT, SPAN_KINDS, STATUS_CODES

_KIND_BY_NAME = {f"SPAN_KIND_{v}": v for v in SPAN_KINDS.values()} | {
    v: v for v in SPAN_KINDS.values()
}
_STATUS_BY_NAME = {f"STATUS_CODE_{v}": v for v in STATUS_CODES.values()} | {
    v: v for v in STATUS_CODES.values()
}


# --- protobuf -------------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a Python value (kvlist -> dict, array -> list, bytes -> bytes)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value
    return None


def _attrs(key_values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in key_values:
        value = kv.value
        # Most values are non-empty strings: one field read instead of WhichOneof and a read
        # (a non-string value reads as "").
        text = value.string_value
        if text:
            out[kv.key] = text
            continue
        which = value.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = text
        elif which == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = any_value(value)
    return out


def decode_otlp_protobuf(
    data: bytes,
    *,
    source: str = "request",
    project: str = DEFAULT_PROJECT,
    builder: SpanBuilder | None = None,
) -> Decoded:
    """Decode a binary ``ExportTraceServiceRequest``; raises IngestError if it does not parse."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise IngestError(
            source, f"byte 0 of {len(data)}", f"malformed OTLP protobuf: {exc}"
        ) from exc
    builder = builder if builder is not None else SpanBuilder(project)
    add_request_protobuf(request, builder, source)
    return builder.decoded()


def add_request_protobuf(
    request: ExportTraceServiceRequest, builder: SpanBuilder, source: str
) -> None:
    """Append every span of a parsed request to ``builder``."""
    with gc_paused():
        _add_request_protobuf(request, builder, source)


def _add_request_protobuf(
    request: ExportTraceServiceRequest, builder: SpanBuilder, source: str
) -> None:
    for r_index, resource_spans in enumerate(request.resource_spans):
        resource = _attrs(resource_spans.resource.attributes)
        resource_text = text_map(resource)
        service = resource.get("service.name")
        service_name = service if isinstance(service, str) else None
        for s_index, scope_spans in enumerate(resource_spans.scope_spans):
            scope_name = scope_spans.scope.name
            where = f"resourceSpans[{r_index}].scopeSpans[{s_index}].spans["
            for index, span in enumerate(scope_spans.spans):
                status = span.status
                events: list[RawEvent] = [
                    (e.time_unix_nano, e.name, _attrs(e.attributes)) for e in span.events
                ]
                links = [
                    (k.trace_id.hex(), k.span_id.hex(), _attrs(k.attributes)) for k in span.links
                ]
                builder.add(
                    source=source,
                    location=f"{where}{index}]",
                    trace_id=span.trace_id,
                    span_id=span.span_id,
                    parent_span_id=span.parent_span_id,
                    name=span.name,
                    kind=SPAN_KINDS.get(span.kind, "UNSPECIFIED"),
                    service_name=service_name,
                    scope_name=scope_name,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=STATUS_CODES.get(status.code, "UNSET"),
                    status_message=status.message,
                    attrs=_attrs(span.attributes),
                    resource_attrs=resource_text,
                    events=events,
                    links=links,
                )


# --- OTLP/JSON ------------------------------------------------------------------------------


class _Bad(ValueError):
    """A malformed field inside one span; becomes an IngestError for that span."""


def _json_int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise _Bad(f"{what} must be an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise _Bad(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Bad(f"{what} must be an integer, got {type(value).__name__}")


def json_any_value(value: Any) -> Any:
    """An OTLP/JSON AnyValue object as a Python value."""
    if not isinstance(value, dict):
        raise _Bad(f"an AnyValue must be an object, got {type(value).__name__}")
    if not value:
        return None
    if "stringValue" in value:
        text = value["stringValue"]
        if not isinstance(text, str):
            raise _Bad(f"stringValue must be a string, got {type(text).__name__}")
        return text
    if "intValue" in value:
        return _json_int(value["intValue"], "intValue")
    if "doubleValue" in value:
        number = value["doubleValue"]
        if isinstance(number, str) and number in ("NaN", "Infinity", "-Infinity"):
            return float(number.replace("Infinity", "inf"))
        if isinstance(number, bool) or not isinstance(number, int | float | str):
            raise _Bad(f"doubleValue must be a number, got {number!r}")
        try:
            return float(number)
        except ValueError:
            raise _Bad(f"doubleValue must be a number, got {number!r}") from None
    if "boolValue" in value:
        flag = value["boolValue"]
        if not isinstance(flag, bool):
            raise _Bad(f"boolValue must be true or false, got {flag!r}")
        return flag
    if "arrayValue" in value:
        values = (value["arrayValue"] or {}).get("values") or []
        if not isinstance(values, list):
            raise _Bad("arrayValue.values must be a list")
        return [json_any_value(v) for v in values]
    if "kvlistValue" in value:
        return json_attrs((value["kvlistValue"] or {}).get("values") or [])
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"], validate=True)
        except (ValueError, TypeError):
            raise _Bad("bytesValue must be standard base64") from None
    return None  # an unknown value form: ignored, as receivers must ignore unknown fields


def json_attrs(key_values: Any) -> dict[str, Any]:
    """A list of OTLP/JSON KeyValue objects as a dict."""
    if key_values is None:
        return {}
    if not isinstance(key_values, list):
        raise _Bad(f"attributes must be a list of {{key, value}}, got {type(key_values).__name__}")
    out: dict[str, Any] = {}
    for kv in key_values:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise _Bad(f"an attribute must be an object with a string key, got {kv!r:.80}")
        out[kv["key"]] = json_any_value(kv.get("value") or {})
    return out


def _enum(value: Any, table: Mapping[int, str], by_name: Mapping[str, str], what: str) -> str:
    if value is None:
        return table[0]
    if isinstance(value, int) and not isinstance(value, bool):
        if value in table:
            return table[value]
    elif isinstance(value, str):
        if value in by_name:
            return by_name[value]
        if value.isdigit() and int(value) in table:
            return table[int(value)]
    raise _Bad(f"unknown {what} {value!r}")


def _list_of_objects(parent: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = parent.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise _Bad(f"{key} must be a list of objects")
    return items


def add_request_json(document: Any, builder: SpanBuilder, source: str, where: str = "") -> None:
    """Append the spans of an OTLP/JSON ``ExportTraceServiceRequest`` (already parsed)."""
    with gc_paused():
        _add_request_json(document, builder, source, where)


def _add_request_json(document: Any, builder: SpanBuilder, source: str, where: str) -> None:
    problem = None
    if not isinstance(document, dict):
        problem = f"expected an object with a resourceSpans list, got {type(document).__name__}"
    elif "resourceSpans" not in document:
        other = next((k for k in ("resourceLogs", "resourceMetrics") if k in document), None)
        if other is not None:
            problem = (
                f"this is an OTLP {other[8:].lower()} request ({other}); traces need resourceSpans"
            )
        elif document:
            problem = f"no resourceSpans; found keys {sorted(document)[:5]}"
    elif not isinstance(document["resourceSpans"], list):
        problem = "resourceSpans must be a list"
    if problem is not None:
        builder.reject(
            IngestError(source, where or "document", "not an OTLP/JSON trace request: " + problem)
        )
        return
    for r_index, resource_spans in enumerate(document.get("resourceSpans", [])):
        r_where = f"{where}resourceSpans[{r_index}]"
        try:
            if not isinstance(resource_spans, dict):
                raise _Bad("must be an object")
            resource_obj = resource_spans.get("resource") or {}
            if not isinstance(resource_obj, dict):
                raise _Bad("resource must be an object")
            resource = json_attrs(resource_obj.get("attributes"))
            scopes = _list_of_objects(resource_spans, "scopeSpans")
            if not scopes and "instrumentationLibrarySpans" in resource_spans:
                scopes = _list_of_objects(resource_spans, "instrumentationLibrarySpans")
        except _Bad as exc:
            builder.reject(IngestError(source, r_where, str(exc)))
            continue
        resource_text = text_map(resource)
        service = resource.get("service.name")
        service_name = service if isinstance(service, str) else None
        for s_index, scope_spans in enumerate(scopes):
            s_where = f"{r_where}.scopeSpans[{s_index}]"
            scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
            scope_name = scope.get("name") if isinstance(scope, dict) else None
            try:
                spans = _list_of_objects(scope_spans, "spans")
            except _Bad as exc:
                builder.reject(IngestError(source, s_where, str(exc)))
                continue
            for index, span in enumerate(spans):
                _add_json_span(
                    span,
                    builder,
                    source,
                    f"{s_where}.spans[{index}]",
                    service_name,
                    scope_name,
                    resource_text,
                )


def _add_json_span(
    span: dict[str, Any],
    builder: SpanBuilder,
    source: str,
    where: str,
    service_name: str | None,
    scope_name: Any,
    resource_text: list[tuple[str, str]],
) -> None:
    try:
        status = span.get("status") or {}
        if not isinstance(status, dict):
            raise _Bad("status must be an object")
        events: list[RawEvent] = [
            (
                _json_int(e.get("timeUnixNano"), "event timeUnixNano"),
                str(e.get("name", "")),
                json_attrs(e.get("attributes")),
            )
            for e in _list_of_objects(span, "events")
        ]
        links = [
            (
                str(k.get("traceId", "")).lower(),
                str(k.get("spanId", "")).lower(),
                json_attrs(k.get("attributes")),
            )
            for k in _list_of_objects(span, "links")
        ]
        name = span.get("name", "")
        if not isinstance(name, str):
            raise _Bad(f"name must be a string, got {type(name).__name__}")
        kind = _enum(span.get("kind"), SPAN_KINDS, _KIND_BY_NAME, "span kind")
        start_ns = _json_int(span.get("startTimeUnixNano"), "startTimeUnixNano")
        end_ns = _json_int(span.get("endTimeUnixNano"), "endTimeUnixNano")
        status_code = _enum(status.get("code"), STATUS_CODES, _STATUS_BY_NAME, "status code")
        message = status.get("message")
        attrs = json_attrs(span.get("attributes"))
    except _Bad as exc:
        builder.reject(IngestError(source, where, str(exc)))
        return
    builder.add(
        source=source,
        location=where,
        trace_id=span.get("traceId"),
        span_id=span.get("spanId"),
        parent_span_id=span.get("parentSpanId"),
        name=name,
        kind=kind,
        service_name=service_name,
        scope_name=scope_name if isinstance(scope_name, str) else None,
        start_ns=start_ns,
        end_ns=end_ns,
        status_code=status_code,
        status_message=message if isinstance(message, str) else None,
        attrs=attrs,
        resource_attrs=resource_text,
        events=events,
        links=links,
    )


def decode_otlp_json(
    data: bytes | str,
    *,
    source: str = "request",
    project: str = DEFAULT_PROJECT,
    builder: SpanBuilder | None = None,
) -> Decoded:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest``; raises IngestError if not JSON."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        position = getattr(exc, "pos", None)
        location = f"byte {position}" if position is not None else "document"
        raise IngestError(source, location, f"invalid JSON: {exc}") from exc
    builder = builder if builder is not None else SpanBuilder(project)
    add_request_json(document, builder, source)
    return builder.decoded()
