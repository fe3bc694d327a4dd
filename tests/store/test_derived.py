"""Kept trace parts and priced calls: the same numbers as the spans, kept fresh, never required."""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from analytics.cost import install_prices, load_price_table
from analytics.scope import Scope, run_scoped
from store import derived
from store.catalog import open_catalog, set_prices
from store.derived import CACHE_DIR, DERIVED_DIR, KINDS, Derived
from store.lake import Lake
from store.schema import LLM_OPERATIONS, SPAN_SCHEMA
from tests.analytics.lake import T0, new_id, random_traces, span
from tests.analytics.reference import call_cost

Row = dict[str, Any]


def _rows() -> list[Row]:
    """Random traces over 48 h, plus traces that cross an hour and traces without a root."""
    rows = random_traces(seed=11, num_traces=80, start=T0, span_hours=48.0)
    rng = random.Random(5)
    for hour in range(0, 48, 5):  # a root just before the hour, its model call just after
        root = span(
            start_time=T0 + timedelta(hours=hour + 1, seconds=-0.5),
            duration_ms=2_000.0,
            user_id=f"u-late-{hour}",
        )
        call = span(
            trace_id=root["trace_id"],
            parent_span_id=root["span_id"],
            start_time=root["start_time"] + timedelta(seconds=1),
            duration_ms=900.0,
            operation="chat",
            response_model="gpt-4o-2024-08-06",
            input_tokens=rng.randint(10, 900),
            output_tokens=rng.randint(2, 90),
            ttft_ms=100.0,
        )
        rows += [root, call]
    # calls at the very start and end of whole hours (the kept hours' bounds)
    for at in (
        timedelta(hours=3, seconds=0.5),
        timedelta(hours=44, minutes=59, seconds=59),
        timedelta(hours=45, minutes=5),  # in the partial hour at the end of the calls' window
    ):
        root = span(start_time=T0 + at - timedelta(milliseconds=5), duration_ms=3_000.0)
        rows.append(root)
        rows.append(
            span(
                trace_id=root["trace_id"],
                parent_span_id=root["span_id"],
                start_time=T0 + at,
                duration_ms=700.0,
                operation="chat",
                response_model="gpt-4o-mini-2024-07-18",
                input_tokens=321,
                output_tokens=12,
            )
        )
    # a request that lasted 23 h: it began before the "long" window, in the first whole hour
    # of its span window, so it is not a request of that window
    long_root = span(start_time=T0 + timedelta(hours=2, minutes=10), duration_ms=84_000_000.0)
    rows += [
        long_root,
        span(
            trace_id=long_root["trace_id"],
            parent_span_id=long_root["span_id"],
            start_time=T0 + timedelta(hours=25, minutes=30),
        ),
    ]
    # a request of the "margin" window whose last span is in the partial hour at the end of
    # its span window (the window's end + TRACE_MARGIN)
    margin_root = span(start_time=T0 + timedelta(hours=20), duration_ms=87_000_000.0)
    rows += [
        margin_root,
        span(
            trace_id=margin_root["trace_id"],
            parent_span_id=margin_root["span_id"],
            start_time=T0 + timedelta(hours=44, minutes=10),
        ),
    ]
    for i in range(6):  # the root never arrived: two children of a missing parent
        trace_id, parent = new_id(32), new_id()
        first = T0 + timedelta(hours=3 + 7 * i, minutes=i)
        rows += [
            span(trace_id=trace_id, parent_span_id=parent, start_time=first, duration_ms=50.0),
            span(
                trace_id=trace_id,
                parent_span_id=parent,
                start_time=first + timedelta(milliseconds=70),
                duration_ms=400.0,
                status_code="ERROR",
            ),
        ]
    return rows


def _write_in_batches(lake: Lake, rows: list[Row], batches: int, seed: int) -> None:
    """Spread every trace's spans over several segments, as a receiver's flushes do."""
    rng = random.Random(seed)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    for i in range(batches):
        lake.write("spans", pa.Table.from_pylist(shuffled[i::batches], schema=SPAN_SCHEMA))


def _priced_lake(tmp_path: Path, batches: int, seed: int) -> tuple[list[Row], Lake, Any]:
    """``_rows()`` written in ``batches`` segments, and a catalog over them with prices."""
    rows = _rows()
    lake = Lake(tmp_path)
    _write_in_batches(lake, rows, batches=batches, seed=seed)
    conn = open_catalog(tmp_path)
    install_prices(conn)
    return rows, lake, conn


