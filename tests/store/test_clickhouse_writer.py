"""ClickHouseWriter on chdb: the WAL as for the lake, one INSERT per table per flush, nothing twice."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from store.clickhouse.catalog import ChdbEngine
from store.clickhouse.writer import CHECK_CHUNK_ROWS, ClickHouseWriter, log_dir
from store.lake import FEEDBACK, SPANS, TableSpec, conform
from store.wal import WalFile, list_wal_files
from store.writer import LakeWriter
from tests.clickhouse_session import clickhouse_fixture, database_fixture
from tests.store.conftest import (
    T0,
    as_clickhouse_holds,
    feedback_row,
    feedback_table,
    make_spans,
    span_row,
    spans_table,
)

__all__ = ["clickhouse_fixture", "database_fixture"]


class ServerDown(ConnectionError):
    """What the engine raises while the test says the server is down."""


@dataclass
class FlakyEngine:
    """A chdb engine whose inserts fail on demand (before, or after, they commit) and are counted."""

    engine: ChdbEngine
    down: bool = False
    fail_after_commit: bool = False
    inserts: list[tuple[str, int]] = field(default_factory=list)

    def query(self, sql: str, params: Mapping[str, str]) -> pa.Table:
        return self.engine.query(sql, params)

    def insert(self, table: str, rows: pa.Table) -> None:
        if self.down:
            raise ServerDown("connection refused")
        self.engine.insert(table, rows)
        self.inserts.append((table, rows.num_rows))
        if self.fail_after_commit:
            raise TimeoutError("read timed out (the server committed the insert)")


@pytest.fixture
def engine(clickhouse: object, database: str) -> FlakyEngine:
    return FlakyEngine(ChdbEngine(clickhouse, database))


@pytest.fixture
def writer(tmp_path: Path, engine: FlakyEngine, database: str) -> Iterator[ClickHouseWriter]:
    with ClickHouseWriter(tmp_path, engine=engine, database=database) as opened:
        yield opened


def _stored(engine: FlakyEngine, spec: TableSpec) -> pa.Table:
    """Every row of a table as the lake's schema types them, in key order."""
    keys = ", ".join(spec.key_columns)
    rows = engine.query(f"SELECT * FROM {spec.name} ORDER BY {keys}", {})
    return conform(spec, rows)


def _wal_files(tmp_path: Path, database: str) -> list[Path]:
    return list_wal_files(log_dir(tmp_path, database) / "wal")


def test_a_flush_inserts_each_table_once_with_the_rows_as_appended(
    tmp_path: Path, writer: ClickHouseWriter, engine: FlakyEngine, database: str
) -> None:
    spans = spans_table(
        [
            span_row(
                input_tokens=12,
                attributes={"gen_ai.request.model": "m", "k": "v"},
                finish_reasons=["stop"],
                events=[{"time": T0, "name": "first_token", "attributes": {"a": "1"}}],
            ),
            *(span_row(start_time=T0 + timedelta(days=d)) for d in range(3)),
        ]
    )
    feedback = feedback_table([feedback_row(), feedback_row(kind="rating", value=4.0)])
    writer.append("spans", spans.slice(0, 2))
    writer.append_many([("spans", spans.slice(2)), ("feedback", feedback)])
    assert len(_wal_files(tmp_path, database)) == 1
    assert engine.inserts == []  # acknowledged means logged; ClickHouse comes with the flush

    result = writer.flush()

    assert sorted(engine.inserts) == [("feedback", 2), ("spans", 4)]
    assert result.num_written == 6 and result.num_wal_files_deleted == 1
    assert _wal_files(tmp_path, database) == []
    assert _stored(engine, SPANS).to_pylist() == as_clickhouse_holds(spans.sort_by("trace_id"))
    assert _stored(engine, FEEDBACK).to_pylist() == as_clickhouse_holds(
        feedback.sort_by("feedback_id")
    )


def test_rows_sent_again_are_not_stored_twice(
    writer: ClickHouseWriter, engine: FlakyEngine
) -> None:
    first = make_spans(5)
    writer.append("spans", first)
    writer.flush()
    new = make_spans(2)
    # Re-sent rows among new ones, and a row twice within one batch.
    writer.append("spans", pa.concat_tables([first.slice(1, 3), new, new.slice(0, 1)]))
    result = writer.flush()
    assert result.num_written == 2 and result.num_duplicates == 4
    assert _stored(engine, SPANS).num_rows == 7


