"""The same OTLP/HTTP load against ``flywheel serve`` and Arize Phoenix, side by side.

Phoenix (``arize-phoenix`` from PyPI) runs from its own throwaway venv under ``bench/out/``
(created on first use; never a project dependency), with its default SQLite store in a temporary
working directory, on a free loopback port. Both servers get identical requests (built by
:func:`bench.receiver_load.build_requests`) from the same number of keep-alive exporter threads
for the same time; a 429/503 is retried after a short pause, as an OTel exporter would.

Measured: accepted spans/s and p50/p99 request latency for each, and the ratio. The two
acknowledge different things: Flywheel answers 200 once the batch is fsynced in its write-ahead
log; Phoenix answers once it has queued the spans in memory for a later database insert.

    python -m bench.phoenix_compare [--duration-s 20] [--exporters 4]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.receiver_load import PROTOBUF, build_requests, start_server
from bench.report import OUT_DIR, Figure, write_result

NAME = "phoenix"
PHOENIX_VENV = OUT_DIR / "phoenix-venv"
PHOENIX_PACKAGE = "arize-phoenix"
RETRY_STATUSES = (429, 503)


@dataclass
class Load:
    """What the exporters saw against one server."""

    latencies_s: list[float] = field(default_factory=list)
    num_spans: int = 0
    num_errors: int = 0
    seconds: float = 0.0

    @property
    def spans_per_s(self) -> float:
        """Accepted spans per second of wall time."""
        return self.num_spans / self.seconds if self.seconds else 0.0

    def latency_ms(self, q: float) -> float:
        """A percentile (nearest rank) of the accepted requests' latency."""
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def drive(port: int, requests: list[tuple[bytes, int]], exporters: int, duration_s: float) -> Load:
    """Send ``requests`` from ``exporters`` threads until done or ``duration_s`` passes."""
    load = Load()
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    deadline = time.monotonic() + duration_s

    def exporter() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
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
                if response.status not in RETRY_STATUSES:
                    break
                time.sleep(0.05)
            with lock:
                if response.status == 200:
                    load.latencies_s.append(time.monotonic() - started)
                    load.num_spans += num_spans
                else:
                    load.num_errors += 1
        connection.close()

    began = time.monotonic()
    threads = [threading.Thread(target=exporter) for _ in range(exporters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.seconds = time.monotonic() - began
    return load


def phoenix_python(log: Callable[[str], None]) -> Path:
    """The Python of the throwaway Phoenix venv, created on first use."""
    python = PHOENIX_VENV / "bin" / "python"
    if not python.exists():
        log(f"phoenix: creating {PHOENIX_VENV} and installing {PHOENIX_PACKAGE} (once) …")
        subprocess.run([sys.executable, "-m", "venv", str(PHOENIX_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PHOENIX_PACKAGE], check=True
        )
    return python


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_phoenix(python: Path, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``phoenix serve`` on free loopback ports with a fresh SQLite store; waits until it serves."""
    port = _free_port()
    env = dict(
        os.environ,
        PHOENIX_WORKING_DIR=str(work),
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(_free_port()),
        PHOENIX_TELEMETRY_ENABLED="false",
    )
    log_file = open(work / "phoenix.log", "wb")  # noqa: SIM115 - the server outlives this call
    process = subprocess.Popen(
        [str(python), "-m", "phoenix.server.main", "serve"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"phoenix did not start: {(work / 'phoenix.log').read_text()[-2000:]}")


def run(
    *,
    exporters: int = 4,
    spans_per_request: int = 250,
    max_spans: int = 400_000,
    duration_s: float = 20.0,
    log: Callable[[str], None] = print,
) -> tuple[list[Figure], dict[str, Any]]:
    """Drive both servers with the same requests; return figures and details."""
    python = phoenix_python(log)
    requests = build_requests(max_spans, spans_per_request)
    work = Path(tempfile.mkdtemp(prefix="flywheel-phoenix-bench-"))
    loads: dict[str, Load] = {}
    try:
        server = start_server(work / "lake", {}, work / "flywheel.log")
        try:
            log(f"phoenix: flywheel serve, {exporters} exporters, ≤ {duration_s:.0f} s …")
            loads["flywheel"] = drive(server.port, requests, exporters, duration_s)
        finally:
            server.stop()
        (work / "phoenix").mkdir()
        process, port = start_phoenix(python, work / "phoenix")
        try:
            log(f"phoenix: phoenix serve, {exporters} exporters, ≤ {duration_s:.0f} s …")
            loads["phoenix"] = drive(port, requests, exporters, duration_s)
        finally:
            process.terminate()
            process.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = loads["flywheel"].spans_per_s / max(loads["phoenix"].spans_per_s, 1e-9)
    figures = [
        Figure(
            "receiver vs Phoenix",
            f"{name} accepted, {exporters} exporters × {spans_per_request} spans/request",
            load.spans_per_s,
            "spans/s",
            note=f"p50 {load.latency_ms(0.5):.0f} ms, p99 {load.latency_ms(0.99):.0f} ms",
        )
        for name, load in loads.items()
    ]
    figures.append(Figure("receiver vs Phoenix", "Flywheel ÷ Phoenix", ratio, "×"))
    details = {
        name: {
            "spans": load.num_spans,
            "seconds": load.seconds,
            "errors": load.num_errors,
            "p50_ms": load.latency_ms(0.5),
            "p99_ms": load.latency_ms(0.99),
        }
        for name, load in loads.items()
    }
    details["phoenix_version"] = subprocess.run(
        [str(python), "-c", "import phoenix; print(phoenix.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return figures, details


def main(argv: list[str] | None = None) -> int:
    """Run once from the command line and write ``bench/results/phoenix.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.phoenix_compare")
    parser.add_argument("--exporters", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=20.0)
    args = parser.parse_args(argv)
    figures, details = run(exporters=args.exporters, duration_s=args.duration_s)
    write_result(NAME, figures, details)
    for figure in figures:
        print(f"{figure.metric}: {figure.value:,.1f} {figure.unit} {figure.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
