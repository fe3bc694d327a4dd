from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import lake as lake_module
from store.lake import FEEDBACK, KEY_INDEX_PARTITIONS, SPANS, Lake, conform
from store.schema import FEEDBACK_SCHEMA, SPAN_SCHEMA
from tests.store.conftest import (
    T0,
    feedback_row,
    feedback_table,
    make_spans,
    span_row,
    spans_table,
)


def _stored(lake: Lake, table: str = "spans") -> pa.Table:
    segments = lake.list_segments(table)
    if not segments:
        return lake.spec(table).schema.empty_table()
    return pa.concat_tables(pq.read_table(p) for p in segments)


def _keys(table: pa.Table) -> list[tuple[str, str]]:
    return list(zip(table["trace_id"].to_pylist(), table["span_id"].to_pylist(), strict=True))


def test_rewriting_the_same_batch_adds_nothing(data_dir: Path) -> None:
    lake = Lake(data_dir)
    batch = make_spans(10)
    first = lake.write("spans", batch)
    second = lake.write("spans", batch)
    assert (first.num_written, first.num_duplicates) == (10, 0)
    assert (second.num_written, second.num_duplicates) == (0, 10)
    assert second.segments == ()
    assert lake.has_data("spans") and not lake.has_data("feedback")
    assert len(lake.list_segments("spans")) == 1
    assert sorted(_keys(_stored(lake))) == sorted(_keys(batch))


def test_duplicates_within_a_batch_keep_the_first(data_dir: Path) -> None:
    lake = Lake(data_dir)
    a = span_row(name="first")
    b = span_row()
    dup = {**a, "name": "second"}
    result = lake.write("spans", spans_table([a, b, dup]))
    assert (result.num_written, result.num_duplicates) == (2, 1)
    stored = _stored(lake)
    assert dict(zip(stored["span_id"].to_pylist(), stored["name"].to_pylist(), strict=True)) == {
        a["span_id"]: "first",
        b["span_id"]: "span",
    }


def test_a_batch_overlapping_the_lake_writes_only_new_keys(data_dir: Path) -> None:
    lake = Lake(data_dir)
    old = [span_row() for _ in range(4)]
    lake.write("spans", spans_table(old))
    new = [span_row() for _ in range(3)]
    changed = {**old[1], "name": "changed"}
    result = lake.write("spans", spans_table([*new, changed, old[0]]))
    assert (result.num_written, result.num_duplicates) == (3, 2)
    stored = _stored(lake)
    assert Counter(_keys(stored)) == Counter((r["trace_id"], r["span_id"]) for r in old + new)
    assert "changed" not in stored["name"].to_pylist()


def test_same_span_id_in_another_trace_is_not_a_duplicate(data_dir: Path) -> None:
    lake = Lake(data_dir)
    rows = [
        span_row(trace_id="a" * 32, span_id="1" * 16),
        span_row(trace_id="b" * 32, span_id="1" * 16),
    ]
    assert lake.write("spans", spans_table(rows)).num_written == 2


def test_partitions_by_utc_date_of_start_time(data_dir: Path) -> None:
    lake = Lake(data_dir)
    # 03:30 at UTC+2 is 01:30 UTC on March 2.
    plus_two = datetime(2025, 3, 2, 1, 30, tzinfo=UTC).astimezone(ZoneInfo("Etc/GMT-2"))
    rows = [
        span_row(start_time=datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)),
        span_row(start_time=datetime(2025, 3, 2, 0, 0, tzinfo=UTC)),
        span_row(start_time=plus_two),
        span_row(start_time=datetime(1969, 12, 31, 23, 0, tzinfo=UTC)),
    ]
    result = lake.write("spans", spans_table(rows))
    assert result.num_written == 4
    assert lake.partitions("spans") == ["date=1969-12-31", "date=2025-03-01", "date=2025-03-02"]
    counts = {
        p: pq.read_table(lake.list_segments("spans", p)[0]).num_rows
        for p in lake.partitions("spans")
    }
    assert counts == {"date=1969-12-31": 1, "date=2025-03-01": 1, "date=2025-03-02": 2}
    for segment in lake.list_segments("spans"):
        assert segment.parent.parent == data_dir / "spans"


