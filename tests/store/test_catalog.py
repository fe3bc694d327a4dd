from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store.catalog import (
    open_catalog,
    query,
    quote_identifier,
    quote_literal,
    read_views_sql,
    set_prices,
)
from store.lake import Lake
from store.schema import FEEDBACK_SCHEMA, SPAN_SCHEMA
from store.writer import LakeWriter
from tests.store.conftest import T0, feedback_row, feedback_table, make_spans, span_row, spans_table

ROOT = Path(__file__).resolve().parents[2]
MS = timedelta(milliseconds=1)
TRACE_A = "a" * 32
TRACE_B = "b" * 32


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = query(conn, sql, params).to_pylist()
    return rows


def test_quoting() -> None:
    assert quote_identifier('we"ird') == '"we""ird"'
    assert quote_literal("/data/o'brien/*.parquet") == "'/data/o''brien/*.parquet'"


def test_views_sql_splits_into_statements() -> None:
    statements = read_views_sql()
    names = [re.search(r"CREATE (?:TABLE|VIEW|MACRO) (\w+)", s) for s in statements]
    assert [m.group(1) if m else s for m, s in zip(names, statements, strict=True)] == [
        "prices",
        "price_models",
        "llm_operations",
        "llm_calls_of",
        "llm_calls",
        "trace_parts_of",
        "traces_from_parts",
        "traces_between",
        "traces",
        "sessions",
    ]


def test_empty_lake_has_typed_views_that_fill_up_without_reopening(data_dir: Path) -> None:
    conn = open_catalog(data_dir / "not-yet")
    spans = query(conn, "SELECT * FROM spans")
    assert spans.num_rows == 0
    assert spans.schema.names == SPAN_SCHEMA.names
    assert [f.type for f in spans.schema] == [f.type for f in SPAN_SCHEMA]
    assert query(conn, "SELECT * FROM feedback").schema.names == FEEDBACK_SCHEMA.names
    for view in ("llm_calls", "traces", "sessions"):
        assert query(conn, f"SELECT count(*) AS n FROM {view}")["n"].to_pylist() == [0]

    Lake(data_dir / "not-yet").write("spans", make_spans(3))
    assert _rows(conn, "SELECT count(*) AS n FROM spans") == [{"n": 3}]
    Lake(data_dir / "not-yet").write("spans", make_spans(2, start=T0 + timedelta(days=3)))
    assert _rows(conn, "SELECT count(*) AS n FROM spans") == [{"n": 5}]


def test_segments_missing_a_newer_column_read_it_as_null(data_dir: Path) -> None:
    Lake(data_dir).write("spans", make_spans(1, links=[{"trace_id": "t", "span_id": "s"}]))
    part = data_dir / "spans" / "date=2025-03-01"
    pq.write_table(make_spans(2).drop_columns(["links", "scope_name"]), part / "seg-old.parquet")
    conn = open_catalog(data_dir)
    rows = _rows(
        conn, "SELECT links IS NULL AS no_links, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1"
    )
    assert rows == [{"no_links": False, "n": 1}, {"no_links": True, "n": 2}]


def test_temp_segments_are_not_read(data_dir: Path) -> None:
    Lake(data_dir).write("spans", make_spans(2))
    part = data_dir / "spans" / "date=2025-03-01"
    pq.write_table(make_spans(5), part / ".seg-00000000000000000009-abcd.parquet.tmp")
    assert _rows(open_catalog(data_dir), "SELECT count(*) AS n FROM spans") == [{"n": 2}]


def test_feedback_view(data_dir: Path) -> None:
    Lake(data_dir).write("feedback", feedback_table([feedback_row(value=-1.0, text="bad")]))
    rows = _rows(open_catalog(data_dir), "SELECT kind, value, text FROM feedback")
    assert rows == [{"kind": "thumbs", "value": -1.0, "text": "bad"}]


