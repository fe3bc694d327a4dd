"""Same seed, same bytes; another seed, other bytes; and the output streams."""

from __future__ import annotations

import time
from pathlib import Path

from sample_data import generate, generate_feedback, write_dataset


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 300, 3, 11)
    write_dataset(tmp_path / "b", 300, 3, 11)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == [
        "feedback.jsonl.gz",
        "traces.jsonl.gz",
        "traces.otlp.jsonl.gz",
        "traces.pb.gz",
    ]
    assert a == b


def test_other_seed_writes_other_bytes(tmp_path: Path) -> None:
    write_dataset(tmp_path / "a", 300, 3, 11, formats=["pb"], compress=False)
    write_dataset(tmp_path / "b", 300, 3, 12, formats=["pb"], compress=False)
    assert (tmp_path / "a" / "traces.pb").read_bytes() != (
        tmp_path / "b" / "traces.pb"
    ).read_bytes()


def test_generate_is_deterministic_and_batched() -> None:
    first = [r.SerializeToString(deterministic=True) for r in generate(450, 2, 5, batch_size=200)]
    again = [r.SerializeToString(deterministic=True) for r in generate(450, 2, 5, batch_size=200)]
    assert first == again
    assert len(first) == 3  # 200 + 200 + 50 traces


def test_generate_yields_exactly_the_traces_asked_for() -> None:
    trace_ids = {
        s.trace_id
        for r in generate(777, 3, 2)
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    }
    assert len(trace_ids) == 777


def test_generate_feedback_matches_the_pass_that_made_the_traces() -> None:
    records = list(generate_feedback(400, 3, 9))
    trace_ids = {
        s.trace_id.hex()
        for r in generate(400, 3, 9)
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    }
    assert records
    assert {f["trace_id"] for f in records} <= trace_ids


def test_generation_streams() -> None:
    started = time.perf_counter()
    first = next(generate(10_000_000, 30, 1))
    assert time.perf_counter() - started < 5
    assert len(first.resource_spans) >= 1
