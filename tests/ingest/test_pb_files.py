"""Protobuf files: a bad frame costs only itself, odd values get a value or a reason (never a
crash), and the columnar decoder really is the one that decodes ordinary files."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import files
from ingest.records import IngestError
from sample_data.formats import frame
from sample_data.generator import generate_batches

T0 = 1_700_000_000_000_000_000
BOTH_PATHS = pytest.mark.parametrize("columnar", [True, False], ids=["columnar", "reference"])


def _request(first_span: int, num_spans: int = 2, **attrs: Any) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(first_span, first_span + num_spans):
        span = scope.spans.add(
            trace_id=n.to_bytes(16, "big"),
            span_id=n.to_bytes(8, "big"),
            name=f"span {n}",
            start_time_unix_nano=T0 + n,
            end_time_unix_nano=T0 + n + 1_000_000,
        )
        for key, value in attrs.items():
            kv = span.attributes.add(key=key)
            if isinstance(value, bytes):
                kv.value.bytes_value = value
            elif isinstance(value, str):
                kv.value.string_value = value
            elif isinstance(value, float):
                kv.value.double_value = value
            else:
                kv.value.int_value = value
    return request.SerializeToString()


def _delimited(bodies: list[bytes]) -> bytes:
    out = b""
    for body in bodies:
        size, prefix = len(body), b""
        while True:
            byte, size = size & 0x7F, size >> 7
            prefix += bytes([byte | (0x80 if size else 0)])
            if not size:
                break
        out += prefix + body
    return out


def _decode(path: Path, columnar: bool) -> tuple[pa.Table, list[IngestError]]:
    batches = list(files.iter_file(path, columnar=columnar))
    table = pa.concat_tables([b.spans for b in batches])
    return table, [e for b in batches for e in b.errors]


@BOTH_PATHS
def test_a_bad_frame_costs_only_itself(tmp_path: Path, columnar: bool) -> None:
    bodies = [_request(1), b"\x0a\xff\xff\xff", _request(3)]
    path = tmp_path / "middle.pb"
    path.write_bytes(_delimited(bodies))
    spans, errors = _decode(path, columnar)
    assert sorted(spans["name"].to_pylist()) == ["span 1", "span 2", "span 3", "span 4"]
    (error,) = errors
    second = len(_delimited(bodies[:1]))
    assert error.location == f"byte {second} (message 1)"
    assert error.reason.startswith("malformed OTLP protobuf")


@BOTH_PATHS
def test_two_bad_frames_in_a_row_stop_the_file(tmp_path: Path, columnar: bool) -> None:
    bodies = [_request(1), b"\xff\xff", b"\xff\xff\xff", _request(3)]
    path = tmp_path / "lost.pb"
    path.write_bytes(_delimited(bodies))
    spans, errors = _decode(path, columnar)
    assert spans["name"].to_pylist() == ["span 1", "span 2"]
    assert [e.location.split(" (")[1] for e in errors] == ["message 1)", "message 2)"]


@BOTH_PATHS
def test_bytes_where_text_is_expected_is_base64(tmp_path: Path, columnar: bool) -> None:
    path = tmp_path / "bytes.pb"
    path.write_bytes(_delimited([_request(1, **{"gen_ai.request.model": b"\x00\xffgpt"})]))
    spans, errors = _decode(path, columnar)
    text = base64.b64encode(b"\x00\xffgpt").decode()
    assert not errors
    assert spans["request_model"].to_pylist() == [text, text]
    assert dict(spans["attributes"][0].as_py())["gen_ai.request.model"] == text


@BOTH_PATHS
@pytest.mark.parametrize("tokens", ["99999999999999999999", 1e300, 2.0**63])
def test_a_count_past_int64_is_no_value(tmp_path: Path, columnar: bool, tokens: Any) -> None:
    path = tmp_path / "big.pb"
    path.write_bytes(_delimited([_request(1, **{"gen_ai.usage.input_tokens": tokens})]))
    spans, errors = _decode(path, columnar)
    assert not errors
    assert spans["input_tokens"].to_pylist() == [None, None]


@BOTH_PATHS
def test_a_time_past_2262_rejects_the_span_and_says_why(tmp_path: Path, columnar: bool) -> None:
    request = ExportTraceServiceRequest.FromString(_request(1, num_spans=3))
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].end_time_unix_nano = 2**64 - 1
    spans[1].events.add(time_unix_nano=2**63, name="gen_ai.first_token")
    path = tmp_path / "far.pb"
    path.write_bytes(_delimited([request.SerializeToString()]))
    table, errors = _decode(path, columnar)
    assert table["name"].to_pylist() == ["span 3"]
    assert [e.location for e in errors] == [
        "resourceSpans[0].scopeSpans[0].spans[0]",
        "resourceSpans[0].scopeSpans[0].spans[1]",
    ]
    assert "past 2262-04-11" in errors[0].reason
    assert errors[1].reason.startswith(f"event 0 time {2**63} ns is outside")


def test_ordinary_files_never_take_the_per_span_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sample data (every convention the generator speaks, events, message lists) decodes
    without one request going through protobuf objects."""
    path = tmp_path / "sample.pb"
    with path.open("wb") as handle:
        for batch in generate_batches(200, 3, 11):
            handle.write(frame(batch.request.SerializeToString(deterministic=True)))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a request went through protobuf objects")

    monkeypatch.setattr(files, "add_request_protobuf", refuse)
    batches = list(files.iter_file(path, batch_spans=300))
    assert sum(b.spans.num_rows for b in batches) > 1000
    assert not any(b.errors for b in batches)


def test_the_receiver_decodes_a_large_body_column_wise_with_the_same_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ingest import receiver_decode
    from ingest.otlp_arrow import COLUMNAR_MIN_BYTES

    request = ExportTraceServiceRequest()
    for batch in generate_batches(60, 1, 5):
        request.MergeFrom(batch.request)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].end_time_unix_nano = spans[0].start_time_unix_nano - 1  # one rejected span
    body = request.SerializeToString()
    assert len(body) >= COLUMNAR_MIN_BYTES

    def decode() -> Any:
        return receiver_decode.decode_body(body, "identity", "protobuf", "p", 2**30, "req")

    columnar = decode()
    monkeypatch.setattr(receiver_decode, "COLUMNAR_MIN_BYTES", 2**62)
    reference = decode()
    assert columnar.failure is None and reference.failure is None
    assert columnar.errors == reference.errors and len(columnar.errors) == 1
    order = [("trace_id", "ascending"), ("span_id", "ascending")]
    assert columnar.spans.num_rows == reference.spans.num_rows > 400
    assert columnar.spans.sort_by(order).equals(reference.spans.sort_by(order))
    assert columnar.guardrails.num_rows == reference.guardrails.num_rows > 0

    # and the large body really went the columnar way
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded through protobuf objects")

    monkeypatch.setattr(receiver_decode, "COLUMNAR_MIN_BYTES", COLUMNAR_MIN_BYTES)
    monkeypatch.setattr(receiver_decode, "decode_otlp_protobuf", refuse)
    assert decode().spans.num_rows == columnar.spans.num_rows