def _scenario() -> list[dict[str, Any]]:
    """Two traces sharing a session (one without its root), plus a tool-only trace elsewhere."""
    root = span_row(
        trace_id=TRACE_A,
        span_id="00000000000000a0",
        name="agent",
        service_name="svc-a",
        start_time=T0,
        duration_ms=1000.0,
        status_code="OK",
        session_id="s1",
    )
    child = {"trace_id": TRACE_A, "parent_span_id": "00000000000000a0", "service_name": "svc-a"}
    return [
        root,
        span_row(
            **child,
            span_id="00000000000000a1",
            operation="chat",
            request_model="gpt-x",
            response_model="gpt-x-2024",
            start_time=T0 + 100 * MS,
            duration_ms=500.0,
            ttft_ms=100.0,
            input_tokens=1000,
            cache_read_tokens=200,
            cache_write_tokens=0,
            output_tokens=5,
            user_id="u1",
        ),
        span_row(
            **child,
            span_id="00000000000000a2",
            operation="chat",
            request_model="claude",
            start_time=T0 + 600 * MS,
            duration_ms=300.0,
            ttft_ms=80.0,
            input_tokens=10,
            output_tokens=1,
            cost_usd=0.5,
        ),
        span_row(
            **child,
            span_id="00000000000000a3",
            operation="execute_tool",
            status_code="ERROR",
            start_time=T0 + 700 * MS,
            duration_ms=50.0,
            user_id="u2",
        ),
        span_row(
            **child,
            span_id="00000000000000a4",
            operation="embeddings",
            request_model="emb",
            start_time=T0 + 900 * MS,
            duration_ms=50.0,
            input_tokens=30,
        ),
        # Trace B: its root never arrived.
        span_row(
            trace_id=TRACE_B,
            span_id="00000000000000b1",
            parent_span_id="ffffffffffffffff",
            name="late-child",
            service_name="svc-b",
            start_time=T0 + 2000 * MS,
            duration_ms=250.0,
            operation="chat",
            response_model="gpt-x-2024",
            ttft_ms=50.0,
            input_tokens=100,
            cache_write_tokens=40,
            output_tokens=2,
            session_id="s1",
        ),
        span_row(
            trace_id=TRACE_B,
            span_id="00000000000000b2",
            parent_span_id="ffffffffffffffff",
            name="later",
            service_name="svc-c",
            start_time=T0 + 3000 * MS,
            duration_ms=2000.0,
            operation="text_completion",
            request_model="unknown-model",
            ttft_ms=10.0,
            input_tokens=7,
            user_id="u3",
        ),
        # Same trace id as A, other project: a separate trace.
        span_row(
            project="other",
            trace_id=TRACE_A,
            span_id="00000000000000c0",
            name="cron",
            start_time=T0,
            duration_ms=20.0,
            status_code="UNSET",
        ),
    ]


PRICES = pa.table(
    {
        "model": ["gpt-x", "gpt-x", "other"],
        # The second gpt-x price takes effect between trace A's and trace B's calls.
        "effective_from": [
            datetime(2025, 1, 1, tzinfo=UTC),
            T0 + 1000 * MS,
            datetime(2020, 1, 1, tzinfo=UTC),
        ],
        "input_usd_per_mtok": [1.0, 10.0, 99.0],
        "output_usd_per_mtok": [2.0, 20.0, 99.0],
        "cache_read_usd_per_mtok": [0.5, None, 99.0],
        "cache_write_usd_per_mtok": [None, None, 99.0],
    }
)
PRICE_MODELS = pa.table({"model": ["gpt-x-2024", "emb-unused"], "price_model": ["gpt-x", "other"]})


@pytest.fixture
def scenario_conn(data_dir: Path) -> duckdb.DuckDBPyConnection:
    rows = _scenario()
    lake = Lake(data_dir)
    lake.write("spans", spans_table(rows[:4]))  # two segments, to read across them
    lake.write("spans", spans_table(rows[4:]))
    conn = open_catalog(data_dir)
    set_prices(conn, PRICES, PRICE_MODELS)
    return conn


def test_llm_calls(scenario_conn: duckdb.DuckDBPyConnection) -> None:
    rows = _rows(
        scenario_conn,
        "SELECT span_id, model, price_model, tpot_ms, computed_cost_usd, total_cost_usd "
        "FROM llm_calls ORDER BY span_id",
    )
    expected = [
        # (1000-200)*1.0 + 200*0.5 + 5*2.0 = 910 at the first gpt-x price; tpot (500-100)/4.
        ("00000000000000a1", "gpt-x-2024", "gpt-x", 100.0, 910e-6, 910e-6),
        # carries its own cost; one output token -> no TPOT; unmapped model -> no computed cost.
        ("00000000000000a2", "claude", None, None, None, 0.5),
        ("00000000000000a4", "emb", None, None, None, None),  # no TTFT
        # (100-40)*10 + 40*10 (cache write falls back to input) + 2*20 = 1040 at the second price.
        ("00000000000000b1", "gpt-x-2024", "gpt-x", 200.0, 1040e-6, 1040e-6),
        ("00000000000000b2", "unknown-model", None, None, None, None),  # output tokens unknown
    ]
    got = [tuple(r.values()) for r in rows]
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    for g, e in zip(got, expected, strict=True):
        for value, want in zip(g[4:], e[4:], strict=True):
            assert value == (None if want is None else pytest.approx(want)), g