def _layout(paths: Iterable[Path]) -> list[str]:
    """``date=…/name`` of each path, sorted: a partition's files as the tests compare them."""
    return sorted(f"{p.parent.name}/{p.name}" for p in paths)


def _reference(rows: list[Row], start: datetime, end: datetime) -> dict[str, Row]:
    """The requests whose first span is in [start, end), computed from the spans by hand."""
    by_trace: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_trace[row["trace_id"]].append(row)
    out: dict[str, Row] = {}
    for trace_id, spans in by_trace.items():
        first = min(s["start_time"] for s in spans)
        if not start <= first < end:
            continue
        roots = [s for s in spans if s["parent_span_id"] is None]
        last = max(s["end_time"] for s in spans)
        calls = [s for s in spans if s["operation"] in LLM_OPERATIONS]
        users = sorted((s["start_time"], s["user_id"]) for s in spans if s["user_id"])
        head = min(roots, key=lambda s: s["start_time"]) if roots else None
        costs = [call_cost(c) for c in calls]
        out[trace_id] = {
            "name": head["name"] if head else min(spans, key=lambda s: s["start_time"])["name"],
            "duration_ms": head["duration_ms"]
            if head
            else (last - first) / timedelta(milliseconds=1),
            "has_root": head is not None,
            "num_spans": len(spans),
            "num_llm_calls": len(calls),
            "input_tokens": sum(c["input_tokens"] or 0 for c in calls),
            "has_error": any(s["status_code"] == "ERROR" for s in spans),
            "user_id": users[0][1] if users else None,
            "total_cost_usd": (
                0.0
                if not calls
                else None
                if all(c is None for c in costs)
                else sum(c for c in costs if c is not None)
            ),
            "models": sorted(
                {m for c in calls if (m := c["response_model"] or c["request_model"])}
            ),
        }
    return out


def _scoped_traces(conn: Any, start: datetime, end: datetime) -> dict[str, Row]:
    table = run_scoped(
        conn,
        Scope("default", start, end),
        "SELECT trace_id, name, duration_ms, has_root, num_spans, num_llm_calls, input_tokens,"
        " has_error, user_id, total_cost_usd, models FROM scoped_traces",
    )
    return {row.pop("trace_id"): row for row in table.to_pylist()}


def _assert_same(got: dict[str, Row], want: dict[str, Row]) -> None:
    assert got.keys() == want.keys()
    for trace_id, expected in want.items():
        actual = got[trace_id]
        for key, value in expected.items():
            if isinstance(value, float):
                assert math.isclose(actual[key], value, rel_tol=1e-9, abs_tol=1e-12), (
                    trace_id,
                    key,
                )
            else:
                assert actual[key] == value, (trace_id, key)


def _kept_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / CACHE_DIR / DERIVED_DIR).glob("*/*/date=*/*.parquet"))


def _day_files(lake: Lake) -> list[str]:
    """``date=…/day-<hash>.parquet`` of each past day: the layout store.derived promises."""
    names = []
    for partition in lake.partitions("spans"):
        segments = "\n".join(p.name for p in lake.list_segments("spans", partition))
        names.append(
            f"{partition}/day-{hashlib.sha256(segments.encode()).hexdigest()[:16]}.parquet"
        )
    return names


WINDOWS = (
    (T0, T0 + timedelta(hours=48)),  # whole hours
    (T0 + timedelta(hours=5, minutes=17), T0 + timedelta(hours=29, seconds=31)),  # ragged ends
    (T0 + timedelta(hours=40, minutes=59, seconds=59), T0 + timedelta(hours=41, minutes=1)),
    (T0 + timedelta(hours=25, minutes=17), T0 + timedelta(hours=30)),  # see the 23-h request
    (T0 + timedelta(hours=1), T0 + timedelta(hours=20, minutes=30)),  # see the margin request
)


@pytest.mark.parametrize(
    "window", WINDOWS, ids=["aligned", "ragged", "two-minutes", "long", "margin"]
)
def test_requests_from_kept_parts_equal_the_spans_by_hand(
    tmp_path: Path, window: tuple[datetime, datetime]
) -> None:
    rows, _, conn = _priced_lake(tmp_path, batches=3, seed=1)
    start, end = window
    want = _reference(rows, start, end)
    _assert_same(_scoped_traces(conn, start, end), want)  # builds the kept files
    assert _kept_files(tmp_path), "the query kept nothing"
    _assert_same(_scoped_traces(conn, start, end), want)  # reads them back