def test_segments_are_zstd_canonical_and_in_time_order_by_row_group(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(data_dir)
    seconds = [5, 1, 3, 9, 2, 7, 4]
    rows = [span_row(start_time=T0 + timedelta(seconds=s)) for s in seconds]
    (segment,) = lake.write("spans", spans_table(rows[:3])).segments
    table = pq.read_table(segment)
    assert table.schema.equals(SPAN_SCHEMA)
    # one row group: the rows as they came (a sort would gain no pruning)
    assert table["start_time"].to_pylist() == [r["start_time"] for r in rows[:3]]
    meta = pq.ParquetFile(segment).metadata
    assert meta.num_row_groups == 1
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert segment.name.startswith("seg-") and segment.suffix == ".parquet"

    monkeypatch.setattr(lake_module, "ROW_GROUP_ROWS", 2)
    (segment,) = lake.write("spans", spans_table(rows[3:])).segments
    file = pq.ParquetFile(segment)
    assert file.metadata.num_row_groups == 2
    times = pq.read_table(segment)["start_time"].to_pylist()
    assert times == sorted(r["start_time"] for r in rows[3:])
    column = SPAN_SCHEMA.get_field_index("start_time")
    stats = [file.metadata.row_group(g).column(column).statistics for g in range(2)]
    assert stats[0].max <= stats[1].min  # row groups do not overlap in time


@pytest.mark.parametrize("max_runs", [64, 2])  # sliced in runs; moved by a sort on the day
def test_a_batch_across_days_lands_a_segment_a_day_each_in_arrival_order(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, max_runs: int
) -> None:
    monkeypatch.setattr(lake_module, "MAX_DAY_RUNS", max_runs)
    lake = Lake(data_dir)
    offsets = [timedelta(hours=h) for h in (30, 2, 26, 1, 50, 3)]  # days 1, 0, 1, 0, 2, 0
    rows = [span_row(start_time=T0 + o) for o in offsets]
    result = lake.write("spans", spans_table(rows))
    assert result.num_written == 6
    got = {
        p: pq.read_table(lake.list_segments("spans", p)[0])["start_time"].to_pylist()
        for p in lake.partitions("spans")
    }
    in_order = [T0 + o for o in offsets]
    again = lake.write("spans", spans_table(rows[::-1]))  # the same spans, days interleaved
    assert (again.num_written, again.num_duplicates) == (0, 6)
    assert got == {
        "date=2025-03-01": [t for t in in_order if t.day == 1],
        "date=2025-03-02": [t for t in in_order if t.day == 2],
        "date=2025-03-03": [t for t in in_order if t.day == 3],
    }


def test_free_text_and_maps_have_no_statistics_and_only_repeating_columns_a_dictionary(
    data_dir: Path,
) -> None:
    lake = Lake(data_dir)
    rows = [span_row(start_time=T0 + timedelta(seconds=s)) for s in range(4)]
    (segment,) = lake.write("spans", spans_table(rows)).segments
    group = pq.ParquetFile(segment).metadata.row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    # statistics where a reader prunes on them, none on free text
    assert columns["start_time"].is_stats_set and columns["trace_id"].is_stats_set
    assert columns["request_model"].is_stats_set
    assert not columns["input_text"].is_stats_set
    assert not columns["attributes.key_value.value"].is_stats_set
    assert not columns["resource_attributes.key_value.value"].is_stats_set
    # dictionary pages only for columns whose values repeat, outside the attribute maps
    dictionary = {name for name, c in columns.items() if c.has_dictionary_page}
    assert {"request_model", "service_name"} <= dictionary
    assert not {"trace_id", "span_id", "input_text", "start_time"} & dictionary
    assert not {c for c in dictionary if "attributes" in c}
    # every leaf of the schema is named by the options (a renamed column would fall out)
    options = SPANS.parquet_options
    named = set(options["write_statistics"]) | set(options["use_dictionary"])
    assert set(columns) - named == {
        "input_text", "output_text", "status_message", "attributes.key_value.key",
        "attributes.key_value.value", "resource_attributes.key_value.key",
        "resource_attributes.key_value.value",
    } | {c for c in columns if c.startswith(("events.", "links."))}  # fmt: skip


def test_conform_casts_fills_missing_and_drops_extra() -> None:
    table = pa.table(
        {
            "extra": [1],
            "span_id": ["00000000000000aa"],
            "trace_id": ["0" * 32],
            "project": ["p"],
            "start_time": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "end_time": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "input_tokens": pa.array([7], pa.int32()),
        }
    )
    out = conform(SPANS, table)
    assert out.schema.equals(SPAN_SCHEMA)
    assert out["input_tokens"].to_pylist() == [7]
    assert out["output_tokens"].to_pylist() == [None]
    assert out["start_time"].type == pa.timestamp("ns", tz="UTC")


def test_null_key_or_time_is_rejected(data_dir: Path) -> None:
    lake = Lake(data_dir)
    bad = spans_table([span_row()]).set_column(
        SPAN_SCHEMA.get_field_index("span_id"), "span_id", pa.array([None], pa.string())
    )
    with pytest.raises(ValueError, match=r"spans\.span_id: 1 null"):
        lake.write("spans", bad)
    with pytest.raises(ValueError, match="unknown lake table 'nope'"):
        lake.write("nope", bad)
    assert not lake.has_data("spans")


def test_feedback_is_keyed_by_feedback_id_and_partitioned_by_time(data_dir: Path) -> None:
    lake = Lake(data_dir)
    rows = [
        feedback_row(feedback_id="f1", time=datetime(2025, 1, 1, 5, tzinfo=UTC)),
        feedback_row(feedback_id="f2", time=datetime(2025, 1, 2, 5, tzinfo=UTC)),
        feedback_row(feedback_id="f1", time=datetime(2025, 1, 1, 5, tzinfo=UTC), value=-1.0),
    ]
    result = lake.write("feedback", feedback_table(rows))
    assert (result.num_written, result.num_duplicates) == (2, 1)
    assert lake.partitions("feedback") == ["date=2025-01-01", "date=2025-01-02"]
    stored = _stored(lake, "feedback")
    assert stored.schema.equals(FEEDBACK_SCHEMA)
    assert sorted(
        zip(stored["feedback_id"].to_pylist(), stored["value"].to_pylist(), strict=True)
    ) == [
        ("f1", 1.0),
        ("f2", 1.0),
    ]
    assert FEEDBACK.key_columns == ("feedback_id",)


def test_temp_files_are_invisible_and_stale_ones_are_removed(data_dir: Path) -> None:
    lake = Lake(data_dir)
    lake.write("spans", make_spans(2))
    part = data_dir / "spans" / "date=2025-03-01"
    stale = part / ".seg-00000000000000000001-dead.parquet.tmp"
    fresh = part / ".seg-00000000000000000002-beef.parquet.tmp"
    for tmp in (stale, fresh):
        pq.write_table(make_spans(1), tmp)
    old = time.time() - 3600
    os.utime(stale, (old, old))

    assert [p.name for p in part.glob("*.parquet")] == [lake.list_segments("spans")[0].name]
    assert lake.remove_stale_temp_files(min_age_s=60) == 1
    assert not stale.exists() and fresh.exists()


def test_compaction_merges_segments_and_keeps_rows_once(data_dir: Path) -> None:
    lake = Lake(data_dir)
    day2 = T0 + timedelta(days=1)
    batches = [make_spans(5), make_spans(5), make_spans(3, start=day2), make_spans(5)]
    for batch in batches:
        lake.write("spans", batch)
    everything = sorted(k for b in batches for k in _keys(b))
    # A crash between compaction's rename and unlink leaves a copy: compaction removes it.
    copy = lake.list_segments("spans", "date=2025-03-01")[0]
    (copy.parent / "seg-99999999999999999999-copy.parquet").write_bytes(copy.read_bytes())

    result = lake.compact("spans", min_segments=2)

    assert (result.num_partitions, result.num_segments_in, result.num_segments_out) == (1, 4, 1)
    assert (result.num_rows, result.num_duplicates) == (15, 5)
    assert len(lake.list_segments("spans", "date=2025-03-01")) == 1
    assert len(lake.list_segments("spans", "date=2025-03-02")) == 1  # below min_segments
    assert sorted(_keys(_stored(lake))) == everything
    merged = pq.read_table(lake.list_segments("spans", "date=2025-03-01")[0])
    assert merged["start_time"].to_pylist() == sorted(merged["start_time"].to_pylist())
    assert lake.compact("spans", min_segments=2).num_partitions == 0
    # Writes after compaction still dedup against the merged segment.
    assert lake.write("spans", batches[0]).num_duplicates == 5


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(st.integers(0, 19), min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=4),
    compact_after=st.integers(0, 4),
)
def test_any_split_of_any_resend_stores_each_key_once(
    tmp_path_factory: pytest.TempPathFactory, picks: list[int], cuts: list[int], compact_after: int
) -> None:
    lake = Lake(tmp_path_factory.mktemp("lake"))
    pool = [span_row(start_time=T0 + timedelta(hours=7 * i)) for i in range(20)]
    rows = [pool[i] for i in picks]
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    written = duplicates = 0
    for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        result = lake.write("spans", spans_table(rows[lo:hi]))
        written += result.num_written
        duplicates += result.num_duplicates
        if n == compact_after:
            lake.compact("spans", min_segments=2)
    distinct = {(r["trace_id"], r["span_id"]) for r in rows}
    assert (written, duplicates) == (len(distinct), len(rows) - len(distinct))
    assert Counter(_keys(_stored(lake))) == Counter(dict.fromkeys(distinct, 1))


