"""Raw OTLP spans as ``otel_traces`` rows, exactly as the Collector's ClickHouse exporter writes them.

Tests load real OTLP payloads into ClickHouse the way a team's collector would, and Flywheel's
receiver can write to ClickHouse in the same layout. The input is the decoded protobuf
``ExportTraceServiceRequest`` (OTLP/JSON: parse it to that message first); the output has the
schema ``store.clickhouse.OTEL_TRACES_SCHEMA``. Attributes are kept raw (not normalized), so
``ingest.clickhouse_spans`` derives the canonical columns from them in SQL.

What the exporter does, from open-telemetry/opentelemetry-collector-contrib:

* ``exporter/clickhouseexporter/exporter_traces.go`` (``pushTraceData``, ``convertEvents``,
  ``convertLinks``; the version whose ``batch.Append`` writes ``ScopeName``/``ScopeVersion``,
  the column list of PR #34245): ``Timestamp`` the start; ``Duration`` end − start as the
  unsigned ``pcommon.Timestamp`` difference (an end before the start wraps around); ids through
  ``traceutil.TraceIDToHexOrEmptyString``/``SpanIDToHexOrEmptyString`` (lower-case hex, ``''``
  for an all-zero id); ``SpanKind``/``StatusCode`` as ``Kind().String()``/``Code().String()``
  (``Server``, ``Error``; ``''`` for an unknown enum value); ``TraceState`` raw.
* ``exporter/clickhouseexporter/internal/util.go`` at commit
  64079aac9170092935a20f1f96863317bcd98273: ``ServiceName`` is the resource's ``service.name``
  rendered with ``AsString()`` (``''`` if absent) and every attribute value is
  ``Value.AsString()``.

``Value.AsString()`` is open-telemetry/opentelemetry-collector ``pdata/pcommon/value.go``
(commit daf47138592ca045540157db882ff8239f464eef, unchanged since 10d00402d76b): strings as is;
ints in decimal; bools ``true``/``false``; doubles by ``float64AsString``, the ``encoding/json``
number rule (shortest round-trip digits, fixed notation unless ``|v| < 1e-6`` or ``>= 1e21``,
then ``e`` notation with ``e-07`` shortened to ``e-7``; ±Inf and NaN become
``json: unsupported value: +Inf``); bytes standard base64; maps and arrays ``json.Marshal`` of
``AsRaw()`` (compact, map keys sorted, HTML characters and U+2028/2029 escaped, bytes as base64,
doubles by the number rule, and ``''`` when a NaN or ±Inf inside makes ``Marshal`` fail); an
empty value ``''``.

The Flywheel project goes into ``ResourceAttributes[PROJECT_ATTRIBUTE]`` when one is given.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.otlp import any_value
from store.clickhouse import (
    OTEL_TRACES_SCHEMA,
    PROJECT_ATTRIBUTE,
    SPAN_KIND_NAMES,
    STATUS_CODE_NAMES,
)
from store.schema import SPAN_KINDS, STATUS_CODES

__all__ = ["attribute_string", "otel_traces_rows"]

_KIND_NAMES = {number: SPAN_KIND_NAMES[name] for number, name in SPAN_KINDS.items()}
_STATUS_NAMES = {number: STATUS_CODE_NAMES[name] for number, name in STATUS_CODES.items()}
_UINT64 = 1 << 64

# encoding/json escapes (encode.go, Go >= 1.22: \b and \f short forms; <, >, & as \u00XX).
_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_ESCAPES |= {"\b": "\\b", "\f": "\\f", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_ESCAPES |= {c: f"\\u{ord(c):04x}" for c in "<>&"}
_JSON_ESCAPES |= {chr(b): f"\\u{b:04x}" for b in range(0x20) if chr(b) not in _JSON_ESCAPES}


class _Unsupported(ValueError):
    """``json.Marshal`` refuses the value (NaN or ±Inf); ``AsString`` then gives ``''``."""


def _go_float(value: float) -> str:
    """``pcommon.float64AsString``: Go's JSON number text for a finite double."""
    if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
        text = repr(value)  # shortest digits, already in e notation in this range
        if len(text) >= 4 and text[-4] == "e" and text[-3] == "-" and text[-2] == "0":
            text = text[:-2] + text[-1]
        return text
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _go_json_string(text: str) -> str:
    return '"' + "".join(_JSON_ESCAPES.get(c, c) for c in text) + '"'