def test_kept_calls_equal_the_calls_view(tmp_path: Path) -> None:
    rows, _, conn = _priced_lake(tmp_path, batches=4, seed=2)
    start, end = T0 + timedelta(hours=2, minutes=30), T0 + timedelta(hours=45, minutes=10)
    got = run_scoped(
        conn,
        Scope("default", start, end),
        "SELECT span_id, model, tpot_ms, total_cost_usd FROM scoped_llm_calls ORDER BY span_id",
    ).to_pylist()
    want = sorted(
        (r for r in rows if r["operation"] in LLM_OPERATIONS and start <= r["start_time"] < end),
        key=lambda r: r["span_id"],
    )
    assert [g["span_id"] for g in got] == [w["span_id"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["model"] == (w["response_model"] or w["request_model"])
        cost = call_cost(w)
        if cost is None:
            assert g["total_cost_usd"] is None
        else:
            assert g["total_cost_usd"] == pytest.approx(cost, rel=1e-12)


def test_a_price_change_is_not_served_from_the_old_prices(tmp_path: Path) -> None:
    _, _, conn = _priced_lake(tmp_path, batches=2, seed=3)
    scope = Scope("default", T0, T0 + timedelta(hours=48))
    sql = "SELECT sum(total_cost_usd) AS usd FROM scoped_traces"
    before = run_scoped(conn, scope, sql).to_pylist()[0]["usd"]
    doubled = load_price_table().prices.to_pylist()
    for price in doubled:
        for key in price:
            if key.endswith("_usd_per_mtok") and price[key] is not None:
                price[key] *= 2
    set_prices(conn, pa.Table.from_pylist(doubled))
    after = run_scoped(conn, scope, sql).to_pylist()[0]["usd"]
    assert before > 0
    assert after == pytest.approx(2 * before, rel=1e-12)
    assert len(list((tmp_path / CACHE_DIR / DERIVED_DIR).iterdir())) == 2  # one per price set


@pytest.fixture
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past days count as settled as soon as they are written (the tests' lakes are new)."""
    monkeypatch.setattr(derived, "DAY_SETTLE", timedelta(0))


@pytest.mark.usefixtures("settled_at_once")
def test_a_segment_written_later_counts_and_compaction_drops_the_orphans(tmp_path: Path) -> None:
    rows, lake, conn = _priced_lake(tmp_path, batches=5, seed=4)
    start, end = T0, T0 + timedelta(hours=48)
    _scoped_traces(conn, start, end)
    # a late request inside hours that are already kept
    late = [span(start_time=T0 + timedelta(hours=10, minutes=m), duration_ms=5.0) for m in (1, 2)]
    lake.write("spans", pa.Table.from_pylist(late, schema=SPAN_SCHEMA))
    rows += late
    _assert_same(_scoped_traces(conn, start, end), _reference(rows, start, end))

    result = lake.compact("spans", min_segments=2)
    assert result.num_segments_in > result.num_segments_out
    _assert_same(_scoped_traces(conn, start, end), _reference(rows, start, end))
    # a past day is kept as one file per kind, named for the day's (new) set of segments
    kept = _kept_files(tmp_path)
    assert _layout(kept) == sorted(_day_files(lake) * len(KINDS))


def test_an_unwritable_cache_falls_back_to_the_spans(tmp_path: Path) -> None:
    rows, _, conn = _priced_lake(tmp_path, batches=2, seed=5)
    (tmp_path / CACHE_DIR).write_text("not a folder")  # mkdir under it fails
    assert Derived(tmp_path).ensure(conn, T0, T0 + timedelta(hours=48)) is None
    start, end = T0 + timedelta(hours=1, minutes=3), T0 + timedelta(hours=47)
    _assert_same(_scoped_traces(conn, start, end), _reference(rows, start, end))


@pytest.mark.usefixtures("settled_at_once")
def test_a_new_model_name_is_read_from_the_spans_until_mapped_then_kept_alone(
    tmp_path: Path,
) -> None:
    rows, lake, conn = _priced_lake(tmp_path, batches=3, seed=6)
    start, end = T0, T0 + timedelta(hours=48)
    _assert_same(_scoped_traces(conn, start, end), _reference(rows, start, end))
    before = {p: p.stat().st_mtime_ns for p in _kept_files(tmp_path)}

    # a model version the catalog has not mapped yet, in a whole hour that is already kept
    root = span(start_time=T0 + timedelta(hours=7, minutes=10), duration_ms=1_500.0)
    call = span(
        trace_id=root["trace_id"],
        parent_span_id=root["span_id"],
        start_time=root["start_time"] + timedelta(milliseconds=20),
        duration_ms=1_200.0,
        operation="chat",
        response_model="gpt-4o-2026-01-01",  # a new dated name of a priced model
        input_tokens=2_000,
        output_tokens=300,
    )
    lake.write("spans", pa.Table.from_pylist([root, call], schema=SPAN_SCHEMA))
    rows += [root, call]
    got = _scoped_traces(conn, start, end)
    # not mapped yet: unpriced, exactly as the spans say with this catalog; its day is kept
    # segment by segment, without the new segment
    assert got[root["trace_id"]]["num_llm_calls"] == 1
    assert got[root["trace_id"]]["total_cost_usd"] is None
    day = f"date={root['start_time']:%Y-%m-%d}"
    new_segment = max(p.name for p in lake.list_segments("spans", day))  # names sort by time
    in_day = {p.name for p in _kept_files(tmp_path) if p.parent.name == day}
    assert new_segment not in in_day
    assert in_day == {p.name for p in lake.list_segments("spans", day)} - {new_segment}

    install_prices(conn)  # the catalog maps the names it has seen, the new one included
    _assert_same(_scoped_traces(conn, start, end), _reference(rows, start, end))
    after = {p: p.stat().st_mtime_ns for p in _kept_files(tmp_path)}
    untouched = {p: t for p, t in before.items() if p.parent.name != day}
    assert untouched and {p: after[p] for p in untouched} == untouched  # other days kept as were
    assert _layout(after) == sorted(_day_files(lake) * len(KINDS))


def test_today_is_kept_segment_by_segment(tmp_path: Path) -> None:
    """Today's partition grows under a receiver: one kept file per segment, no day file."""
    now = datetime.now(UTC).replace(microsecond=0)
    # The spans lie between the start of the window and now, and within today even just after
    # midnight, when the window shrinks to the minutes (or seconds) since.
    start = max(now - timedelta(hours=1), now.replace(hour=0, minute=0, second=0))
    times = [start + (now - start) * m / 6 for m in range(1, 6)]
    lake = Lake(tmp_path)
    batches = [
        [span(start_time=t, duration_ms=10.0) for t in times[:2]],
        [span(start_time=t, duration_ms=10.0) for t in times[2:]],
    ]
    for batch in batches:
        lake.write("spans", pa.Table.from_pylist(batch, schema=SPAN_SCHEMA))
    conn = open_catalog(tmp_path)
    install_prices(conn)
    got = _scoped_traces(conn, start, now + timedelta(seconds=1))
    assert len(got) == 5
    segments = sorted(p.name for p in lake.list_segments("spans"))
    for kind in KINDS:
        kept = sorted(p.name for p in _kept_files(tmp_path) if p.parent.parent.name == kind)
        assert kept == segments, kind


def test_a_past_day_still_receiving_segments_is_kept_segment_by_segment(tmp_path: Path) -> None:
    """Late spans arrive for a while after midnight: a day is kept whole once it settles."""
    rows, lake, conn = _priced_lake(tmp_path, batches=3, seed=8)
    start, end = T0, T0 + timedelta(hours=48)
    want = _reference(rows, start, end)
    _assert_same(_scoped_traces(conn, start, end), want)
    segments = _layout(lake.list_segments("spans"))
    kept = _layout(_kept_files(tmp_path))
    assert kept == sorted(segments * len(KINDS))  # just written: not settled
    old = time.time() - derived.DAY_SETTLE.total_seconds() - 1
    for segment in lake.list_segments("spans"):
        os.utime(segment, (old, old))
    _assert_same(_scoped_traces(conn, start, end), want)
    kept = _layout(_kept_files(tmp_path))
    assert kept == sorted(_day_files(lake) * len(KINDS))  # settled: one file per kind and day
