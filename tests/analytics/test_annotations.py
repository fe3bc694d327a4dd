"""Annotations: validation, the lake round trip, counts by label, JSONL export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics.annotations import (
    MAX_LABEL_CHARS,
    annotated_traces_jsonl,
    annotations_by_label,
    new_annotation,
    write_annotations,
)
from analytics.scope import Scope
from analytics.trace_detail import read_trace
from store.catalog import open_catalog, query
from tests.analytics.lake import T0, new_id, span, write_lake


def test_new_annotation_validates_and_normalises() -> None:
    note = new_annotation("p", "t1", "  wrong   answer ", score=0.5, comment=" ", author=" ann ")
    assert note.label == "wrong answer" and note.comment is None and note.author == "ann"
    assert note.time.tzinfo is not None and len(note.annotation_id) == 32
    assert new_annotation("p", "t1", "x").annotation_id != note.annotation_id
    with pytest.raises(ValueError, match="label"):
        new_annotation("p", "t1", "   ")
    with pytest.raises(ValueError, match="characters"):
        new_annotation("p", "t1", "x" * (MAX_LABEL_CHARS + 1))
    with pytest.raises(ValueError, match="finite"):
        new_annotation("p", "t1", "x", score=float("nan"))
    with pytest.raises(ValueError, match="timezone"):
        new_annotation("p", "t1", "x", time=datetime(2025, 1, 1))


@pytest.fixture()
def lake(tmp_path: Path) -> tuple[Path, list[str]]:
    roots = [span(start_time=T0 + timedelta(hours=h)) for h in range(4)]
    children = [
        span(
            trace_id=r["trace_id"],
            parent_span_id=r["span_id"],
            start_time=r["start_time"],
            name="child",
        )
        for r in roots
    ]
    write_lake(tmp_path, roots + children)
    return tmp_path, [r["trace_id"] for r in roots]


def test_annotations_land_in_the_lake_and_show_on_the_trace(lake: tuple[Path, list[str]]) -> None:
    data_dir, traces = lake
    child = read_trace(open_catalog(data_dir), "default", traces[0], T0)
    assert child is not None
    notes = [
        new_annotation("default", traces[0], "hallucination", score=0.0, author="a", time=T0),
        new_annotation(
            "default", traces[0], "good", span_id=child.spans[1].span_id, score=1.0, time=T0
        ),
        new_annotation("default", traces[1], "hallucination", score=1.0, time=T0),
        new_annotation("default", traces[3], "good", time=T0 + timedelta(hours=3)),
    ]
    assert write_annotations(data_dir, notes) == 4
    assert write_annotations(data_dir, notes[:1]) == 0  # the same annotation twice: kept once
    conn = open_catalog(data_dir)
    assert query(conn, "SELECT count(*) AS n FROM annotations").to_pylist() == [{"n": 4}]
    trace = read_trace(conn, "default", traces[0], T0)
    assert trace is not None
    assert sorted(trace.annotations["label"].to_list()) == ["good", "hallucination"]

    scope = Scope("default", T0, T0 + timedelta(hours=2))  # traces 0 and 1
    counts = {r["label"]: r for r in annotations_by_label(conn, scope).iter_rows(named=True)}
    assert counts["hallucination"]["num_annotations"] == 2
    assert counts["hallucination"]["num_traces"] == 2
    assert counts["hallucination"]["mean_score"] == pytest.approx(0.5)
    assert counts["good"]["num_annotations"] == 1 and counts["good"]["num_spans"] == 1
    assert set(counts) == {"hallucination", "good"}  # trace 3 is outside the window


def test_export_is_one_json_line_per_annotated_trace(lake: tuple[Path, list[str]]) -> None:
    data_dir, traces = lake
    write_annotations(
        data_dir,
        [
            new_annotation("default", traces[0], "good", comment='say "hi" ✓', time=T0),
            new_annotation("default", traces[0], "bad", time=T0 + timedelta(minutes=1)),
            new_annotation("default", traces[2], "good", time=T0),
        ],
    )
    conn = open_catalog(data_dir)
    scope = Scope("default", T0, T0 + timedelta(days=1))
    records = [json.loads(line) for line in annotated_traces_jsonl(conn, scope)]
    assert [r["trace_id"] for r in records] == sorted([traces[0], traces[2]])
    first = next(r for r in records if r["trace_id"] == traces[0])
    assert [a["label"] for a in first["annotations"]] == ["good", "bad"]
    assert first["annotations"][0]["comment"] == 'say "hi" ✓'
    assert [s["name"] for s in first["spans"]] == ["span", "child"]
    assert first["spans"][0]["start_time"].startswith("2025-03-01T00:00:00")
    only_bad = [json.loads(line) for line in annotated_traces_jsonl(conn, scope, "bad")]
    assert [r["trace_id"] for r in only_bad] == [traces[0]]
    assert list(annotated_traces_jsonl(conn, Scope("default", T0 - timedelta(days=9), T0))) == []


def test_annotations_need_no_spans_to_be_stored(tmp_path: Path) -> None:
    note = new_annotation("default", new_id(32), "x", time=datetime(2025, 5, 1, tzinfo=UTC))
    assert write_annotations(tmp_path, [note]) == 1
    assert (tmp_path / "annotations" / "date=2025-05-01").is_dir()
