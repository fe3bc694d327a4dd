"""File formats for the sample data, and ``write_dataset`` which writes them all in one pass.

``.pb`` / ``.pb.gz`` — OTLP protobuf: a sequence of serialized ``ExportTraceServiceRequest``
messages, each preceded by its length. ``framing="uint32"`` (the default) writes the length as
4 bytes, unsigned big-endian: exactly what the OpenTelemetry Collector ``file`` exporter writes
with ``format: proto`` (``exportMessageAsBuffer`` in
``exporter/fileexporter/file_writer.go``). ``framing="varint"`` writes it as a base-128
varint, the protobuf "delimited" framing (Java ``writeDelimitedTo``). A reader can tell them
apart: a uint32 frame of a message under 16 MiB starts with a 0x00 byte; a varint never does
for a non-empty message.

``.otlp.jsonl`` — OTLP/JSON lines: one ``ExportTraceServiceRequest`` per line, encoded as the
OTLP specification says (lowerCamelCase keys; traceId/spanId/parentSpanId as lower-case hex;
int64 and fixed64 — ``intValue``, ``*UnixNano`` — as decimal strings; enums and other 32-bit
integers as JSON numbers; AnyValue as stringValue/boolValue/intValue/doubleValue/arrayValue/
kvlistValue/bytesValue; empty and default fields left out). This is also the Collector file
exporter's JSON format. ``google.protobuf.json_format`` is not used: it writes ids as base64.

``.jsonl`` — flat spans, one JSON object per span (see sample_data/README.md), and flat
feedback records, one per line.

Files ending ``.gz`` are gzip-compressed with a zero mtime and no file name in the header, so
the same data gives the same bytes.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sample_data.generator import generate_batches

SPAN_KIND_NAMES = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_NAMES = ("UNSET", "OK", "ERROR")
FILE_NAMES = {"pb": "traces.pb", "otlp-json": "traces.otlp.jsonl", "jsonl": "traces.jsonl"}
FEEDBACK_FILE = "feedback.jsonl"


class _Writer:
    """A file being written; gzip-compressed (deterministically) when its name ends ``.gz``."""

    def __init__(self, path: Path) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._gz = None
        if path.name.endswith((".gz", ".gz.tmp")):
            self._gz = gzip.GzipFile(
                filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6
            )

    def write(self, data: bytes) -> None:
        """Append bytes."""
        (self._gz or self._raw).write(data)

    def close(self) -> None:
        """Finish the gzip stream (if any) and close the file."""
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


def _open_read(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


# -- OTLP protobuf ----------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(payload: bytes, framing: str = "uint32") -> bytes:
    """Prefix one serialized message with its length (``uint32`` big-endian or ``varint``)."""
    if framing == "uint32":
        return len(payload).to_bytes(4, "big") + payload
    if framing == "varint":
        return _varint(len(payload)) + payload
    raise ValueError(f"unknown framing {framing!r}")


def read_otlp_pb(path: str | Path, framing: str = "uint32") -> Iterator[ExportTraceServiceRequest]:
    """Read the requests of a length-prefixed OTLP protobuf file (``.pb`` or ``.pb.gz``)."""
    with _open_read(Path(path)) as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        if framing == "uint32":
            size, pos = int.from_bytes(data[pos : pos + 4], "big"), pos + 4
        else:
            size = shift = 0
            while True:
                byte = data[pos]
                pos += 1
                size |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
        yield ExportTraceServiceRequest.FromString(data[pos : pos + size])
        pos += size


# -- OTLP/JSON --------------------------------------------------------------------------------


def _double_json(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def any_value_json(value: AnyValue) -> dict[str, Any]:
    """One AnyValue in OTLP/JSON form (int64 as a decimal string, bytes as base64)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": value.string_value}
    if which == "bool_value":
        return {"boolValue": value.bool_value}
    if which == "int_value":
        return {"intValue": str(value.int_value)}
    if which == "double_value":
        return {"doubleValue": _double_json(value.double_value)}
    if which == "array_value":
        items = [any_value_json(v) for v in value.array_value.values]
        return {"arrayValue": {"values": items} if items else {}}
    if which == "kvlist_value":
        kvs = key_values_json(value.kvlist_value.values)
        return {"kvlistValue": {"values": kvs} if kvs else {}}
    if which == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode("ascii")}
    return {}


def key_values_json(kvs: Iterable[Any]) -> list[dict[str, Any]]:
    """A repeated KeyValue field in OTLP/JSON form."""
    return [{"key": kv.key, "value": any_value_json(kv.value)} for kv in kvs]


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value:  # proto3 JSON leaves default values out
        out[key] = value