def test_the_duplicate_probe_covers_batches_larger_than_one_query(
    writer: ClickHouseWriter, engine: FlakyEngine
) -> None:
    num = CHECK_CHUNK_ROWS * 2 + 5
    spans = make_spans(num, step=timedelta(milliseconds=1))
    writer.append("spans", spans)
    writer.flush()
    writer.append("spans", spans)
    assert writer.flush().num_duplicates == num
    assert _stored(engine, SPANS).num_rows == num


def test_a_failed_insert_keeps_the_rows_logged_and_a_later_flush_delivers_them(
    tmp_path: Path, writer: ClickHouseWriter, engine: FlakyEngine, database: str
) -> None:
    before = make_spans(3)
    writer.append("spans", before)
    engine.down = True
    with pytest.raises(ServerDown):
        writer.flush()
    assert _wal_files(tmp_path, database), "the log went before ClickHouse had the rows"
    assert writer.backlog().num_rows == 3  # what backpressure counts
    after = make_spans(2)
    writer.append("spans", after)
    with pytest.raises(ServerDown):
        writer.flush()

    engine.down = False
    result = writer.flush()

    assert engine.inserts == [("spans", 5)]  # old and new rows in one insert
    assert result.num_written == 5 and writer.backlog().num_rows == 0
    assert _wal_files(tmp_path, database) == []
    assert _stored(engine, SPANS).num_rows == 5


def test_an_insert_that_committed_before_it_failed_is_not_doubled_by_the_retry(
    writer: ClickHouseWriter, engine: FlakyEngine
) -> None:
    writer.append("spans", make_spans(4))
    engine.fail_after_commit = True
    with pytest.raises(TimeoutError):
        writer.flush()
    engine.fail_after_commit = False
    writer.append("spans", make_spans(1))
    assert writer.flush().num_written == 1
    assert _stored(engine, SPANS).num_rows == 5


def test_opening_replays_the_logs_of_dead_writers_once(
    tmp_path: Path, engine: FlakyEngine, database: str
) -> None:
    wal_dir = log_dir(tmp_path, database) / "wal"
    spans = make_spans(4)
    crashed = WalFile.create(wal_dir)  # a writer killed before its flush
    crashed.append_many([("spans", spans), ("feedback", feedback_table([feedback_row()]))])
    crashed.close()
    with ClickHouseWriter(tmp_path, engine=engine, database=database) as writer:
        assert writer.recovered.num_written == 5
    # A writer killed after ClickHouse acknowledged its insert, before it deleted the log.
    again = WalFile.create(wal_dir)
    again.append("spans", spans)
    again.close()
    with ClickHouseWriter(tmp_path, engine=engine, database=database) as writer:
        assert writer.recovered.num_written == 0
        assert writer.recovered.num_duplicates == 4
    assert list_wal_files(wal_dir) == []
    assert _stored(engine, SPANS).num_rows == 4
    assert _stored(engine, FEEDBACK).num_rows == 1


def test_a_replay_that_cannot_reach_the_server_keeps_the_log(
    tmp_path: Path, engine: FlakyEngine, database: str
) -> None:
    wal = WalFile.create(log_dir(tmp_path, database) / "wal")
    wal.append("spans", make_spans(2))
    wal.close()
    engine.down = True
    with pytest.raises(ServerDown):
        ClickHouseWriter(tmp_path, engine=engine, database=database)
    assert _wal_files(tmp_path, database) == [wal.path]
    engine.down = False
    with ClickHouseWriter(tmp_path, engine=engine, database=database) as writer:
        assert writer.recovered.num_written == 2


def test_a_parquet_writer_on_the_same_folder_leaves_the_clickhouse_log_alone(
    tmp_path: Path, engine: FlakyEngine, database: str
) -> None:
    wal = WalFile.create(log_dir(tmp_path, database) / "wal")
    wal.append("spans", make_spans(2))
    wal.close()
    with LakeWriter(tmp_path) as lake_writer:
        assert lake_writer.recovered.num_wal_files_deleted == 0
    assert _wal_files(tmp_path, database) == [wal.path]
