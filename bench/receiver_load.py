"""The OTLP receiver under load: accepted spans/s, request latency, peak RSS, time to queryable.

A ``flywheel serve`` subprocess (``ingest.receiver.serve``, loopback only, free ports, an empty
data dir) takes OTLP/HTTP protobuf batches from several concurrent exporter threads, each with
a keep-alive ``http.client`` connection. The batches (``--spans-per-request`` spans each, from
``sample_data.generator.generate``) are built and serialized before the clock starts; to get
enough distinct spans cheaply, a base set is generated once and copied with rewritten trace ids
(so every span is new to the lake's dedup). The run stops after ``--max-spans`` spans or
``--duration-s`` seconds, whichever comes first. A 429 is retried after a short pause, as an
OTel exporter would; only 200s count as accepted.

Measured: sustained accepted spans/s (spans acknowledged / time from first send to last ack),
p50/p99 request latency of the accepted requests, the server's peak RSS (server process plus
its decoder workers, sampled every 0.2 s, also at each quarter of the run to show whether it
stays flat), CPU seconds by process (server main, decoder workers, this load generator), the
freshness of the lake under load (probe spans sent every second: ack -> visible in Parquet),
and the drain time (last ack -> every acknowledged span queryable).

    python -m bench.receiver_load                       # defaults: 4 exporters, 250 spans/request
    python -m bench.receiver_load --decode-workers 0    # decode in the server process instead
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.report import Figure, write_result
from sample_data.generator import generate

NAME = "receiver"
TARGET_SPANS_PER_S = 20_000
BASE_TRACES = 3_000  # ~25k spans generated once; copies with new trace ids make the rest
SEED = 11
_REPO = Path(__file__).resolve().parent.parent
_LAUNCH = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from ingest.receiver import serve
from ingest.receiver_config import Limits
args = json.loads(sys.argv[1])
serve(args["data_dir"], host="127.0.0.1", port=0, grpc_port=None, limits=Limits(**args["limits"]),
      on_ready=lambda http, grpc: print(json.dumps({"http": http}), flush=True))
"""
PROTOBUF = {"content-type": "application/x-protobuf"}


def build_requests(max_spans: int, spans_per_request: int) -> list[tuple[bytes, int]]:
    """Serialized requests of about ``spans_per_request`` spans, ``max_spans`` in all, all distinct."""
    traces_per_request = max(1, round(spans_per_request / 8))
    base: list[tuple[bytes, int, list[bytes]]] = []
    for request in generate(BASE_TRACES, 1, SEED, batch_size=traces_per_request):
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        trace_ids = sorted({span.trace_id for span in spans})
        base.append((request.SerializeToString(), _num_spans(request), trace_ids))
    out: list[tuple[bytes, int]] = []
    total = 0
    copy = 0
    while total < max_spans:
        for body, num_spans, trace_ids in base:
            if copy:
                for trace_id in trace_ids:  # the 16 id bytes appear verbatim in the encoding
                    body = body.replace(trace_id, _copy_id(trace_id, copy))
            out.append((body, num_spans))
            total += num_spans
            if total >= max_spans:
                break
        copy += 1
    return out


def _num_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _copy_id(trace_id: bytes, copy: int) -> bytes:
    return trace_id[:12] + (int.from_bytes(trace_id[12:], "big") ^ copy).to_bytes(4, "big")


@dataclass
class Server:
    """A running receiver subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        """Base URL of the OTLP/HTTP server."""
        return f"http://127.0.0.1:{self.port}"

    def tree(self) -> list[psutil.Process]:
        """The server and its decoder workers."""
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def rss_bytes(self) -> int:
        """Resident memory of the whole tree."""
        total = 0
        for proc in self.tree():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self) -> int:
        """SIGTERM and wait for the clean shutdown."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


def start_server(data_dir: Path, limits: dict[str, Any], log_path: Path) -> Server:
    """Start ``serve`` on a free loopback port and wait until it listens."""
    env = dict(os.environ, PYTHONPATH=str(_REPO), OMP_NUM_THREADS="1")
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCH,
                json.dumps({"data_dir": str(data_dir), "limits": limits}),
            ],
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=env,
            cwd=_REPO,
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 120)
    if not ready:
        process.kill()
        raise RuntimeError(f"receiver did not start: {log_path.read_text()}")
    port = json.loads(process.stdout.readline())["http"]
    return Server(process, port, data_dir)


def _lake_count(data_dir: Path, trace_hex: str | None = None) -> int:
    if not list(data_dir.glob("spans/*/*.parquet")):
        return 0
    glob = str(data_dir / "spans" / "*" / "*.parquet")
    sql = f"SELECT count(*) FROM read_parquet('{glob}')"
    params: list[Any] = []
    if trace_hex is not None:
        sql += " WHERE trace_id = ?"
        params.append(trace_hex)
    row = duckdb.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _in_new_segments(data_dir: Path, trace_hex: str, seen: set[Path]) -> bool:
    """Whether a segment not searched before holds ``trace_hex`` (cheap enough to poll)."""
    found = False
    for path in sorted(set(data_dir.glob("spans/*/*.parquet")) - seen):
        seen.add(path)
        trace_ids = pq.read_table(path, columns=["trace_id"]).column("trace_id")
        found = found or bool(pc.any(pc.equal(trace_ids, trace_hex)).as_py())
    return found