def _span_json(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": span.trace_id.hex(), "spanId": span.span_id.hex()}
    _put(out, "traceState", span.trace_state)
    _put(out, "parentSpanId", span.parent_span_id.hex())
    _put(out, "flags", span.flags)
    out["name"] = span.name
    _put(out, "kind", span.kind)
    out["startTimeUnixNano"] = str(span.start_time_unix_nano)
    out["endTimeUnixNano"] = str(span.end_time_unix_nano)
    _put(out, "attributes", key_values_json(span.attributes))
    _put(out, "droppedAttributesCount", span.dropped_attributes_count)
    events = []
    for e in span.events:
        event: dict[str, Any] = {"timeUnixNano": str(e.time_unix_nano), "name": e.name}
        _put(event, "attributes", key_values_json(e.attributes))
        _put(event, "droppedAttributesCount", e.dropped_attributes_count)
        events.append(event)
    _put(out, "events", events)
    _put(out, "droppedEventsCount", span.dropped_events_count)
    links = []
    for link in span.links:
        item: dict[str, Any] = {"traceId": link.trace_id.hex(), "spanId": link.span_id.hex()}
        _put(item, "traceState", link.trace_state)
        _put(item, "attributes", key_values_json(link.attributes))
        _put(item, "droppedAttributesCount", link.dropped_attributes_count)
        _put(item, "flags", link.flags)
        links.append(item)
    _put(out, "links", links)
    _put(out, "droppedLinksCount", span.dropped_links_count)
    status: dict[str, Any] = {}
    _put(status, "message", span.status.message)
    _put(status, "code", span.status.code)
    _put(out, "status", status)
    return out


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """An ExportTraceServiceRequest as the OTLP/JSON object the spec describes."""
    resource_spans = []
    for rs in request.resource_spans:
        resource: dict[str, Any] = {}
        _put(resource, "attributes", key_values_json(rs.resource.attributes))
        _put(resource, "droppedAttributesCount", rs.resource.dropped_attributes_count)
        scope_spans = []
        for ss in rs.scope_spans:
            scope: dict[str, Any] = {}
            _put(scope, "name", ss.scope.name)
            _put(scope, "version", ss.scope.version)
            _put(scope, "attributes", key_values_json(ss.scope.attributes))
            item: dict[str, Any] = {"scope": scope, "spans": [_span_json(s) for s in ss.spans]}
            _put(item, "schemaUrl", ss.schema_url)
            scope_spans.append(item)
        entry: dict[str, Any] = {"resource": resource, "scopeSpans": scope_spans}
        _put(entry, "schemaUrl", rs.schema_url)
        resource_spans.append(entry)
    return {"resourceSpans": resource_spans}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


# -- flat JSONL -------------------------------------------------------------------------------


def any_value_python(value: AnyValue) -> Any:
    """An AnyValue as plain Python (lists and dicts for arrays and kvlists, base64 for bytes)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value_python(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value_python(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, which)


def flat_spans(
    request: ExportTraceServiceRequest, project: str = "default"
) -> Iterator[dict[str, Any]]:
    """The spans of a request as flat span records (the ``traces.jsonl`` format)."""
    for rs in request.resource_spans:
        resource = {kv.key: any_value_python(kv.value) for kv in rs.resource.attributes}
        service = resource.get("service.name", "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                yield {
                    "type": "span",
                    "project": project,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": s.parent_span_id.hex() or None,
                    "name": s.name,
                    "kind": SPAN_KIND_NAMES[s.kind],
                    "service_name": service,
                    "scope_name": ss.scope.name or None,
                    "start_time": s.start_time_unix_nano,
                    "end_time": s.end_time_unix_nano,
                    "status_code": STATUS_NAMES[s.status.code],
                    "status_message": s.status.message,
                    "attributes": {kv.key: any_value_python(kv.value) for kv in s.attributes},
                    "resource_attributes": resource,
                    "events": [
                        {
                            "time": e.time_unix_nano,
                            "name": e.name,
                            "attributes": {
                                kv.key: any_value_python(kv.value) for kv in e.attributes
                            },
                        }
                        for e in s.events
                    ],
                }


# -- the dataset ------------------------------------------------------------------------------


@dataclass
class DatasetFiles:
    """What ``write_dataset`` wrote: file paths by format, and how many records."""

    paths: dict[str, Path] = field(default_factory=dict)
    num_traces: int = 0
    num_spans: int = 0
    num_feedback: int = 0


def write_dataset(
    out_dir: str | Path,
    num_traces: int,
    days: int,
    seed: int,
    formats: Iterable[str] = ("pb", "otlp-json", "jsonl"),
    *,
    end: datetime | None = None,
    compress: bool = True,
    framing: str = "uint32",
) -> DatasetFiles:
    """Generate ``num_traces`` traces over ``days`` days with ``seed`` and write them to ``out_dir``.

    One seeded pass writes every requested trace format — ``pb`` (traces.pb),
    ``otlp-json`` (traces.otlp.jsonl), ``jsonl`` (traces.jsonl, flat spans) — and always
    feedback.jsonl; with ``compress`` each name ends ``.gz``. ``end`` defaults to
    2026-11-27T00:00Z so a seed always gives the same bytes. Files are written under a
    temporary name and renamed when complete. This is ``flywheel sample-data``.
    """
    formats = tuple(formats)
    unknown = set(formats) - set(FILE_NAMES)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {sorted(FILE_NAMES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    result = DatasetFiles()
    names = {fmt: out / (FILE_NAMES[fmt] + suffix) for fmt in formats}
    names["feedback"] = out / (FEEDBACK_FILE + suffix)
    handles = {fmt: _Writer(path.with_name(path.name + ".tmp")) for fmt, path in names.items()}
    try:
        for batch in generate_batches(num_traces, days, seed, end):
            request = batch.request
            if "pb" in handles:
                handles["pb"].write(frame(request.SerializeToString(deterministic=True), framing))
            if "otlp-json" in handles:
                handles["otlp-json"].write(_dumps(otlp_json(request)))
            if "jsonl" in handles:
                handles["jsonl"].write(b"".join(_dumps(s) for s in flat_spans(request)))
            handles["feedback"].write(b"".join(_dumps(r) for r in batch.feedback))
            result.num_traces += batch.num_traces
            result.num_spans += batch.num_spans
            result.num_feedback += len(batch.feedback)
    except BaseException:
        for fmt, handle in handles.items():
            handle.close()
            names[fmt].with_name(names[fmt].name + ".tmp").unlink(missing_ok=True)
        raise
    for fmt, handle in handles.items():
        handle.close()
        os.replace(names[fmt].with_name(names[fmt].name + ".tmp"), names[fmt])
        result.paths[fmt] = names[fmt]
    return result
