"""Backpressure: over the backlog bound the receiver answers 429 + Retry-After / UNAVAILABLE, then recovers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from tests.ingest.receiver_process import (
    Receiver,
    count_spans,
    make_request,
    start_receiver,
    trace_stub,
    wait_for,
)

PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    # One row of backlog is already too many; decoding in-process covers decode_workers=0.
    server = start_receiver(
        tmp_path / "lake", max_backlog_rows=1, flush_max_age_s=1.5, decode_workers=0
    )
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


def test_429_with_retry_after_then_accepted_once_flushed(receiver: Receiver) -> None:
    url = f"{receiver.url}/v1/traces"
    first = httpx.post(url, content=make_request(1, 10).SerializeToString(), headers=PROTOBUF)
    assert first.status_code == 200
    throttled = httpx.post(url, content=make_request(2, 10).SerializeToString(), headers=PROTOBUF)
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert "retry" in throttled.content.decode(errors="replace")
    json_throttled = httpx.post(url, content=b"{}", headers={"content-type": "application/json"})
    assert json_throttled.status_code == 429 and "bound" in json_throttled.json()["message"]
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            trace_stub(channel).Export(make_request(3, 10), timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        retry_info = dict(error.value.trailing_metadata() or ())
        assert "google.rpc.retryinfo-bin" in retry_info
    # The flusher empties the backlog; the refused batch is then accepted, nothing was lost.
    assert wait_for(lambda: count_spans(receiver.data_dir) == 10, timeout_s=10)
    assert wait_for(lambda: httpx.get(f"{receiver.url}/healthz").json()["backlog_rows"] == 0)
    again = httpx.post(url, content=make_request(2, 10).SerializeToString(), headers=PROTOBUF)
    assert again.status_code == 200
    assert wait_for(lambda: count_spans(receiver.data_dir) == 20, timeout_s=10)
    metrics = httpx.get(f"{receiver.url}/metrics").text
    assert 'flywheel_requests_total{path="/v1/traces",status="429",transport="http"} 2.0' in metrics
    assert 'status="UNAVAILABLE",transport="grpc"' in metrics
