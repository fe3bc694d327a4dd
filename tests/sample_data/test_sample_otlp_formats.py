"""The OTLP/JSON lines follow the OTLP spec and decode back to the very same protobuf; the
protobuf frames and the flat records carry the same spans."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from sample_facts import Dataset

from sample_data import write_dataset
from sample_data.formats import flat_spans, frame, otlp_json, read_otlp_pb

HEX = {"traceId": re.compile(r"[0-9a-f]{32}"), "spanId": re.compile(r"[0-9a-f]{16}")}
HEX["parentSpanId"] = HEX["spanId"]
DIGITS = re.compile(r"-?[0-9]+")


def _set_value(target: AnyValue, value: dict[str, Any]) -> None:
    (form, v), *rest = value.items() or [(None, None)]
    assert not rest, value
    if form == "stringValue":
        target.string_value = v
    elif form == "boolValue":
        target.bool_value = v
    elif form == "intValue":
        assert isinstance(v, str) and DIGITS.fullmatch(v)
        target.int_value = int(v)
    elif form == "doubleValue":
        target.double_value = v
    elif form == "bytesValue":
        target.bytes_value = base64.b64decode(v)
    elif form == "arrayValue":
        target.array_value.SetInParent()
        for item in v.get("values", []):
            _set_value(target.array_value.values.add(), item)
    elif form == "kvlistValue":
        target.kvlist_value.SetInParent()
        _set_kvs(target.kvlist_value.values, v.get("values", []))


def _set_kvs(target: Any, kvs: list[dict[str, Any]]) -> None:
    for kv in kvs:
        item = target.add()
        item.key = kv["key"]
        _set_value(item.value, kv["value"])


def _nanos(value: Any) -> int:
    assert isinstance(value, str) and DIGITS.fullmatch(value), value
    return int(value)


def decode_by_hand(obj: dict[str, Any]) -> ExportTraceServiceRequest:
    """OTLP/JSON → protobuf, written out field by field (not json_format)."""
    request = ExportTraceServiceRequest()
    for rs_json in obj["resourceSpans"]:
        rs = request.resource_spans.add()
        _set_kvs(rs.resource.attributes, rs_json["resource"].get("attributes", []))
        for ss_json in rs_json["scopeSpans"]:
            ss = rs.scope_spans.add()
            ss.scope.name = ss_json["scope"].get("name", "")
            ss.scope.version = ss_json["scope"].get("version", "")
            for sj in ss_json["spans"]:
                span = ss.spans.add()
                span.trace_id = bytes.fromhex(sj["traceId"])
                span.span_id = bytes.fromhex(sj["spanId"])
                span.parent_span_id = bytes.fromhex(sj.get("parentSpanId", ""))
                span.flags = sj.get("flags", 0)
                span.name = sj["name"]
                assert isinstance(sj.get("kind", 0), int)
                span.kind = sj.get("kind", 0)
                span.start_time_unix_nano = _nanos(sj["startTimeUnixNano"])
                span.end_time_unix_nano = _nanos(sj["endTimeUnixNano"])
                _set_kvs(span.attributes, sj.get("attributes", []))
                for ej in sj.get("events", []):
                    event = span.events.add()
                    event.time_unix_nano = _nanos(ej["timeUnixNano"])
                    event.name = ej["name"]
                    _set_kvs(event.attributes, ej.get("attributes", []))
                if "status" in sj:
                    assert isinstance(sj["status"].get("code", 0), int)
                    span.status.code = sj["status"].get("code", 0)
                    span.status.message = sj["status"].get("message", "")
    return request


def _walk(node: Any, seen: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            seen.add(key)
            if key in HEX:
                assert HEX[key].fullmatch(value), (key, value)
            elif key.endswith("UnixNano") or key == "intValue":
                assert isinstance(value, str) and DIGITS.fullmatch(value), (key, value)
            elif key in ("kind", "code", "flags"):
                assert isinstance(value, int), (key, value)
            _walk(value, seen)
    elif isinstance(node, list):
        for item in node:
            _walk(item, seen)


def test_otlp_json_follows_the_spec(dataset: Dataset) -> None:
    seen: set[str] = set()
    for batch in dataset.batches:
        _walk(json.loads(json.dumps(otlp_json(batch.request))), seen)
    forms = {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue"}
    assert forms <= seen
    assert {"parentSpanId", "kind", "status", "events", "flags"} <= seen


def test_otlp_json_decodes_back_to_the_same_protobuf(dataset: Dataset) -> None:
    for batch in dataset.batches[:4]:
        line = json.dumps(otlp_json(batch.request))
        assert decode_by_hand(json.loads(line)) == batch.request


@pytest.mark.parametrize("framing", ["uint32", "varint"])
def test_protobuf_frames_round_trip(tmp_path: Path, framing: str) -> None:
    write_dataset(tmp_path, 450, 2, 3, formats=["pb"], framing=framing)
    requests = list(read_otlp_pb(tmp_path / "traces.pb.gz", framing))
    assert len(requests) == 3
    raw = requests[0].SerializeToString(deterministic=True)
    assert frame(raw, framing).endswith(raw)
    first = (tmp_path / "traces.pb.gz").open("rb").read(2)
    assert first == b"\x1f\x8b"  # gzip


def test_files_agree_with_each_other(tmp_path: Path) -> None:
    result = write_dataset(tmp_path, 250, 2, 4)
    from_pb = [s for r in read_otlp_pb(result.paths["pb"]) for s in flat_spans(r)]
    with gzip.open(result.paths["otlp-json"]) as f:
        from_json = [s for line in f for s in flat_spans(decode_by_hand(json.loads(line)))]
    with gzip.open(result.paths["jsonl"]) as f:
        flat = [json.loads(line) for line in f]
    assert from_pb == from_json == flat
    assert len(flat) == result.num_spans
    assert all(s["type"] == "span" and s["project"] == "default" for s in flat)
