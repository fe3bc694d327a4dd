"""Bad input gets an error that says where and why, and everything valid beside it lands."""

from __future__ import annotations

import base64
import copy
import gc
import gzip
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest.files import iter_file
from ingest.otlp import decode_otlp_json, decode_otlp_protobuf
from ingest.records import IngestError
from tests.ingest.otlp_convert import json_to_protobuf

GOLDEN = Path(__file__).parent.parent / "golden"


def _request(num_spans: int = 3) -> dict[str, Any]:
    spans = [
        {
            "traceId": f"{i + 1:032x}",
            "spanId": f"{i + 1:016x}",
            "name": f"span {i}",
            "kind": 3,
            "startTimeUnixNano": str(1_700_000_000_000_000_000 + i),
            "endTimeUnixNano": str(1_700_000_001_000_000_000 + i),
            "attributes": [
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": str(10 * i)}}
            ],
        }
        for i in range(num_spans)
    ]
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": spans}]}]}


def _collect(path: Path) -> tuple[pa.Table, list[IngestError]]:
    batches = list(iter_file(path))
    return pa.concat_tables([b.spans for b in batches]), [e for b in batches for e in b.errors]


def test_malformed_protobuf_says_malformed_and_where() -> None:
    with pytest.raises(IngestError) as info:
        decode_otlp_protobuf(b"\x0a\xff\xff\xff\x0f garbage")
    assert info.value.location.startswith("byte 0")
    assert "malformed OTLP protobuf" in info.value.reason


def test_not_json_names_the_byte() -> None:
    with pytest.raises(IngestError) as info:
        decode_otlp_json(b'{"resourceSpans": [}')
    assert info.value.location == "byte 19"
    assert "invalid JSON" in info.value.reason


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s.update(traceId="abc"), "invalid trace id 'abc'"),
        (lambda s: s.update(traceId="0" * 32), "invalid trace id"),
        (lambda s: s.update(spanId="zz" * 8), "invalid span id"),
        (lambda s: s.update(parentSpanId="123"), "invalid parent span id"),
        (
            lambda s: s["attributes"][0]["value"].update(intValue="ten"),
            "intValue must be an integer, got 'ten'",
        ),
        (lambda s: s.update(startTimeUnixNano="soon"), "startTimeUnixNano must be an integer"),
        (lambda s: s.update(endTimeUnixNano="1"), "before start time"),
        (lambda s: s.update(kind="SPAN_KIND_SIDEWAYS"), "unknown span kind 'SPAN_KIND_SIDEWAYS'"),
        (lambda s: s.update(attributes={"k": "v"}), "attributes must be a list"),
        (lambda s: s.update(name=7), "name must be a string"),
        (lambda s: s.update(startTimeUnixNano="0"), "missing start time"),
    ],
)
def test_one_bad_span_is_rejected_and_the_others_land(mutate: Any, reason: str) -> None:
    request = _request()
    mutate(request["resourceSpans"][0]["scopeSpans"][0]["spans"][1])
    decoded = decode_otlp_json(json.dumps(request), source="req-1")
    assert decoded.spans["name"].to_pylist() == ["span 0", "span 2"]
    assert decoded.spans["input_tokens"].to_pylist() == [0, 20]
    assert len(decoded.errors) == 1
    error = decoded.errors[0]
    assert error.source == "req-1"
    assert error.location == "resourceSpans[0].scopeSpans[0].spans[1]"
    assert reason in error.reason


def test_enum_names_mixed_case_ids_and_numbers_as_strings_are_accepted() -> None:
    request = _request(1)
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span.update(
        traceId=span["traceId"].upper(),
        kind="SPAN_KIND_SERVER",
        status={"code": "STATUS_CODE_ERROR"},
    )
    span["startTimeUnixNano"] = int(span["startTimeUnixNano"])
    decoded = decode_otlp_json(json.dumps(request))
    row = decoded.spans.to_pylist()[0]
    assert (row["trace_id"], row["kind"], row["status_code"]) == (f"{1:032x}", "SERVER", "ERROR")
    assert decoded.errors == []