def _probe_request(index: int) -> tuple[bytes, str]:
    trace_id = bytes.fromhex(f"{0xFEED:08x}{index:024x}")
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = trace_id, b"\x01" * 8, "freshness-probe"
    span.start_time_unix_nano = time.time_ns()
    span.end_time_unix_nano = span.start_time_unix_nano + 1_000_000
    return request.SerializeToString(), trace_id.hex()


@dataclass
class LoadResult:
    """What the exporters saw."""

    latencies_s: list[float] = field(default_factory=list)
    num_spans: int = 0
    num_requests: int = 0
    num_throttled: int = 0
    num_errors: int = 0
    first_send: float = 0.0
    last_ack: float = 0.0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    freshness_s: list[float] = field(default_factory=list)
    num_probes: int = 0


def run_load(
    server: Server, requests: list[tuple[bytes, int]], exporters: int, duration_s: float
) -> LoadResult:
    """Send every request (or until ``duration_s``) from ``exporters`` threads."""
    result = LoadResult()
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    stop = threading.Event()
    deadline = time.monotonic() + duration_s

    def exporter() -> None:
        # http.client rather than httpx: the load generator shares the 2 cores with the server,
        # so its own cost per request is kept as low as a keep-alive connection allows.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while time.monotonic() < deadline:
            with lock:
                index = next(cursor, None)
            if index is None:
                break
            body, num_spans = requests[index]
            while True:
                started = time.monotonic()
                connection.request("POST", "/v1/traces", body, PROTOBUF)
                response = connection.getresponse()
                response.read()
                if response.status != 429:
                    break
                with lock:
                    result.num_throttled += 1
                time.sleep(0.05)
            done = time.monotonic()
            with lock:
                if response.status == 200:
                    result.latencies_s.append(done - started)
                    result.num_spans += num_spans
                    result.num_requests += 1
                    result.last_ack = max(result.last_ack, done)
                else:
                    result.num_errors += 1
        connection.close()

    def sample_rss() -> None:
        while not stop.is_set():
            result.rss_samples.append((time.monotonic(), server.rss_bytes()))
            stop.wait(0.2)

    def probe_freshness() -> None:
        index = 0
        seen: set[Path] = set()  # segments already searched: each new one is read once
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while not stop.wait(1.0):
            index += 1
            body, trace_hex = _probe_request(index)
            try:
                connection.request("POST", "/v1/traces", body, PROTOBUF)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                # The server closes a keep-alive connection idle for 5 s (the probe waits for
                # visibility in between): open a new one, as an exporter would.
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                continue
            if response.status != 200:
                continue
            acked = time.monotonic()
            with lock:
                result.num_probes += 1
            while not stop.is_set() and not _in_new_segments(server.data_dir, trace_hex, seen):
                time.sleep(0.1)
            if not stop.is_set():
                result.freshness_s.append(time.monotonic() - acked)
        connection.close()

    helpers = [threading.Thread(target=sample_rss), threading.Thread(target=probe_freshness)]
    for thread in helpers:
        thread.start()
    result.first_send = time.monotonic()
    threads = [threading.Thread(target=exporter) for _ in range(exporters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in helpers:
        thread.join()
    return result


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every process, ours and others')."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q  # linear interpolation, as numpy's default
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seconds


def run(
    *,
    exporters: int = 4,
    spans_per_request: int = 250,
    max_spans: int = 1_500_000,
    duration_s: float = 60.0,
    decode_workers: int | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[Figure], dict[str, Any]]:
    """Run the load once; return figures and details."""
    log(f"receiver: building {max_spans:,} spans in requests of ~{spans_per_request} …")
    requests = build_requests(max_spans, spans_per_request)
    work = Path(tempfile.mkdtemp(prefix="flywheel-receiver-bench-"))
    limits: dict[str, Any] = {}
    if decode_workers is not None:
        limits["decode_workers"] = decode_workers
    server = start_server(work / "lake", limits, work / "server.log")
    try:
        log(f"receiver: {exporters} exporters → {server.url}/v1/traces (≤ {duration_s:.0f} s) …")
        warm = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        warm.request("POST", "/v1/traces", _probe_request(0)[0], PROTOBUF)
        assert warm.getresponse().status == 200
        warm.close()
        rss_idle = server.rss_bytes()
        procs = server.tree()
        me = psutil.Process()
        load_before = os.getloadavg()[0]
        busy_before = _busy_seconds()
        cpu_before = _cpu_seconds([*procs, me])
        result = run_load(server, requests, exporters, duration_s)
        cpu_after = _cpu_seconds([*procs, me])
        busy = _busy_seconds() - busy_before
        cpu = {pid: cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0) for pid in cpu_before}
        drain_started = time.monotonic()
        expected = result.num_spans + 1 + result.num_probes
        while _lake_count(server.data_dir) < expected and time.monotonic() - drain_started < 60:
            time.sleep(0.2)
        drain_s = time.monotonic() - result.last_ack
        in_lake = _lake_count(server.data_dir)
    finally:
        exit_code = server.stop()
    elapsed = result.last_ack - result.first_send
    spans_per_s = result.num_spans / elapsed if elapsed > 0 else 0.0
    mib = 1024 * 1024
    rss = [r for _, r in result.rss_samples]
    quarters = (
        [rss[min(len(rss) - 1, int(len(rss) * q))] / mib for q in (0.25, 0.5, 0.75)] if rss else []
    )
    main_pid = server.process.pid
    cpu_split = {
        "server_main": cpu.get(main_pid, 0.0),
        "decode_workers": sum(v for p, v in cpu.items() if p not in (main_pid, me.pid)),
        "load_generator": cpu.get(me.pid, 0.0),
    }
    per_span_us = {k: v / max(result.num_spans, 1) * 1e6 for k, v in cpu_split.items()}
    total_us = sum(per_span_us.values())
    details: dict[str, Any] = {
        "exporters": exporters,
        "spans_per_request": round(result.num_spans / max(result.num_requests, 1), 1),
        "decode_workers": decode_workers if decode_workers is not None else "default (cpu count)",
        "accepted_spans": result.num_spans,
        "accepted_requests": result.num_requests,
        "throttled_429": result.num_throttled,
        "errors": result.num_errors,
        "elapsed_s": round(elapsed, 3),
        "spans_per_s": round(spans_per_s),
        "requests_per_s": round(result.num_requests / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_p50_ms": round(_percentile(result.latencies_s, 0.5) * 1000, 1),
        "latency_p99_ms": round(_percentile(result.latencies_s, 0.99) * 1000, 1),
        "peak_rss_mib": round(max(rss, default=0) / mib),
        "rss_idle_mib": round(rss_idle / mib),
        "rss_quarters_mib": [round(q) for q in quarters],
        "freshness_under_load_s": {
            "n": len(result.freshness_s),
            "median": round(statistics.median(result.freshness_s), 2)
            if result.freshness_s
            else None,
            "max": round(max(result.freshness_s), 2) if result.freshness_s else None,
        },
        "drain_s": round(drain_s, 2),
        "spans_in_lake": in_lake,
        "spans_expected": expected,
        "cpu_s": {k: round(v, 1) for k, v in cpu_split.items()}
        | {
            "other_processes": round(max(0.0, busy - sum(cpu.values())), 1),
            "wall": round(elapsed, 1),
            "cores": os.cpu_count(),
        },
        # CPU per accepted span, and the rate all cores could sustain at that cost if nothing
        # else ran: what the figure would be on an idle machine, whatever this run shared.
        "cpu_us_per_span": {k: round(v, 1) for k, v in per_span_us.items()},
        "spans_per_s_if_cores_were_ours": round((os.cpu_count() or 1) / total_us * 1e6)
        if total_us and decode_workers != 0  # in-process decoding is held to one core
        else None,
        "load_average_before": round(load_before, 2),
        "server_exit_code": exit_code,
    }
    shutil.rmtree(work, ignore_errors=True)
    label = "receiver OTLP/HTTP protobuf"
    figures = [
        Figure(
            label,
            f"accepted, {exporters} exporters × {spans_per_request} spans/request",
            spans_per_s,
            "spans/s",
            f"≥ {TARGET_SPANS_PER_S:,} spans/s",
            spans_per_s >= TARGET_SPANS_PER_S,
        ),
        Figure(label, "request latency p50", details["latency_p50_ms"], "ms"),
        Figure(label, "request latency p99", details["latency_p99_ms"], "ms"),
        Figure(label, "peak RSS (server + decoders)", details["peak_rss_mib"], "MiB"),
        Figure(
            label,
            "ack → queryable in Parquet, under load (median)",
            details["freshness_under_load_s"]["median"] or float("nan"),
            "s",
        ),
    ]
    return figures, details


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print one JSON line, write bench/results/receiver.json."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.receiver_load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--exporters", type=int, default=4)
    parser.add_argument("--spans-per-request", type=int, default=250)
    parser.add_argument("--max-spans", type=int, default=1_500_000)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--decode-workers", type=int, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only; keep results file")
    args = parser.parse_args(argv)
    figures, details = run(
        exporters=args.exporters,
        spans_per_request=args.spans_per_request,
        max_spans=args.max_spans,
        duration_s=args.duration_s,
        decode_workers=args.decode_workers,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(json.dumps(details))
    if not args.no_write:
        command = "python -m bench.receiver_load " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        write_result(NAME, figures, details, command.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
