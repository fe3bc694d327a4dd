from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.catalog import open_catalog, query
from store.lake import Lake
from store.wal import WalFile, encode_frame, list_wal_files
from store.writer import LakeWriter
from tests.store.conftest import feedback_row, feedback_table, make_spans
from tests.store.workers import SPANS_PER_BATCH

ROOT = Path(__file__).resolve().parents[2]


def _lake_rows(data_dir: Path, table: str = "spans") -> int:
    return sum(pq.read_metadata(p).num_rows for p in Lake(data_dir).list_segments(table))


def test_append_is_in_the_wal_before_the_lake_and_flush_moves_it(data_dir: Path) -> None:
    with LakeWriter(data_dir) as writer:
        writer.append("spans", make_spans(7))
        writer.append("feedback", feedback_table([feedback_row(), feedback_row()]))
        (wal,) = list_wal_files(data_dir / "wal")
        assert _lake_rows(data_dir) == 0
        backlog = writer.backlog()
        assert backlog.num_rows == 9 and backlog.num_bytes > 0

        result = writer.flush()

        assert result.results["spans"].num_written == 7
        assert result.results["feedback"].num_written == 2
        assert result.num_wal_files_deleted == 1 and not wal.exists()
        assert writer.backlog().num_rows == 0
        assert _lake_rows(data_dir) == 7 and _lake_rows(data_dir, "feedback") == 2
        writer.append("spans", make_spans(1))
    # close() flushed and left no log behind.
    assert _lake_rows(data_dir) == 8
    assert list_wal_files(data_dir / "wal") == []


def test_flush_happens_when_the_buffer_is_full(data_dir: Path) -> None:
    with LakeWriter(data_dir, max_buffer_rows=10) as writer:
        writer.append("spans", make_spans(6))
        assert _lake_rows(data_dir) == 0
        writer.append("spans", make_spans(6))
        assert _lake_rows(data_dir) == 12
        assert writer.backlog().num_rows == 0


