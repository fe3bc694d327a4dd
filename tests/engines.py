"""What the tests that compare two engines (DuckDB and ClickHouse) share.

:func:`assert_close` compares results value by value (floats to ``rel=1e-9``: the engines sum
in different orders); :func:`sample_requests` reads the committed sample traces as the OTLP
requests they were sent as, for loading them the way the Collector stores them.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SAMPLE_TRACES = Path(__file__).resolve().parents[1] / "sample_data" / "data" / "traces.pb.gz"


def assert_close(got: Any, want: Any, path: str = "") -> None:
    """``got`` equals ``want``: the same keys and lengths, floats to a relative 1e-9."""
    if isinstance(want, float) and isinstance(got, int | float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), path
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    else:
        assert got == want, path


def sample_requests(path: Path = SAMPLE_TRACES) -> list[ExportTraceServiceRequest]:
    """The requests of a length-prefixed OTLP protobuf file (4-byte big-endian frame lengths,
    what ``flywheel sample-data`` writes)."""
    data = gzip.decompress(path.read_bytes())
    assert data[:1] == b"\x00"
    requests, offset = [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        requests.append(
            ExportTraceServiceRequest.FromString(data[offset + 4 : offset + 4 + length])
        )
        offset += 4 + length
    return requests
