"""Feedback carried by spans (events and feedback spans): it lands keyed by trace and span,
late feedback attaches to its trace, bad records are reported and their spans kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from analytics.feedback import feedback_summary
from analytics.scope import Scope
from ingest.jsonl import decode_records
from ingest.receiver_decode import decode_body
from ingest.span_feedback import span_feedback
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import flat_span, ingest_lines

T0_NS = 1_767_225_600 * 10**9  # flat_span's time zero: 2026-01-01T00:00Z
DAY_NS = 86_400 * 10**9


def _chat(
    trace: int, span: int, start_s: float, events: list[dict[str, object]]
) -> dict[str, object]:
    line = flat_span(
        trace, span, start_s, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
    )
    line["events"] = events
    return line


def _lines() -> list[dict[str, object]]:
    return [
        # a thumbs-down event on the answer span
        _chat(1, 11, 10, [{"time": T0_NS + 12 * 10**9, "name": "user_feedback",
                           "attributes": {"feedback.kind": "thumbs_down", "user.id": "u1"}}]),
        # thumbs with value "up", and a comment, as two events on one span
        _chat(2, 21, 20, [
            {"time": T0_NS + 25 * 10**9, "name": "flywheel.feedback",
             "attributes": {"flywheel.feedback.kind": "thumbs", "flywheel.feedback.value": "up"}},
            {"time": T0_NS + 26 * 10**9, "name": "feedback",
             "attributes": {"feedback.kind": "comment", "feedback.text": "Great, thanks"}},
        ]),
        # a feedback span recorded two days later in trace 1, rating the answer span 11
        flat_span(1, 12, 2 * 86_400, {"feedback.kind": "rating", "feedback.value": 4,
                                      "feedback.span_id": f"{11:016x}", "user.id": "u1"},
                  parent=11, name="feedback"),
        # a kind nobody knows: reported, the span kept
        _chat(3, 31, 30, [{"time": T0_NS + 31 * 10**9, "name": "user_feedback",
                           "attributes": {"feedback.kind": "meh"}}]),
        # an ordinary event is not feedback
        _chat(4, 41, 40, [{"time": T0_NS + 41 * 10**9, "name": "gen_ai.choice",
                           "attributes": {"index": 0}}]),
    ]  # fmt: skip


def _feedback_rows(data_dir: Path) -> list[dict[str, object]]:
    conn = open_catalog(data_dir)
    return (
        conn.execute(
            "SELECT trace_id, span_id, kind, value, text, user_id, source, epoch_ns(time) AS t "
            "FROM feedback ORDER BY t"
        )
        .to_arrow_table()
        .to_pylist()
    )


def test_span_feedback_lands_keyed_by_trace_and_span(tmp_path: Path) -> None:
    data_dir = ingest_lines(tmp_path / "lake", _lines(), allow_errors=True)
    rows = _feedback_rows(data_dir)
    assert [(r["trace_id"][-1], r["span_id"][-2:], r["kind"], r["value"], r["text"]) for r in rows] == [
        ("1", "0b", "thumbs", -1.0, None),
        ("2", "15", "thumbs", 1.0, None),
        ("2", "15", "comment", None, "Great, thanks"),
        ("1", "0b", "rating", 4.0, None),  # the feedback span names span 11
    ]  # fmt: skip
    assert rows[0]["user_id"] == "u1" and rows[0]["t"] == T0_NS + 12 * 10**9
    assert {r["source"] for r in rows} == {"span"}
    assert rows[3]["t"] == T0_NS + 2 * DAY_NS  # two days late
    # every span is stored, the one with the unknown kind too
    assert open_catalog(data_dir).execute("SELECT count(*) FROM spans").fetchone() == (5,)
    # re-sending the same spans adds no feedback
    ingest_lines(tmp_path / "lake", _lines(), allow_errors=True)
    assert len(_feedback_rows(data_dir)) == 4


def test_late_span_feedback_counts_for_its_trace(tmp_path: Path) -> None:
    data_dir = ingest_lines(tmp_path / "lake", _lines(), allow_errors=True)
    day = datetime(2026, 1, 1, tzinfo=UTC)
    summary = feedback_summary(
        open_catalog(data_dir), Scope("default", day, day + timedelta(days=1))
    )
    assert (summary.thumbs_up, summary.thumbs_down, summary.num_ratings) == (1, 1, 1)
    assert summary.num_comments == 1


def test_bad_feedback_says_where_and_why() -> None:
    decoded = _decode(_lines())
    feedback, errors = span_feedback(decoded)
    assert feedback.num_rows == 4
    [(where, why)] = errors
    assert f"trace {3:032x} span {31:016x} event 0 (user_feedback)" == where
    assert "feedback kind must be one of" in why and "'meh'" in why


def _decode(lines: list[dict[str, object]]) -> pa.Table:
    records = [(f"line {n}", line) for n, line in enumerate(lines, start=1)]
    return decode_records(records, source="t", project="default").spans


def test_the_receiver_keeps_the_span_and_warns(tmp_path: Path) -> None:
    request = {
        "resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
            "traceId": "5" * 32, "spanId": "6" * 16, "name": "chat m", "kind": 3,
            "startTimeUnixNano": str(T0_NS), "endTimeUnixNano": str(T0_NS + 10**9),
            "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}],
            "events": [
                {"timeUnixNano": str(T0_NS + 5 * 10**9), "name": "user_feedback", "attributes": [
                    {"key": "feedback.kind", "value": {"stringValue": "thumbs_up"}}]},
                {"timeUnixNano": str(T0_NS + 6 * 10**9), "name": "user_feedback", "attributes": [
                    {"key": "feedback.kind", "value": {"stringValue": "rating"}},
                    {"key": "feedback.value", "value": {"stringValue": "lots"}}]},
            ],
        }]}]}]
    }  # fmt: skip
    outcome = decode_body(json.dumps(request).encode(), "", "json", "p", 1 << 20, "test")
    assert outcome.failure is None and outcome.errors == []
    assert outcome.spans is not None and outcome.spans.num_rows == 1
    assert outcome.feedback is not None
    assert outcome.feedback.column("kind").to_pylist() == ["thumbs"]
    assert outcome.feedback.column("span_id").to_pylist() == ["6" * 16]
    [(where, why)] = outcome.warnings
    assert "event 1 (user_feedback)" in where and "value" in why
    assert "event 1" in outcome.error_message()
