"""Run ``ingest.receiver.serve`` as a real subprocess on free loopback ports, for the receiver tests."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from store.catalog import open_catalog

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0

_LAUNCH = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from ingest.receiver import serve
from ingest.receiver_config import Limits
from store.writer import LakeWriter
args = json.loads(sys.argv[1])
open_writer = LakeWriter
if args["chdb"]:  # ClickHouse in-process at this path: the --store clickhouse:// writer
    import functools
    from chdb import session
    from store.clickhouse.catalog import ChdbEngine
    from store.clickhouse.writer import ClickHouseWriter
    path, database = args["chdb"]
    engine = ChdbEngine(session.Session(path), database)
    open_writer = functools.partial(ClickHouseWriter, engine=engine, database=database)
serve(
    args["data_dir"], host="127.0.0.1", port=0, grpc_port=0,
    tokens=args["tokens"], project=args["project"], limits=Limits(**args["limits"]),
    on_ready=lambda http, grpc: print(json.dumps({"http": http, "grpc": grpc}), flush=True),
    open_writer=open_writer,
)
"""


@dataclass
class Receiver:
    """A running ``serve`` subprocess and where it listens."""

    data_dir: Path
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log_path: Path
    children: list[psutil.Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL of the OTLP/HTTP server."""
        return f"http://127.0.0.1:{self.http_port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server and its decoder workers."""
        parent = psutil.Process(self.process.pid)
        total = 0
        for proc in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait for the clean shutdown (flush); return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.reap()

    def kill(self) -> None:
        """SIGKILL the server only (its workers must notice and exit by themselves)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def reap(self, timeout_s: float = 10.0) -> list[psutil.Process]:
        """Wait for the worker processes to exit; kill and return any that did not."""
        deadline = time.monotonic() + timeout_s
        alive = self.children
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _running(p)]
            time.sleep(0.05)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        return alive

    def log(self) -> str:
        """What the server wrote to stderr."""
        return self.log_path.read_text(errors="replace")


def _running(proc: psutil.Process) -> bool:
    # Orphans of a killed server are re-parented to an init that may not reap them: a zombie
    # has exited all the same.
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def start_receiver(
    data_dir: Path,
    *,
    tokens: dict[str, str] | None = None,
    project: str = "default",
    chdb: tuple[Path, str] | None = None,
    **limits: Any,
) -> Receiver:
    """Start ``serve`` on free ports and wait until both servers listen.

    ``chdb`` (a chdb data path and a database) writes to ClickHouse (``ClickHouseWriter``, as
    ``--store clickhouse://`` does) in the server process instead of the Parquet lake.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-receiver-{time.time_ns()}.log"
    args = {
        "data_dir": str(data_dir),
        "tokens": tokens or {},
        "project": project,
        "limits": limits,
        "chdb": [str(chdb[0]), chdb[1]] if chdb else None,
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=env,
            cwd=ROOT,
        )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    line = b""
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"receiver did not start:\n{log_path.read_text()}")
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            line += os.read(process.stdout.fileno(), 4096)
    ports = json.loads(line)
    receiver = Receiver(data_dir, process, ports["http"], ports["grpc"], log_path)
    receiver.children = psutil.Process(process.pid).children(recursive=True)
    return receiver


def count_spans(data_dir: Path, where: str = "true", params: list[Any] | None = None) -> int:
    """Spans in the lake matching a SQL condition, read as the dashboard does."""
    conn = open_catalog(data_dir)
    try:
        row = conn.execute(f"SELECT count(*) FROM spans WHERE {where}", params or []).fetchone()
    finally:
        conn.close()
    assert row is not None
    return int(row[0])


def span_keys(data_dir: Path) -> list[tuple[str, str]]:
    """Every (trace_id, span_id) row in the lake, duplicates included."""
    conn = open_catalog(data_dir)
    try:
        rows = conn.execute("SELECT trace_id, span_id FROM spans").fetchall()
    finally:
        conn.close()
    return [(str(t), str(s)) for t, s in rows]


def wait_for(condition: Any, timeout_s: float = 15.0, interval_s: float = 0.1) -> Any:
    """Poll ``condition()`` until it is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout_s
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = condition()
    return value


def make_request(
    batch: int, num_spans: int, *, project_tag: str = "t", input_tokens: int = 1
) -> ExportTraceServiceRequest:
    """A request whose spans have ids unique to ``batch`` (trace id and span ids encode it)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attr = resource_spans.resource.attributes.add()
    attr.key, attr.value.string_value = "service.name", f"svc-{project_tag}"
    scope_spans = resource_spans.scope_spans.add()
    start = 1_780_000_000_000_000_000 + batch * 1_000_000_000
    for index in range(num_spans):
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(f"{batch + 1:016x}{0xF1:016x}")
        span.span_id = bytes.fromhex(f"{batch + 1:08x}{index + 1:08x}")
        span.name = "chat"
        span.kind = 3
        span.start_time_unix_nano = start + index
        span.end_time_unix_nano = start + index + 5_000_000
        for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "m-1")):
            kv = span.attributes.add()
            kv.key, kv.value.string_value = key, value
        kv = span.attributes.add()
        kv.key, kv.value.int_value = "gen_ai.usage.input_tokens", input_tokens
    return request


def batch_keys(batch: int, num_spans: int) -> set[tuple[str, str]]:
    """The (trace_id, span_id) keys ``make_request(batch, num_spans)`` sends."""
    trace = f"{batch + 1:016x}{0xF1:016x}"
    return {(trace, f"{batch + 1:08x}{index + 1:08x}") for index in range(num_spans)}


def query(data_dir: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Run SQL over the lake's views and return all rows."""
    conn: duckdb.DuckDBPyConnection = open_catalog(data_dir)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


def trace_stub(channel: Any) -> Any:
    """A generated ``TraceService`` client stub on ``channel``."""
    return TraceServiceStub(channel)  # type: ignore[no-untyped-call]
