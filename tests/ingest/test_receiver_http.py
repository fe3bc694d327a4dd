"""``flywheel serve`` over real sockets: the OpenTelemetry SDK's exporters, OTLP/JSON, errors, feedback.

One receiver subprocess (auth on, small limits) serves this module; each test writes to its own
project or its own trace ids, so the tests do not depend on each other's data.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from tests.ingest.receiver_process import (
    Receiver,
    batch_keys,
    count_spans,
    make_request,
    query,
    start_receiver,
    trace_stub,
    wait_for,
)

MiB = 1024 * 1024
TOKENS = {
    "tok-http-0123456789": "proj_http",
    "tok-grpc-0123456789": "proj_grpc",
    "tok-json-0123456789": "proj_json",
    "tok-read-0123456789": "proj_read",
    "tok-misc-0123456789": "proj_misc",
}
PROTOBUF = {"content-type": "application/x-protobuf"}
JSON_TYPE = {"content-type": "application/json"}


def _auth(project: str) -> dict[str, str]:
    token = next(t for t, p in TOKENS.items() if p == project)
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    data_dir = tmp_path_factory.mktemp("receiver") / "lake"
    server = start_receiver(
        data_dir,
        tokens=TOKENS,
        max_body_bytes=8 * MiB,
        max_decoded_bytes=8 * MiB,
        flush_max_age_s=1.0,
        decode_workers=2,
    )
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, server.log()
        assert not server.reap(), "decoder workers outlived the server"


class _Recording(SpanExporter):
    """Delegates to a real exporter and keeps every export's result."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def _emit_llm_spans(exporter: _Recording, service: str, num_spans: int, batch: bool) -> int:
    """Export ``num_spans`` chat spans through the SDK; returns their start time (ns)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("flywheel-tests")
    start = time.time_ns() - 10_000_000_000
    for i in range(num_spans):
        span = tracer.start_span(
            "chat gpt-4o-mini",
            start_time=start + i * 1_000_000,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 20 + i,
            },
        )
        span.end(end_time=start + i * 1_000_000 + (250 + i) * 1_000_000)
    assert provider.force_flush(10_000)
    provider.shutdown()
    return start


def _check_llm_spans(data_dir: Path, project: str, service: str, num_spans: int) -> None:
    assert wait_for(
        lambda: count_spans(data_dir, "project = ?", [project]) == num_spans, timeout_s=10
    ), f"{count_spans(data_dir, 'project = ?', [project])} of {num_spans} spans in the lake"
    rows = query(
        data_dir,
        "SELECT service_name, operation, provider, request_model, response_model, input_tokens,"
        " output_tokens, duration_ms FROM spans WHERE project = ? ORDER BY input_tokens",
        [project],
    )
    for i, row in enumerate(rows):
        assert row == (
            service,
            "chat",
            "openai",
            "gpt-4o-mini",
            "gpt-4o-mini-2024-07-18",
            100 + i,
            20 + i,
            pytest.approx(250.0 + i),
        )


def test_otel_sdk_http_exporter_spans_land_with_model_tokens_latency(receiver: Receiver) -> None:
    exporter = _Recording(
        HttpSpanExporter(
            endpoint=f"{receiver.url}/v1/traces",
            headers=_auth("proj_http"),
            compression=Compression.Gzip,
        )
    )
    _emit_llm_spans(exporter, "e2e-http", 12, batch=True)
    assert exporter.results and set(exporter.results) == {SpanExportResult.SUCCESS}
    _check_llm_spans(receiver.data_dir, "proj_http", "e2e-http", 12)


def test_otel_sdk_grpc_exporter_spans_land_with_model_tokens_latency(receiver: Receiver) -> None:
    exporter = _Recording(
        GrpcSpanExporter(
            endpoint=f"127.0.0.1:{receiver.grpc_port}",
            insecure=True,
            headers=(("authorization", "Bearer tok-grpc-0123456789"),),
        )
    )
    _emit_llm_spans(exporter, "e2e-grpc", 5, batch=False)
    assert exporter.results == [SpanExportResult.SUCCESS] * 5
    _check_llm_spans(receiver.data_dir, "proj_grpc", "e2e-grpc", 5)


def _json_request(batch: int, num_spans: int, bad_index: int | None = None) -> dict[str, Any]:
    spans = []
    for i in range(num_spans):
        spans.append(
            {
                "traceId": f"{batch:016x}{0xA5:016x}",
                "spanId": "zz" if i == bad_index else f"{batch:08x}{i + 1:08x}",
                "name": "chat",
                "startTimeUnixNano": str(1_780_000_000_000_000_000 + i),
                "endTimeUnixNano": str(1_780_000_000_020_000_000 + i),
                "attributes": [
                    {"key": "gen_ai.request.model", "value": {"stringValue": "m-json"}},
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                ],
            }
        )
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}


def _trace_count(data_dir: Path, batch: int) -> int:
    return count_spans(data_dir, "trace_id = ?", [f"{batch:016x}{0xA5:016x}"])


def test_otlp_json_plain_gzip_and_charset(receiver: Receiver) -> None:
    headers = JSON_TYPE | _auth("proj_json")
    plain = httpx.post(
        f"{receiver.url}/v1/traces", content=json.dumps(_json_request(1, 3)), headers=headers
    )
    assert (plain.status_code, plain.json()) == (200, {})
    assert plain.headers["content-type"] == "application/json"
    zipped = httpx.post(
        f"{receiver.url}/v1/traces",
        content=gzip.compress(json.dumps(_json_request(2, 4)).encode()),
        headers=headers | {"content-encoding": "gzip"},
    )
    assert (zipped.status_code, zipped.json()) == (200, {})
    charset = httpx.post(
        f"{receiver.url}/v1/traces",
        content=json.dumps(_json_request(3, 2)),
        headers=_auth("proj_json") | {"content-type": "application/json; charset=utf-8"},
    )
    assert (charset.status_code, charset.json()) == (200, {})
    data = receiver.data_dir
    assert wait_for(lambda: [_trace_count(data, b) for b in (1, 2, 3)] == [3, 4, 2])
    assert query(
        data,
        "SELECT DISTINCT project, request_model, input_tokens FROM spans WHERE name = 'chat'"
        " AND service_name = 'json-svc'",
    ) == [("proj_json", "m-json", 7)]


def test_partial_success_stores_the_good_spans(receiver: Receiver) -> None:
    response = httpx.post(
        f"{receiver.url}/v1/traces",
        content=json.dumps(_json_request(10, 5, bad_index=2)),
        headers=JSON_TYPE | _auth("proj_json"),
    )
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1"
    assert "spans[2]" in partial["errorMessage"] and "span id" in partial["errorMessage"]
    request = make_request(11, 4)
    request.resource_spans[0].scope_spans[0].spans[1].end_time_unix_nano = 1  # before its start
    binary = httpx.post(
        f"{receiver.url}/v1/traces",
        content=request.SerializeToString(),
        headers=PROTOBUF | _auth("proj_misc"),
    )
    assert binary.status_code == 200
    assert binary.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(binary.content)
    assert answer.partial_success.rejected_spans == 1
    assert "spans[1]" in answer.partial_success.error_message
    assert wait_for(lambda: _trace_count(receiver.data_dir, 10) == 4)
    good = batch_keys(11, 4) - {(f"{12:016x}{0xF1:016x}", f"{12:08x}{2:08x}")}
    assert wait_for(
        lambda: {k for k in _all_keys(receiver.data_dir) if k[0] == f"{12:016x}{0xF1:016x}"} == good
    )


def _all_keys(data_dir: Path) -> set[tuple[str, str]]:
    return {(str(t), str(s)) for t, s in query(data_dir, "SELECT trace_id, span_id FROM spans")}


def _status(response: httpx.Response) -> Status:
    assert response.headers["content-type"] == "application/x-protobuf"
    return Status.FromString(response.content)


def test_malformed_bodies_get_400_saying_where_and_why(receiver: Receiver) -> None:
    url = f"{receiver.url}/v1/traces"
    auth = _auth("proj_misc")
    garbage = httpx.post(url, content=b"\xff\xff\xff\xff", headers=PROTOBUF | auth)
    assert garbage.status_code == 400
    assert "malformed OTLP protobuf" in _status(garbage).message
    assert _status(garbage).code == 3  # INVALID_ARGUMENT
    not_json = httpx.post(url, content=b"{nope", headers=JSON_TYPE | auth)
    assert not_json.status_code == 400
    assert not_json.headers["content-type"] == "application/json"
    assert "invalid JSON" in not_json.json()["message"] and "byte 1" in not_json.json()["message"]
    logs = httpx.post(url, content=json.dumps({"resourceLogs": []}), headers=JSON_TYPE | auth)
    assert logs.status_code == 400 and "resourceLogs" in logs.json()["message"]
    bad_gzip = httpx.post(
        url, content=b"\x1f\x8b not gzip", headers=PROTOBUF | auth | {"content-encoding": "gzip"}
    )
    assert bad_gzip.status_code == 400 and "gzip" in _status(bad_gzip).message
    truncated = gzip.compress(make_request(40, 5).SerializeToString())[:-12]
    cut = httpx.post(url, content=truncated, headers=PROTOBUF | auth | {"content-encoding": "gzip"})
    assert cut.status_code == 400 and "truncated" in _status(cut).message


def test_auth_401_without_or_with_a_wrong_token(receiver: Receiver) -> None:
    body = make_request(50, 2).SerializeToString()
    url = f"{receiver.url}/v1/traces"
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Basic abc"}):
        response = httpx.post(url, content=body, headers=PROTOBUF | headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "tok-" not in _status(response).message
    feedback = httpx.post(f"{receiver.url}/v1/feedback", json={}, headers={})
    assert feedback.status_code == 401
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = trace_stub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Export(ExportTraceServiceRequest.FromString(body), timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as error:
            stub.Export(
                ExportTraceServiceRequest(), metadata=(("authorization", "Bearer x"),), timeout=10
            )
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert count_spans(receiver.data_dir, "trace_id = ?", [f"{51:016x}{0xF1:016x}"]) == 0
    log = receiver.log()
    assert not any(token in log for token in TOKENS)


def test_grpc_malformed_and_partial_success(receiver: Receiver) -> None:
    metadata = (("authorization", "Bearer tok-misc-0123456789"),)
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        raw = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as error:
            raw(b"\xff\xff\xff", metadata=metadata, timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed OTLP protobuf" in (error.value.details() or "")
        request = make_request(60, 3)
        request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
        answer = trace_stub(channel).Export(request, metadata=metadata, timeout=10)
        assert answer.partial_success.rejected_spans == 1
        assert "trace id" in answer.partial_success.error_message
    assert wait_for(lambda: _trace_count_f1(receiver.data_dir, 60) == 2)


def _trace_count_f1(data_dir: Path, batch: int) -> int:
    return count_spans(data_dir, "trace_id = ?", [f"{batch + 1:016x}{0xF1:016x}"])


def test_413_for_a_body_over_the_limit(receiver: Receiver) -> None:
    url = f"{receiver.url}/v1/traces"
    headers = PROTOBUF | _auth("proj_misc")
    declared = httpx.post(url, content=b"\0" * (9 * MiB), headers=headers)
    assert declared.status_code == 413 and "limit" in _status(declared).message

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(9):
            yield b"\0" * MiB

    streamed = httpx.post(url, content=chunks(), headers=headers)
    assert streamed.status_code == 413
    ok = httpx.post(url, content=make_request(70, 2).SerializeToString(), headers=headers)
    assert ok.status_code == 200  # the refusals disturbed nothing


def test_gzip_bomb_is_refused_without_inflating_it(receiver: Receiver) -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * MiB
    bomb = b"".join(deflater.compress(zeros) for _ in range(256)) + deflater.flush()
    assert len(bomb) < 1 * MiB  # 256 MiB once inflated: 32x the limit
    before = receiver.rss_bytes()
    response = httpx.post(
        f"{receiver.url}/v1/traces",
        content=bomb,
        headers=PROTOBUF | _auth("proj_misc") | {"content-encoding": "gzip"},
        timeout=30,
    )
    grown = receiver.rss_bytes() - before
    assert response.status_code == 413
    assert "stopped inflating" in _status(response).message
    assert grown < 64 * MiB, f"server grew by {grown / MiB:.0f} MiB on a gzip bomb"


def test_415_for_unsupported_content_type_or_encoding(receiver: Receiver) -> None:
    url = f"{receiver.url}/v1/traces"
    auth = _auth("proj_misc")
    for headers in (
        {"content-type": "text/plain"},
        {},
        PROTOBUF | {"content-encoding": "br"},
    ):
        response = httpx.post(url, content=b"x", headers=auth | headers)
        assert response.status_code == 415, headers
    xml = httpx.post(url, content=b"x", headers=auth | {"content-type": "application/xml"})
    assert "application/x-protobuf" in xml.json()["message"]
    protobuf_feedback = httpx.post(
        f"{receiver.url}/v1/feedback", content=b"x", headers=auth | PROTOBUF
    )
    assert protobuf_feedback.status_code == 415


def test_feedback_records_land_under_the_token_project(receiver: Receiver) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    good = {
        "trace_id": trace,
        "span_id": "00f067aa0ba902b7",
        "time": "2026-05-01T12:00:00Z",
        "kind": "thumbs",
        "value": -1,
        "user_id": "u-1",
        "project": "someone_else",
    }
    comment = {"trace_id": trace, "time": 1_780_000_000_000_000_000, "kind": "comment",
               "text": "wrong answer"}  # fmt: skip
    url = f"{receiver.url}/v1/feedback"
    headers = _auth("proj_misc")
    mixed = httpx.post(
        url, json={"feedback": [good, comment, {"kind": "thumbs"}, 3]}, headers=headers
    )
    assert mixed.status_code == 200
    body = mixed.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [e["record"] for e in body["errors"]] == ["[2]", "[3]"]
    assert "trace_id" in body["errors"][0]["message"]
    again = httpx.post(url, json=good, headers=headers)  # resent: no duplicate
    assert (again.status_code, again.json()["accepted"]) == (200, 1)
    bad = httpx.post(url, json=[{"trace_id": trace, "kind": "thumbs", "value": 5, "time": 1}],
                     headers=headers)  # fmt: skip
    assert bad.status_code == 400 and bad.json()["rejected"] == 1
    not_json = httpx.post(url, content=b"{", headers=headers | JSON_TYPE)
    assert not_json.status_code == 400

    def stored() -> list[tuple[Any, ...]]:
        return query(
            receiver.data_dir,
            "SELECT project, kind, value, text, user_id FROM feedback WHERE trace_id = ?"
            " ORDER BY kind",
            [trace],
        )

    assert wait_for(lambda: len(stored()) == 2)
    assert stored() == [
        ("proj_misc", "comment", None, "wrong answer", None),
        ("proj_misc", "thumbs", -1.0, None, "u-1"),
    ]


def test_healthz_and_metrics(receiver: Receiver) -> None:
    ok = httpx.post(
        f"{receiver.url}/v1/traces",
        content=make_request(80, 3).SerializeToString(),
        headers=PROTOBUF | _auth("proj_misc"),
    )
    assert ok.status_code == 200
    health = httpx.get(f"{receiver.url}/healthz")
    assert health.status_code == 200
    document = health.json()
    assert document["status"] == "ok" and document["auth"] is True
    assert {"backlog_rows", "backlog_bytes", "backlog_oldest_age_s"} <= set(document)
    text = httpx.get(f"{receiver.url}/metrics").text
    assert 'flywheel_spans_accepted_total{project="proj_misc",transport="http"}' in text
    assert 'flywheel_requests_total{path="/v1/traces",status="200",transport="http"}' in text
    assert 'flywheel_requests_total{path="/v1/traces",status="401",transport="http"}' in text
    for name in (
        "flywheel_wal_backlog_rows",
        "flywheel_wal_backlog_bytes",
        "flywheel_wal_fsync_seconds_bucket",
        "flywheel_lake_flush_seconds_bucket",
        "flywheel_request_seconds_bucket",
    ):
        assert name in text
    assert "tok-" not in text
    spec = httpx.get(f"{receiver.url}/openapi.json").json()
    assert {"/v1/traces", "/v1/feedback", "/healthz", "/metrics"} <= set(spec["paths"])
    content = spec["paths"]["/v1/traces"]["post"]["requestBody"]["content"]
    assert {"application/x-protobuf", "application/json"} <= set(content)


def test_readers_see_consistent_growing_data_while_the_receiver_writes(receiver: Receiver) -> None:
    """Counts over the lake never go down and end at exactly what was acknowledged.

    Bad requests (garbage, wrong token) are mixed into the load and must not disturb it.
    """
    data = receiver.data_dir
    num_batches, spans_per_batch = 60, 50
    acked: list[int] = []
    done = threading.Event()
    seen: list[tuple[int, int]] = []
    failures: list[str] = []

    per_round = num_batches // 3

    def send(round_start: int, worker: int) -> None:
        with httpx.Client(base_url=receiver.url, timeout=30) as client:
            for batch in range(1000 + round_start + worker, 1000 + round_start + per_round, 3):
                body = make_request(batch, spans_per_batch, input_tokens=2).SerializeToString()
                response = client.post(
                    "/v1/traces", content=body, headers=PROTOBUF | _auth("proj_read")
                )
                if response.status_code == 200:
                    acked.append(batch)
                else:
                    failures.append(f"{batch}: {response.status_code} {response.text}")
                bad = client.post(
                    "/v1/traces", content=body[:-3], headers=PROTOBUF | _auth("proj_read")
                )
                assert bad.status_code == 400  # a cut protobuf: length prefixes overrun
                assert client.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 401

    def read() -> None:
        while not done.is_set():
            row = query(
                data,
                "SELECT count(*), coalesce(sum(input_tokens), 0) FROM spans WHERE project = ?",
                ["proj_read"],
            )[0]
            seen.append((int(row[0]), int(row[1])))
            time.sleep(0.05)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        # Three rounds of concurrent senders; each round must become visible before the next
        # starts, so the reader is guaranteed to watch the lake grow mid-load.
        for round_start in range(0, num_batches, per_round):
            senders = [threading.Thread(target=send, args=(round_start, w)) for w in range(3)]
            for thread in senders:
                thread.start()
            for thread in senders:
                thread.join()
            assert not failures, failures[:3]
            expected = len(acked) * spans_per_batch
            assert wait_for(lambda want=expected: bool(seen) and seen[-1][0] >= want, timeout_s=15)
        time.sleep(0.3)
    finally:
        done.set()
        reader.join()
    counts = [count for count, _ in seen]
    assert counts == sorted(counts), "a reader saw the span count go down"
    assert all(tokens == 2 * count for count, tokens in seen), "a reader saw partial rows"
    assert counts[-1] == expected == num_batches * spans_per_batch
    assert len(set(counts)) > 2, "the reader never saw the lake grow while writes went on"