def test_the_append_that_fills_the_buffer_is_written_to_the_lake_without_a_log_record(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[int] = []
    real_append = WalFile.append_many

    def counting_append(wal: WalFile, records: list[tuple[str, pa.Table]]) -> None:
        logged.extend(t.num_rows for _, t in records)
        real_append(wal, records)

    monkeypatch.setattr(WalFile, "append_many", counting_append)
    with LakeWriter(data_dir, max_buffer_rows=10) as writer:
        writer.append("spans", make_spans(6))
        writer.append("spans", make_spans(6))  # fills the buffer
        assert logged == [6]
        assert _lake_rows(data_dir) == 12 and writer.backlog().num_rows == 0
        assert list_wal_files(data_dir / "wal") == []
        writer.append("spans", make_spans(12))  # alone past the bound: straight to the lake
        assert logged == [6] and _lake_rows(data_dir) == 24


def test_a_failed_lake_write_keeps_the_logged_rows_and_not_the_unlogged(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LakeWriter(data_dir, max_buffer_rows=10) as writer:
        first, second = make_spans(6), make_spans(6)
        writer.append("spans", first)

        def full_disk(*args: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(Lake, "write", full_disk)
        with pytest.raises(OSError, match="disk full"):
            writer.append("spans", second)  # not acknowledged
        monkeypatch.undo()
        assert writer.backlog().num_rows == 6  # the logged rows wait for the next flush
        assert len(list_wal_files(data_dir / "wal")) == 1
        writer.flush()
        assert _lake_rows(data_dir) == 6
        writer.append("spans", second)  # the caller sends it again
    assert _lake_rows(data_dir) == 12


def test_maybe_flush_waits_for_max_age(data_dir: Path) -> None:
    with LakeWriter(data_dir, max_age_s=0.2) as writer:
        assert writer.maybe_flush() is None  # nothing buffered
        writer.append("spans", make_spans(3))
        assert writer.maybe_flush() is None
        time.sleep(0.25)
        assert writer.backlog().oldest_age_s >= 0.2
        result = writer.maybe_flush()
        assert result is not None and result.num_written == 3


def test_bad_rows_are_refused_before_the_wal(data_dir: Path) -> None:
    bad = make_spans(2).drop_columns(["trace_id"])
    with LakeWriter(data_dir) as writer:
        with pytest.raises(ValueError, match=r"spans\.trace_id"):
            writer.append("spans", bad)
        assert list_wal_files(data_dir / "wal") == []
        assert writer.backlog().num_rows == 0


def test_open_replays_logs_left_by_dead_writers(data_dir: Path) -> None:
    wal_dir = data_dir / "wal"
    spans, feedback = make_spans(4), feedback_table([feedback_row()])
    crashed = WalFile.create(wal_dir)
    crashed.append_many([("spans", spans), ("feedback", feedback)])
    crashed.close()
    # Its last frame was torn by the kill.
    with open(crashed.path, "ab") as handle:
        handle.write(encode_frame("spans", make_spans(3))[:-5])
    # Another log holds rows the lake already has (its writer died after the flush).
    Lake(data_dir).write("spans", spans)
    again = WalFile.create(wal_dir)
    again.append("spans", spans)
    again.close()

    with LakeWriter(data_dir) as writer:
        recovered = writer.recovered
    assert recovered.num_wal_files_deleted == 2
    assert recovered.results["spans"].num_written == 0
    assert recovered.results["spans"].num_duplicates == 8
    assert recovered.results["feedback"].num_written == 1
    assert list_wal_files(wal_dir) == []
    assert _lake_rows(data_dir) == 4


def test_a_live_writers_log_is_left_alone(data_dir: Path) -> None:
    with LakeWriter(data_dir) as live:
        live.append("spans", make_spans(5))
        with LakeWriter(data_dir) as other:
            assert other.recovered.num_wal_files_deleted == 0
        assert len(list_wal_files(data_dir / "wal")) == 1
        assert _lake_rows(data_dir) == 0
    assert _lake_rows(data_dir) == 5


def test_a_log_for_an_unknown_table_is_kept(data_dir: Path) -> None:
    wal = WalFile.create(data_dir / "wal")
    wal.append_many([("no_such_table", pa.table({"x": [1]})), ("spans", make_spans(2))])
    wal.close()
    with LakeWriter(data_dir) as writer:
        assert writer.recovered.results["spans"].num_written == 2
    assert list_wal_files(data_dir / "wal") == [wal.path]


def test_concurrent_appends_from_threads_all_land_once(data_dir: Path) -> None:
    tables = [make_spans(20) for _ in range(16)]
    with LakeWriter(data_dir, max_buffer_rows=70) as writer:
        threads = [threading.Thread(target=writer.append, args=("spans", t)) for t in tables]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    conn = open_catalog(data_dir)
    counts = query(conn, "SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
    assert counts.to_pylist() == [{"n": 320, "d": 320}]


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.workers", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kill_after", [3, 17, 40])
def test_sigkilled_writer_loses_no_acknowledged_batch(data_dir: Path, kill_after: int) -> None:
    child = _spawn("writer", str(data_dir))
    assert child.stdout is not None
    acked: list[int] = []
    try:
        while len(acked) < kill_after:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "writer died"
            acked.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        acked.extend(int(line) for line in child.stdout.read().split())
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        child.stdout.close()
        if child.stderr is not None:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    with LakeWriter(data_dir):
        pass

    for segment in Lake(data_dir).list_segments("spans"):
        pq.read_table(segment)  # every visible segment is whole
    conn = open_catalog(data_dir)
    per_batch = query(
        conn,
        "SELECT trace_id, count(*) AS n, count(DISTINCT span_id) AS d FROM spans GROUP BY trace_id",
    ).to_pylist()
    found = {int(r["trace_id"], 16): (r["n"], r["d"]) for r in per_batch}
    assert set(acked) <= set(found), sorted(set(acked) - set(found))
    # The batch in flight at the kill may or may not have made it, but never twice or in part.
    assert set(found) <= set(range(max(acked) + 2))
    assert all(v == (SPANS_PER_BATCH, SPANS_PER_BATCH) for v in found.values())
    assert list_wal_files(data_dir / "wal") == []
