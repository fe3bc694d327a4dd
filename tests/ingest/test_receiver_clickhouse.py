"""The receiver writing to ClickHouse (``--store clickhouse://``): the lake's rows, once, even after kill -9.

The servers run as subprocesses (``start_receiver(..., chdb=(path, database))``) with ClickHouse
in-process (chdb) at a path of their own; chdb allows one process on a path, so the test reads
it in a child process once the server is gone (:func:`_read_clickhouse`). One test runs the
Ingestor in this process, on this process's chdb session, to break the server.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.receiver_config import Limits
from ingest.receiver_core import Ingestor
from store.clickhouse.catalog import ChdbEngine
from store.clickhouse.writer import ClickHouseWriter, log_dir
from store.lake import GUARDRAILS, SPANS, Lake, TableSpec, conform
from store.wal import list_wal_files
from tests.clickhouse_http import PASSWORD, ClickHouseHTTP, clickhouse_http_fixture
from tests.clickhouse_session import clickhouse_fixture, database_fixture
from tests.ingest.receiver_process import (
    ROOT,
    Receiver,
    batch_keys,
    make_request,
    start_receiver,
    wait_for,
)
from tests.store.conftest import as_clickhouse_holds

__all__ = ["clickhouse_fixture", "clickhouse_http_fixture", "database_fixture"]

PROTOBUF = {"content-type": "application/x-protobuf"}
GOLDEN = ROOT / "tests" / "golden"
DATABASE = "flywheel"

_READ = """
import sys
import pyarrow as pa
from chdb import session
table = session.Session(sys.argv[1]).query(sys.argv[2], "ArrowTable")
with pa.OSFile(sys.argv[3], "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
    out.write_table(table)
"""


def _read_clickhouse(path: Path, spec: TableSpec) -> pa.Table:
    """A table of the chdb store at ``path`` (no server may hold it), typed as the lake's."""
    out = path.parent / f"{spec.name}-{time.time_ns()}.arrow"
    keys = ", ".join(spec.key_columns)
    sql = f"SELECT * FROM {DATABASE}.{spec.name} ORDER BY {keys}"
    subprocess.run([sys.executable, "-c", _READ, str(path), sql, str(out)], check=True, cwd=ROOT)
    return conform(spec, pa.ipc.open_file(str(out)).read_all())


def _read_lake(data_dir: Path, spec: TableSpec) -> pa.Table:
    segments = Lake(data_dir).list_segments(spec.name)
    rows = pa.concat_tables([conform(spec, pq.read_table(p)) for p in segments])
    return rows.sort_by([(c, "ascending") for c in spec.key_columns])


def _post(receiver: Receiver, body: bytes) -> None:
    response = httpx.post(f"{receiver.url}/v1/traces", content=body, headers=PROTOBUF, timeout=30)
    assert response.status_code == 200, response.text


def _flushed(receiver: Receiver) -> bool:
    health = httpx.get(f"{receiver.url}/healthz", timeout=10).json()
    return bool(health["backlog_rows"] == 0 and health["pending_rows"] == 0)


@dataclass
class _Store:
    """A ClickHouse receiver's chdb path and log folder."""

    chdb: Path
    data_dir: Path

    def start(self, **limits: float) -> Receiver:
        return start_receiver(self.data_dir, chdb=(self.chdb, DATABASE), decode_workers=0, **limits)

    def logs(self) -> list[Path]:
        return list_wal_files(log_dir(self.data_dir, DATABASE) / "wal")


@pytest.fixture
def store(tmp_path: Path) -> _Store:
    return _Store(tmp_path / "chdb", tmp_path / "data")


def test_spans_land_in_clickhouse_with_the_values_the_lake_gets(
    tmp_path: Path, store: _Store
) -> None:
    bodies = [p.read_bytes() for p in sorted(GOLDEN.glob("*.in.pb"))]
    bodies.append(make_request(7, 20).SerializeToString())
    lake = start_receiver(tmp_path / "lake", decode_workers=0)
    clickhouse = store.start()
    try:
        for body in bodies:
            _post(lake, body)
            _post(clickhouse, body)
    finally:
        assert lake.stop() == 0, lake.log()
        assert clickhouse.stop() == 0, clickhouse.log()
    assert store.logs() == [], "a clean stop leaves no log behind"
    for spec in (SPANS, GUARDRAILS):
        expected = _read_lake(tmp_path / "lake", spec)
        assert expected.num_rows, f"the golden inputs give no {spec.name}"
        stored = _read_clickhouse(store.chdb, spec)
        assert stored.to_pylist() == as_clickhouse_holds(expected), spec.name


def test_a_resent_request_adds_nothing(store: _Store) -> None:
    receiver = store.start(flush_max_age_s=0.3)
    try:
        _post(receiver, make_request(1, 30).SerializeToString())
        assert wait_for(lambda: _flushed(receiver))
        _post(receiver, make_request(1, 30).SerializeToString())  # its answer was lost
        _post(receiver, make_request(2, 5).SerializeToString())
    finally:
        assert receiver.stop() == 0, receiver.log()
    spans = _read_clickhouse(store.chdb, SPANS)
    keys = list(zip(spans["trace_id"].to_pylist(), spans["span_id"].to_pylist(), strict=True))
    assert sorted(keys) == sorted(batch_keys(1, 30) | batch_keys(2, 5))


def test_rows_only_in_the_log_at_kill_9_are_delivered_after_a_restart(store: _Store) -> None:
    receiver = store.start(flush_max_age_s=600)  # nothing reaches ClickHouse before the kill
    for batch in range(5):
        _post(receiver, make_request(batch, 10).SerializeToString())
    receiver.kill()
    assert any(p.stat().st_size for p in store.logs()), "the acknowledged rows are not logged"
    assert _read_clickhouse(store.chdb, SPANS).num_rows == 0

    restarted = store.start(flush_max_age_s=0.3)  # opening replays the dead server's log
    try:
        assert store.logs() == []
        _post(restarted, make_request(4, 10).SerializeToString())  # re-sent after the crash
    finally:
        assert restarted.stop() == 0, restarted.log()
    assert "replayed 1 log(s) into ClickHouse database flywheel: 50 rows written" in restarted.log()
    spans = _read_clickhouse(store.chdb, SPANS)
    keys = list(zip(spans["trace_id"].to_pylist(), spans["span_id"].to_pylist(), strict=True))
    assert sorted(keys) == sorted(set().union(*(batch_keys(b, 10) for b in range(5))))
    assert store.logs() == []


def _flush_errors(ingestor: Ingestor) -> float:
    return ingestor.metrics.registry.get_sample_value("flywheel_lake_flush_errors_total") or 0.0


@dataclass
class _Outage:
    """A chdb engine whose inserts fail while ``down`` (the server is unreachable)."""

    engine: ChdbEngine
    down: bool = True

    def query(self, sql: str, params: Mapping[str, str]) -> pa.Table:
        return self.engine.query(sql, params)

    def insert(self, table: str, rows: pa.Table) -> None:
        if self.down:
            raise ConnectionRefusedError("ClickHouse is down")
        self.engine.insert(table, rows)


def test_rows_wait_in_the_log_while_clickhouse_is_down_then_arrive(
    tmp_path: Path, clickhouse: object, database: str
) -> None:
    outage = _Outage(ChdbEngine(clickhouse, database))
    limits = Limits(decode_workers=0, flush_max_age_s=0.2, max_backlog_rows=40)
    ingestor = Ingestor(
        tmp_path,
        limits=limits,
        open_writer=functools.partial(ClickHouseWriter, engine=outage, database=database),
    )
    try:
        outcome = ingestor.decode(
            make_request(3, 40).SerializeToString(), "", "protobuf", "default", "t"
        ).result(30)
        ingestor.commit(outcome.tables()).result(10)  # acknowledged: in the log
        assert wait_for(lambda: _flush_errors(ingestor) >= 2)
        assert ingestor.backlog().num_rows == 40 and ingestor.healthy()
        assert ingestor.overload_reason() is not None  # senders get 429 / UNAVAILABLE
        assert list_wal_files(log_dir(tmp_path, database) / "wal")
        outage.down = False
        assert wait_for(lambda: ingestor.backlog().num_rows == 0, timeout_s=30)
    finally:
        ingestor.close()
    stored = outage.engine.query("SELECT count() AS n FROM spans", {})
    assert stored["n"].to_pylist() == [40]
    assert list_wal_files(log_dir(tmp_path, database) / "wal") == []


def test_flywheel_serve_store_writes_through_clickhouse_connect(
    tmp_path: Path, clickhouse: object, database: str, clickhouse_http: ClickHouseHTTP
) -> None:
    """The command as a team runs it, against ClickHouse's HTTP interface (emulated on chdb)."""
    url = f"clickhouse://default:{quote(PASSWORD, safe='')}@127.0.0.1:{clickhouse_http.port}"
    env = dict(os.environ, FLYWHEEL_STORE=f"{url}/{database}", FLYWHEEL_DECODE_WORKERS="0")
    command = ["-m", "app.cli", "serve", "--port", "0", "--grpc-port", "0"]
    server = subprocess.Popen(
        [sys.executable, *command, "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        assert f"127.0.0.1:{clickhouse_http.port}/{database}" in ready and PASSWORD not in ready
        port = re.search(r"OTLP/HTTP on http://127\.0\.0\.1:(\d+)", ready)
        assert port is not None, ready
        receiver = Receiver(tmp_path, server, int(port.group(1)), 0, tmp_path)
        body = next(GOLDEN.glob("openinference.in.pb")).read_bytes()
        _post(receiver, body)
        _post(receiver, body)
    finally:
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=60)
    assert server.returncode == 0, errors
    engine = ChdbEngine(clickhouse, database)
    stored = conform(SPANS, engine.query("SELECT * FROM spans ORDER BY trace_id, span_id", {}))
    assert stored.num_rows and stored.num_rows == len(set(stored["span_id"].to_pylist()))
    assert list_wal_files(log_dir(tmp_path, database) / "wal") == []


def test_serve_help_documents_the_store() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "--store URL" in result.stdout and "clickhouse://" in result.stdout


def test_serve_refuses_an_unusable_store_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"FLYWHEEL_STORE": "postgres://u:secret@h/db", "PATH": "", "HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 2
    assert "FLYWHEEL_STORE" in result.stderr and "secret" not in result.stderr