def test_cost_is_null_without_prices(data_dir: Path) -> None:
    Lake(data_dir).write("spans", spans_table(_scenario()))
    conn = open_catalog(data_dir)
    rows = _rows(
        conn, "SELECT span_id, total_cost_usd FROM llm_calls WHERE total_cost_usd IS NOT NULL"
    )
    assert rows == [{"span_id": "00000000000000a2", "total_cost_usd": 0.5}]


def test_set_prices_replaces_the_previous_table(scenario_conn: duckdb.DuckDBPyConnection) -> None:
    set_prices(scenario_conn, PRICES.slice(0, 1), PRICE_MODELS)
    # Only the first price is left, so it applies to B's call too: 60 + 40 + 2*2 = 104 (x1e-6).
    rows = _rows(
        scenario_conn, "SELECT total_cost_usd FROM llm_calls WHERE span_id = '00000000000000b1'"
    )
    assert rows[0]["total_cost_usd"] == pytest.approx(104e-6)
    assert _rows(scenario_conn, "SELECT count(*) AS n FROM prices") == [{"n": 1}]
    with pytest.raises(ValueError, match="missing column"):
        set_prices(scenario_conn, PRICES.drop_columns(["output_usd_per_mtok"]))


def test_traces(scenario_conn: duckdb.DuckDBPyConnection) -> None:
    rows = {
        (r.pop("project"), r.pop("trace_id")): r
        for r in _rows(scenario_conn, "SELECT * FROM traces")
    }
    assert set(rows) == {("default", TRACE_A), ("default", TRACE_B), ("other", TRACE_A)}
    a, b, c = rows["default", TRACE_A], rows["default", TRACE_B], rows["other", TRACE_A]
    assert a.pop("total_cost_usd") == pytest.approx(0.5 + 910e-6)
    assert a == {
        "name": "agent",
        "service_name": "svc-a",
        "start_time": T0,
        "end_time": T0 + 1000 * MS,
        "duration_ms": 1000.0,
        "has_root": True,
        "num_spans": 5,
        "num_llm_calls": 3,
        "input_tokens": 1040,
        "output_tokens": 6,
        "has_error": True,
        "status_code": "OK",
        "user_id": "u1",
        "session_id": "s1",
        "models": ["claude", "emb", "gpt-x-2024"],
    }
    assert b.pop("total_cost_usd") == pytest.approx(1040e-6)
    assert b == {
        "name": "late-child",
        "service_name": "svc-b",
        "start_time": T0 + 2000 * MS,
        "end_time": T0 + 5000 * MS,
        "duration_ms": 3000.0,  # no root: first start to last end
        "has_root": False,
        "num_spans": 2,
        "num_llm_calls": 2,
        "input_tokens": 107,
        "output_tokens": 2,
        "has_error": False,
        "status_code": "UNSET",
        "user_id": "u3",
        "session_id": "s1",
        "models": ["gpt-x-2024", "unknown-model"],
    }
    assert (c["name"], c["num_spans"], c["num_llm_calls"], c["input_tokens"]) == ("cron", 1, 0, 0)
    assert (c["total_cost_usd"], c["models"], c["session_id"]) == (0.0, [], None)


def test_sessions(scenario_conn: duckdb.DuckDBPyConnection) -> None:
    (row,) = _rows(scenario_conn, "SELECT * FROM sessions")
    assert row.pop("total_cost_usd") == pytest.approx(0.5 + 910e-6 + 1040e-6)
    assert row == {
        "project": "default",
        "session_id": "s1",
        "start_time": T0,
        "end_time": T0 + 5000 * MS,
        "duration_ms": 5000.0,
        "num_traces": 2,
        "num_users": 2,
        "user_id": "u1",
        "num_llm_calls": 5,
        "input_tokens": 1147,
        "output_tokens": 8,
        "has_error": True,
    }