def test_base64_ids_are_accepted() -> None:
    request = _request(1)
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = "T6nh/mMkIONaoHewS9UWIw=="
    decoded = decode_otlp_json(json.dumps(request))
    assert decoded.spans["trace_id"].to_pylist() == [
        base64.b64decode("T6nh/mMkIONaoHewS9UWIw==").hex()
    ]


def test_a_logs_request_on_the_traces_path_says_so() -> None:
    text = (Path(__file__).parent / "otlp_logs_example.json").read_text()
    decoded = decode_otlp_json(text)
    assert decoded.spans.num_rows == 0
    assert "OTLP logs request (resourceLogs)" in decoded.errors[0].reason


def test_unknown_attributes_and_fields_are_kept_not_dropped() -> None:
    request = _request(1)
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"].append(
        {
            "key": "acme.custom",
            "value": {"kvlistValue": {"values": [{"key": "a", "value": {"intValue": "1"}}]}},
        }
    )
    span["someFutureField"] = {"x": 1}
    decoded = decode_otlp_json(json.dumps(request))
    assert dict(decoded.spans["attributes"].to_pylist()[0])["acme.custom"] == '{"a":1}'


def test_missing_parent_is_kept() -> None:
    request = _request(1)
    request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["parentSpanId"] = "00000000000000aa"
    decoded = decode_otlp_json(json.dumps(request))
    assert decoded.spans["parent_span_id"].to_pylist() == ["00000000000000aa"]