def _go_json(value: Any) -> str:
    """``json.Marshal`` of an ``AsRaw()`` value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unsupported(value)
        return _go_float(value)
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, bytes):
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{_go_json_string(k)}:{_go_json(v)}" for k, v in items) + "}"
    return "[" + ",".join(_go_json(v) for v in value) + "]"


def _as_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "json: unsupported value: " + ("+Inf" if value > 0 else "-Inf")
        if math.isnan(value):
            return "json: unsupported value: NaN"
        return _go_float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    try:
        return _go_json(value)
    except _Unsupported:
        return ""


def attribute_string(value: AnyValue) -> str:
    """An OTLP ``AnyValue`` as the exporter stores it: ``pcommon.Value.AsString()``."""
    return _as_string(any_value(value))


def _attribute_map(key_values: Iterable[KeyValue]) -> list[tuple[str, str]]:
    # Duplicate keys (OTLP forbids them) collapse to the last one, as in the lake.
    return list({kv.key: attribute_string(kv.value) for kv in key_values}.items())


def _hex_id(raw: bytes, size: int, what: str) -> str:
    if not raw or raw == bytes(size):
        return ""
    if len(raw) != size:
        # pdata refuses the whole request when it unmarshals it; so do we.
        raise ValueError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw.hex()


def otel_traces_rows(request: ExportTraceServiceRequest, project: str | None = None) -> pa.Table:
    """The ``otel_traces`` rows the exporter writes for ``request`` (``OTEL_TRACES_SCHEMA``).

    ``project`` (when given) is written as the resource attribute ``PROJECT_ATTRIBUTE``,
    replacing one the sender set. Raises ValueError for an id of the wrong length.
    """
    columns: dict[str, list[Any]] = {name: [] for name in OTEL_TRACES_SCHEMA.names}
    for resource_spans in request.resource_spans:
        resource = dict(_attribute_map(resource_spans.resource.attributes))
        service_name = resource.get("service.name", "")
        if project is not None:
            resource.pop(PROJECT_ATTRIBUTE, None)
            resource[PROJECT_ATTRIBUTE] = project
        resource_items = list(resource.items())
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                events, links = span.events, span.links
                row = {
                    "Timestamp": start,
                    "TraceId": _hex_id(span.trace_id, 16, "trace id"),
                    "SpanId": _hex_id(span.span_id, 8, "span id"),
                    "ParentSpanId": _hex_id(span.parent_span_id, 8, "parent span id"),
                    "TraceState": span.trace_state,
                    "SpanName": span.name,
                    "SpanKind": _KIND_NAMES.get(span.kind, ""),
                    "ServiceName": service_name,
                    "ResourceAttributes": resource_items,
                    "ScopeName": scope.name,
                    "ScopeVersion": scope.version,
                    "SpanAttributes": _attribute_map(span.attributes),
                    "Duration": (end - start) % _UINT64,
                    "StatusCode": _STATUS_NAMES.get(span.status.code, ""),
                    "StatusMessage": span.status.message,
                    "Events.Timestamp": [e.time_unix_nano for e in events],
                    "Events.Name": [e.name for e in events],
                    "Events.Attributes": [_attribute_map(e.attributes) for e in events],
                    "Links.TraceId": [_hex_id(k.trace_id, 16, "link trace id") for k in links],
                    "Links.SpanId": [_hex_id(k.span_id, 8, "link span id") for k in links],
                    "Links.TraceState": [k.trace_state for k in links],
                    "Links.Attributes": [_attribute_map(k.attributes) for k in links],
                }
                for name, value in row.items():
                    columns[name].append(value)
    arrays = []
    for field in OTEL_TRACES_SCHEMA:
        values = columns[field.name]
        if field.name == "Timestamp":
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        elif field.name == "Events.Timestamp":
            arrays.append(pa.array(values, pa.list_(pa.int64())).cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=OTEL_TRACES_SCHEMA)