def test_a_write_sees_segments_another_lake_wrote(data_dir: Path) -> None:
    """Two writers (two processes in production) share the lake: each dedups against the other."""
    first, second = Lake(data_dir), Lake(data_dir)
    batch = make_spans(30)
    assert first.write("spans", batch.slice(0, 20)).num_written == 20
    assert second.write("spans", batch).num_written == 10  # its first write reads first's keys
    assert first.write("spans", batch).num_duplicates == 30  # first picks up second's segment
    assert Counter(_keys(_stored(first))) == Counter(dict.fromkeys(_keys(batch), 1))


def test_dedup_is_exact_when_key_hashes_collide(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key hashing alike makes every row a candidate; the stored keys still decide."""
    monkeypatch.setattr(
        lake_module, "key_hashes", lambda table, keys: np.zeros(table.num_rows, dtype=np.uint64)
    )
    lake = Lake(data_dir)
    old, new = make_spans(10), make_spans(5)
    assert lake.write("spans", old).num_written == 10
    result = lake.write("spans", pa.concat_tables([old.slice(3, 4), new]))
    assert (result.num_written, result.num_duplicates) == (5, 4)
    assert Counter(_keys(_stored(lake))) == Counter(dict.fromkeys(_keys(old) + _keys(new), 1))


def test_a_warm_writer_reads_no_stored_keys_for_new_rows(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What keeps a flush's cost flat as a day's partition grows: fresh rows read nothing back."""
    lake = Lake(data_dir)
    for _ in range(5):
        lake.write("spans", make_spans(50))
    reads: list[str] = []
    real_read = lake_module.pq.read_table
    monkeypatch.setattr(
        lake_module.pq,
        "read_table",
        lambda path, **kw: reads.append(str(path)) or real_read(path, **kw),
    )
    assert lake.write("spans", make_spans(50)).num_written == 50
    assert reads == []
    batch = make_spans(8)
    lake.write("spans", batch)
    assert lake.write("spans", batch).num_duplicates == 8
    assert len(reads) == 1  # only the one segment that holds the re-sent keys


def test_key_indexes_are_kept_for_a_few_partitions_and_rebuilt_when_needed(
    data_dir: Path,
) -> None:
    lake = Lake(data_dir)
    days = [make_spans(5, start=T0 + timedelta(days=d)) for d in range(KEY_INDEX_PARTITIONS + 2)]
    for batch in days:
        lake.write("spans", batch)
    assert len(lake._keys) == KEY_INDEX_PARTITIONS
    # The first day's index was dropped; re-sending it is still caught (rebuilt from disk).
    assert lake.write("spans", days[0]).num_duplicates == 5
    assert len(_stored(lake)) == 5 * len(days)