def test_jsonl_with_some_bad_lines(tmp_path: Path) -> None:
    good = {
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "name": "ok",
        "start_time": 1_700_000_000_000_000_000,
        "end_time": 1_700_000_000_500_000_000,
        "attributes": {"gen_ai.usage.output_tokens": 5},
    }
    other = dict(
        good,
        span_id="c" * 16,
        start_time="2023-11-14T22:13:20.25Z",
        end_time="2023-11-14T22:13:21Z",
    )
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(dict(good, span_id="d" * 16, start_time=[1, 2, 3])),
        "",
        json.dumps(other),
        json.dumps(
            {
                "type": "feedback",
                "trace_id": "a" * 32,
                "kind": "thumbs",
                "value": -1,
                "time": "2023-11-14T22:14:00Z",
            }
        ),
        json.dumps(
            {
                "type": "feedback",
                "trace_id": "a" * 32,
                "kind": "thumbs",
                "value": 3,
                "time": "2023-11-14T22:14:00Z",
            }
        ),
        json.dumps({"type": "gauge"}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    batches = list(iter_file(path))
    spans = pa.concat_tables([b.spans for b in batches])
    feedback = pa.concat_tables([b.feedback for b in batches])
    errors = [e for b in batches for e in b.errors]
    assert spans["span_id"].to_pylist() == ["b" * 16, "c" * 16]
    assert spans["output_tokens"].to_pylist() == [5, 5]
    assert spans["duration_ms"].to_pylist() == [500.0, 750.0]
    assert feedback["value"].to_pylist() == [-1.0]
    assert [(e.location, e.source) for e in errors] == [
        (f"line {n}", str(path)) for n in (2, 3, 7, 8)
    ]
    assert "invalid JSON" in errors[0].reason
    assert "start_time" in errors[1].reason
    assert "thumbs feedback needs value 1 or -1" in errors[2].reason
    assert "unknown record type 'gauge'" in errors[3].reason


def test_truncated_gzip_keeps_what_came_before(tmp_path: Path) -> None:
    line = json.dumps(_request(1))
    requests = [json.loads(line) for _ in range(400)]
    for i, request in enumerate(requests):
        request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = f"{i + 1:016x}"
    data = gzip.compress(("\n".join(json.dumps(r) for r in requests) + "\n").encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    spans, errors = _collect(path)
    assert 0 < spans.num_rows < 400
    assert spans["span_id"].to_pylist() == [f"{i + 1:016x}" for i in range(spans.num_rows)]
    assert len(errors) == 1 and "truncated or corrupt gzip" in errors[0].reason


def _delimited(messages: list[bytes]) -> bytes:
    out = bytearray()
    for message in messages:
        size = len(message)
        while True:
            byte = size & 0x7F
            size >>= 7
            out.append(byte | (0x80 if size else 0))
            if not size:
                break
        out += message
    return bytes(out)


def test_protobuf_file_cut_mid_message_keeps_whole_messages(tmp_path: Path) -> None:
    messages = []
    for i in range(3):
        request = _request(2)
        for j, span in enumerate(request["resourceSpans"][0]["scopeSpans"][0]["spans"]):
            span["spanId"] = f"{10 * i + j + 1:016x}"
        messages.append(json_to_protobuf(request).SerializeToString())
    data = _delimited(messages)
    path = tmp_path / "cut.pb"
    path.write_bytes(data[:-5])
    spans, errors = _collect(path)
    assert spans.num_rows == 4
    assert len(errors) == 1
    assert errors[0].location == f"byte {len(data) - len(_delimited(messages[2:]))} (message 2)"
    assert "file ends after" in errors[0].reason


def test_protobuf_file_forms_agree(tmp_path: Path) -> None:
    """Delimited, 4-byte big-endian framed, single-message and gzip forms give the same rows."""
    case = json.loads((GOLDEN / "openllmetry.in.json").read_text())
    first = json_to_protobuf(case).SerializeToString()
    second_doc = copy.deepcopy(case)
    for rs in second_doc["resourceSpans"]:
        for span in rs["scopeSpans"][0]["spans"]:
            span["spanId"] = span["spanId"][::-1]
    second = json_to_protobuf(second_doc).SerializeToString()
    forms = {
        "delimited.pb": _delimited([first, second]),
        "framed.pb": b"".join(len(m).to_bytes(4, "big") + m for m in (first, second)),
        "delimited.pb.gz": gzip.compress(_delimited([first, second])),
    }
    tables = {}
    for name, data in forms.items():
        (tmp_path / name).write_bytes(data)
        tables[name], errors = _collect(tmp_path / name)
        assert errors == []
    (tmp_path / "single.pb").write_bytes(first)
    single, errors = _collect(tmp_path / "single.pb")
    assert errors == [] and single.num_rows == 2
    assert tables["delimited.pb"].num_rows == 4
    assert tables["delimited.pb"].equals(tables["framed.pb"])
    assert tables["delimited.pb"].equals(tables["delimited.pb.gz"])
    assert tables["delimited.pb"].slice(0, 2)["span_id"].equals(single["span_id"])


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "traces.csv"
    path.write_text("a,b\n")
    _, errors = _collect(path)
    assert "unknown file type" in errors[0].reason


def test_an_error_survives_the_trip_back_from_a_decoder_process() -> None:
    """The receiver decodes in worker processes, which send their errors back pickled."""
    error = IngestError("POST /v1/traces", "resourceSpans[0].scopeSpans[0].spans[3]", "bad id")
    copy_back = pickle.loads(pickle.dumps(error))
    assert (copy_back.source, copy_back.location, copy_back.reason) == (
        error.source,
        error.location,
        error.reason,
    )
    assert str(copy_back) == "POST /v1/traces: resourceSpans[0].scopeSpans[0].spans[3]: bad id"


def test_reading_a_gzip_file_closes_it(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl.gz"
    path.write_bytes(
        gzip.compress(
            b'{"type": "feedback", "trace_id": "' + b"ab" * 16 + b'", "kind": "copy", "time": 1}\n'
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = list(iter_file(path))
        gc.collect()
    assert sum(d.feedback.num_rows for d in decoded) == 1
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