class _FlakyConnection:
    """Fails like a scan whose segment was compacted away, a set number of times."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, failures: int) -> None:
        self.conn, self.failures = conn, failures

    def execute(self, text: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        if self.failures:
            self.failures -= 1
            raise duckdb.IOException('No files found that match the pattern "seg-1.parquet"')
        return self.conn.execute(text, params)


def test_query_retries_when_a_segment_vanishes(data_dir: Path) -> None:
    conn = open_catalog(data_dir)
    flaky = _FlakyConnection(conn, failures=2)
    assert query(flaky, "SELECT 41 + ? AS n", [1]).to_pylist() == [{"n": 42}]  # type: ignore[arg-type]
    flaky = _FlakyConnection(conn, failures=2)
    with pytest.raises(duckdb.IOException):
        query(flaky, "SELECT 1", retries=1)  # type: ignore[arg-type]


def _spawn_reader(data_dir: Path, stop: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.workers", "reader", str(data_dir), str(stop)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_counts(data_dir: Path, stop: Path, write: Any) -> list[int]:
    reader = _spawn_reader(data_dir, stop)
    assert reader.stdout is not None
    try:
        first = reader.stdout.readline()  # the reader is up before the writes start
        assert first, reader.communicate()[1]
        write()
        stop.touch()
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    return [int(first), *map(int, out.split())]


def test_a_reader_sees_a_growing_count_while_a_writer_writes(data_dir: Path) -> None:
    num_batches, batch_rows = 30, 40

    def write() -> None:
        with LakeWriter(data_dir) as writer:
            for i in range(num_batches):
                writer.append("spans", make_spans(batch_rows, start=T0 + timedelta(hours=i)))
                writer.flush()
                time.sleep(0.01)

    counts = _read_counts(data_dir, data_dir / "stop", write)
    assert counts[0] == 0 and counts[-1] == num_batches * batch_rows
    assert all(a <= b for a, b in itertools.pairwise(counts)), counts
    assert all(c % batch_rows == 0 for c in counts)  # segments appear whole
    assert len(set(counts)) > 2


def test_a_reader_never_fails_while_segments_are_compacted_away(data_dir: Path) -> None:
    lake = Lake(data_dir)
    lake.write("spans", make_spans(10))

    def write() -> None:
        for i in range(25):
            lake.write("spans", make_spans(10, start=T0 + timedelta(minutes=i + 1)))
            lake.write("spans", make_spans(10, start=T0 + timedelta(minutes=i + 1)))
            lake.compact("spans", min_segments=2)
            time.sleep(0.01)

    counts = _read_counts(data_dir, data_dir / "stop", write)
    assert counts[-1] == 510


def test_spans_between_reads_the_window_of_the_view(data_dir: Path) -> None:
    """Same rows as the view filtered on start_time; typed when empty; window edges half-open."""
    conn = open_catalog(data_dir / "lake")
    empty = query(conn, "SELECT * FROM spans_between(?, ?)", [T0, T0 + timedelta(days=9)])
    assert empty.num_rows == 0 and empty.schema.names == SPAN_SCHEMA.names
    lake = Lake(data_dir / "lake")
    for day in range(4):  # 5 spans a day, 6 h apart: they cross the date partitions
        lake.write(
            "spans", make_spans(5, start=T0 + timedelta(days=day, hours=1), step=timedelta(hours=6))
        )
    windows = [
        (T0, T0 + timedelta(days=9)),
        (T0 + timedelta(days=1, hours=3), T0 + timedelta(days=2, hours=2)),
        (T0 + timedelta(days=2, hours=1), T0 + timedelta(days=2, hours=1)),  # empty
        (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)),
    ]
    for lo, hi in windows:
        between = _rows(
            conn, f"SELECT span_id FROM spans_between(TIMESTAMPTZ '{lo}', TIMESTAMPTZ '{hi}')"
        )
        filtered = _rows(
            conn,
            f"SELECT span_id FROM spans WHERE start_time >= TIMESTAMPTZ '{lo}'"
            f" AND start_time < TIMESTAMPTZ '{hi}'",
        )
        assert sorted(r["span_id"] for r in between) == sorted(r["span_id"] for r in filtered)
    assert len(_rows(conn, "SELECT * FROM spans")) == 20
