"""Datasets: cases from a hand-built lake of traces, JSONL import, versions, splits, refs.

The lake is landed through the real ingest path (flat JSONL spans with OpenTelemetry GenAI
attributes, and feedback records), so what a case holds is compared with what was planted.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.scope import Scope
from analytics.trace_detail import SpanDetail
from analytics.traces import TraceFilter
from app.eval_dataset_cmd import span_conversation
from evals.cases import Case, Message, case_id_of
from evals.compare import cost_usd
from evals.datasets import (
    cases_from_traces,
    list_datasets,
    parse_dataset_ref,
    read_dataset,
    read_jsonl_cases,
    split_of,
    write_dataset,
)
from tests.evals.support_world import (
    SCOPE,
    T0,
    Planted,
    open_lake,
    system_message,
    user_message,
    write_support_world,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Planted], Path]:
    data_dir = tmp_path_factory.mktemp("datasets") / "lake"
    return {p.key: p for p in write_support_world(data_dir)}, data_dir


@pytest.fixture
def conn(world: tuple[dict[str, Planted], Path]) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_lake(world[1])
    yield connection
    connection.close()


def _text(parts_json: str | None) -> list[tuple[str, str]]:
    """(role, text) of an OTel GenAI messages attribute (text parts only)."""
    if not parts_json:
        return []
    found = []
    for message in json.loads(parts_json):
        text = "".join(p["content"] for p in message["parts"] if p.get("type") == "text")
        found.append((message["role"], text))
    return found


def messages_from_attributes(span: SpanDetail) -> tuple[list[Message], str | None]:
    """The test's own reading of a span: GenAI system instructions, input and output messages."""
    messages: list[Message] = []
    system = span.attributes.get("gen_ai.system_instructions")
    if system:
        messages.append(system_message("".join(p["content"] for p in json.loads(system))))
    messages += [
        {"role": role, "content": text}
        for role, text in _text(span.attributes.get("gen_ai.input.messages"))
    ]
    output = _text(span.attributes.get("gen_ai.output.messages"))
    return messages, ("\n".join(text for _, text in output) if output else None)


# Newest first: the requests that become cases (no-user, no-call and refund-old are left out).
EXPECTED_KEYS = ["two-calls", "multi-turn", "refund-new", "parcel-error"]
READERS = pytest.mark.parametrize(
    "messages_of", [messages_from_attributes, span_conversation], ids=["attributes", "trace-view"]
)


# --- cases from traces ---------------------------------------------------------------------------


@READERS
def test_cases_from_traces_hold_the_planted_inputs_and_answers(
    world: tuple[dict[str, Planted], Path], conn: duckdb.DuckDBPyConnection, messages_of: Any
) -> None:
    planted, _ = world
    built = cases_from_traces(conn, SCOPE, None, messages_of)
    assert [c.source_trace_id for c in built.cases] == [planted[k].trace_id for k in EXPECTED_KEYS]
    for case, key in zip(built.cases, EXPECTED_KEYS, strict=True):
        p = planted[key]
        assert list(case.messages) == p.messages, key
        assert case.case_id == case_id_of(p.messages)
        assert case.reference == p.output
        assert case.source_span_id == p.call_span_id
        assert case.source_time == p.call_start
        assert case.split == split_of(case.case_id, 0.2)
    # the repeated refund question is kept once: the newest request's answer
    assert built.num_duplicates == 1
    assert built.cases[2].reference == "Refunds take 3 days (v2)."
    assert built.num_traces == 7  # the other project's request is not counted
    assert built.num_without_answer == 1  # no-call
    assert built.num_without_input == 1  # no-user: a system prompt only


def test_the_answer_is_the_last_generation_call(
    world: tuple[dict[str, Planted], Path], conn: duckdb.DuckDBPyConnection
) -> None:
    planted, _ = world
    built = cases_from_traces(conn, SCOPE, None, messages_from_attributes)
    [case] = [c for c in built.cases if c.source_trace_id == planted["two-calls"].trace_id]
    assert case.user_input == "Cancel my plan 4"
    assert case.reference == "Plan 4 is cancelled."


def test_case_metadata_comes_from_the_answer_call(
    world: tuple[dict[str, Planted], Path], conn: duckdb.DuckDBPyConnection
) -> None:
    planted, _ = world
    built = cases_from_traces(conn, SCOPE, None, messages_from_attributes)
    by_key = {k: c for k, c in zip(EXPECTED_KEYS, built.cases, strict=True)}
    new = by_key["refund-new"].metadata
    assert new["model"] == "gpt-4o"
    assert new["provider"] == "openai"
    assert new["route"] == "POST /refund"
    assert new["service"] == "support"
    assert new["user_id"] == "u7"
    assert (new["input_tokens"], new["output_tokens"]) == ("20", "9")
    assert float(new["latency_ms"]) == pytest.approx(990.0)
    expected_cost = cost_usd("gpt-4o", 20, 9, planted["refund-new"].call_start)
    assert expected_cost is not None and float(new["cost_usd"]) == pytest.approx(expected_cost)
    assert "user_id" not in by_key["multi-turn"].metadata
    assert by_key["parcel-error"].metadata["status"] == "ERROR"
    assert "output_tokens" not in by_key["parcel-error"].metadata
    # votes: one up; one down; an up and a down from two users is down; a user's latest vote
    # (down, then up) counts
    assert {k: by_key[k].metadata.get("feedback") for k in EXPECTED_KEYS} == {
        "refund-new": "up",
        "parcel-error": "down",
        "multi-turn": "down",
        "two-calls": "up",
    }


@pytest.mark.parametrize(
    ("filters", "keys", "num_traces", "num_duplicates"),
    [
        (TraceFilter(status="error"), ["parcel-error"], 1, 0),
        (TraceFilter(search="REFUND"), ["refund-new"], 2, 1),
        (TraceFilter(feedback=("thumbs_down",)), ["two-calls", "multi-turn", "parcel-error"], 3, 0),
        (TraceFilter(search="no such text"), [], 0, 0),
    ],
    ids=["error", "search", "thumbs-down", "nothing"],
)
@READERS
def test_a_trace_filter_narrows_the_cases(
    world: tuple[dict[str, Planted], Path],
    conn: duckdb.DuckDBPyConnection,
    messages_of: Any,
    filters: TraceFilter,
    keys: list[str],
    num_traces: int,
    num_duplicates: int,
) -> None:
    planted, _ = world
    built = cases_from_traces(conn, SCOPE, filters, messages_of)
    assert [c.source_trace_id for c in built.cases] == [planted[k].trace_id for k in keys]
    assert (built.num_traces, built.num_duplicates) == (num_traces, num_duplicates)


def test_scope_route_limit_and_holdout(
    world: tuple[dict[str, Planted], Path], conn: duckdb.DuckDBPyConnection
) -> None:
    planted, _ = world
    refund_scope = Scope(SCOPE.project, SCOPE.start, SCOPE.end, routes=("POST /refund",))
    built = cases_from_traces(conn, refund_scope, None, messages_from_attributes)
    assert [c.source_trace_id for c in built.cases] == [planted["refund-new"].trace_id]
    newest_two = cases_from_traces(conn, SCOPE, None, messages_from_attributes, limit=2)
    assert [c.source_trace_id for c in newest_two.cases] == [
        planted[k].trace_id for k in ("two-calls", "multi-turn")
    ]
    assert newest_two.num_traces == 2
    everything = cases_from_traces(conn, SCOPE, None, messages_from_attributes, holdout=1.0)
    assert {c.split for c in everything.cases} == {"holdout"}
    other = Scope("other", SCOPE.start, SCOPE.end)
    [case] = cases_from_traces(conn, other, None, messages_from_attributes).cases
    assert case.reference == "Other project."
    with pytest.raises(ValueError, match="limit"):
        cases_from_traces(conn, SCOPE, None, messages_from_attributes, limit=0)


def test_cases_from_traces_survive_a_dataset_round_trip(
    world: tuple[dict[str, Planted], Path], tmp_path: Path
) -> None:
    _, data_dir = world
    conn = open_lake(data_dir)
    built = cases_from_traces(conn, SCOPE, None, span_conversation)
    copy = tmp_path / "copy"  # a fresh lake: the shared one stays as built
    copy_conn = open_lake(copy)
    written = write_dataset(copy_conn, copy, "default", "support", built.cases)
    back = read_dataset(copy_conn, "default", "support")
    assert back.version == written.version == 1
    assert back.cases == built.cases
    [row] = list_datasets(copy_conn, "default").to_dicts()
    assert row["num_from_traces"] == 4 and row["num_with_reference"] == 3


# --- JSONL import --------------------------------------------------------------------------------


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"messages": [{"role": "user", "content": "What is 2+2?"}], "reference": "4"}


def test_jsonl_bad_lines_are_reported_with_their_line_and_the_rest_kept(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD),  # 1
        "{not json",  # 2
        json.dumps({"reference": "no input"}),  # 3
        json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}),  # 4
        json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}),
        json.dumps({"input": "Capital of France?", "split": "train"}),  # 6
        json.dumps({"input": "Capital of Spain?", "metadata": "not an object"}),  # 7
        "",  # 8: blank lines are skipped, not errors
        json.dumps({"input": "Capital of Italy?", "expected": "Rome", "split": "holdout"}),  # 9
        json.dumps([1, 2]),  # 10
        json.dumps({"messages": []}),  # 11
        json.dumps({"input": "Capital of Peru?", "metadata": []}),  # 12
    ]
    path = _write_lines(tmp_path / "cases.jsonl", lines)
    report = read_jsonl_cases(path)
    assert [c.user_input for c in report.cases] == ["What is 2+2?", "Capital of Italy?"]
    assert [c.reference for c in report.cases] == ["4", "Rome"]
    assert report.cases[1].split == "holdout"
    where = {int(e.split(":")[1]): e for e in report.errors}
    assert sorted(where) == [2, 3, 4, 5, 6, 7, 10, 11, 12]
    assert all(e.startswith(f"{path}:") for e in report.errors)
    assert "not JSON" in where[2]
    assert "needs 'messages'" in where[3]
    assert "role" in where[4] and "'wizard'" in where[4]
    assert "content: expected text" in where[5]
    assert "split" in where[6] and "'train'" in where[6]
    assert "metadata: expected an object" in where[7]
    assert "expected a JSON object" in where[10]
    assert "non-empty list" in where[11]
    assert "metadata: expected an object" in where[12]
    # a bad share is the caller's mistake, not one per line
    with pytest.raises(ValueError, match="holdout share"):
        read_jsonl_cases(path, holdout=1.5)


def test_jsonl_input_system_and_aliases(tmp_path: Path) -> None:
    lines = [
        json.dumps({"input": "Hello", "system": "Be brief.", "expected": "Hi"}),
        # system replaces the messages' own system prompt
        json.dumps(
            {
                "messages": [system_message("Old prompt."), user_message("Bye")],
                "system": "Be kind.",
                "output": {"answer": "Goodbye"},
                "metadata": {"team": "billing", "priority": 2},
                "trace_id": "abc",
            }
        ),
        # the same input as line 1: a repeat, kept once
        json.dumps(
            {"messages": [system_message("Be brief."), user_message("Hello")], "reference": "Hey"}
        ),
    ]
    report = read_jsonl_cases(_write_lines(tmp_path / "c.jsonl", lines), holdout=0.0)
    assert report.errors == [] and report.num_duplicates == 1
    first, second = report.cases
    assert list(first.messages) == [system_message("Be brief."), user_message("Hello")]
    assert first.reference == "Hi" and first.system_prompt == "Be brief."
    assert list(second.messages) == [system_message("Be kind."), user_message("Bye")]
    assert json.loads(second.reference or "") == {"answer": "Goodbye"}
    assert dict(second.metadata) == {"team": "billing", "priority": "2"}
    assert second.source_trace_id == "abc"
    assert {first.split, second.split} == {"test"}


# --- versions ------------------------------------------------------------------------------------


def _case(text: str, reference: str | None = None, split: str = "test") -> Case:
    messages = (user_message(text),)
    return Case(case_id_of(messages), messages, reference=reference, split=split)


def test_concurrent_writers_get_a_version_each(tmp_path: Path) -> None:
    cases = [[_case(f"writer {w} case {i}") for i in range(20)] for w in range(4)]

    def write(batch: list[Case]) -> int:
        return write_dataset(open_lake(tmp_path), tmp_path, "default", "qa", batch).version

    with ThreadPoolExecutor(max_workers=4) as pool:
        versions = list(pool.map(write, cases))
    assert sorted(versions) == [1, 2, 3, 4]
    conn = open_lake(tmp_path)
    for batch, version in zip(cases, versions, strict=True):
        assert read_dataset(conn, "default", "qa", version).cases == batch  # nothing mixed


def test_versions_append_and_lookup(tmp_path: Path) -> None:
    conn = open_lake(tmp_path)
    a, b, c = _case("a", "A"), _case("b", "B", split="holdout"), _case("c")
    v1 = write_dataset(conn, tmp_path, "default", "qa", [a, b], now=T0)
    v2 = write_dataset(conn, tmp_path, "default", "qa", [c], now=T0 + timedelta(hours=1))
    v3 = write_dataset(
        conn, tmp_path, "default", "qa", [b, c, a], append=True, now=T0 + timedelta(hours=2)
    )
    assert (v1.version, v2.version, v3.version) == (1, 2, 3)
    assert read_dataset(conn, "default", "qa", 1).cases == [a, b]
    assert read_dataset(conn, "default", "qa", 2).cases == [c]
    # append carries version 2 over, then adds what is new (a); b and c are repeats
    latest = read_dataset(conn, "default", "qa")
    assert latest.version == 3 and latest.cases == [c, b, a]
    assert latest.time == T0 + timedelta(hours=2)
    assert read_dataset(conn, "default", "qa", 2).split("test") == [c]
    with pytest.raises(LookupError, match="no version 7"):
        read_dataset(conn, "default", "qa", 7)
    with pytest.raises(LookupError, match="no dataset named 'nope'"):
        read_dataset(conn, "default", "nope")
    with pytest.raises(LookupError):  # datasets belong to a project
        read_dataset(conn, "other", "qa")
    with pytest.raises(ValueError, match="no cases"):
        write_dataset(conn, tmp_path, "default", "empty", [])
    with pytest.raises(ValueError, match="dataset name"):
        write_dataset(conn, tmp_path, "default", "bad name", [a])
    write_dataset(conn, tmp_path, "default", "other-set", [a], now=T0)
    listed = list_datasets(conn, "default")
    assert listed.rows() == [
        ("other-set", 1, T0, 1, 0, 1, 0),
        ("qa", 3, T0 + timedelta(hours=2), 3, 1, 2, 0),
        ("qa", 2, T0 + timedelta(hours=1), 1, 0, 0, 0),
        ("qa", 1, T0, 2, 1, 2, 0),
    ]
    assert list_datasets(conn, "other").is_empty()


def test_split_of_is_stable_nested_and_close_to_the_share() -> None:
    rng = random.Random(5)
    ids = [case_id_of([user_message(f"question {rng.random()}")]) for _ in range(10_000)]
    held = [split_of(i, 0.2) == "holdout" for i in ids]
    assert abs(sum(held) / len(ids) - 0.2) <= 0.02
    assert held == [split_of(i, 0.2) == "holdout" for i in ids]  # the same every time
    # a larger share only adds cases: a held-out case stays held out
    wider = [split_of(i, 0.3) == "holdout" for i in ids]
    assert all(w for h, w in zip(held, wider, strict=True) if h)
    assert abs(sum(wider) / len(ids) - 0.3) <= 0.02
    assert {split_of(i, 0.0) for i in ids} == {"test"}
    assert {split_of(i, 1.0) for i in ids} == {"holdout"}
    with pytest.raises(ValueError, match="holdout share"):
        split_of(ids[0], 1.5)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("support", ("support", None)),
        ("support@3", ("support", 3)),
        ("a.b-c_d@12", ("a.b-c_d", 12)),
    ],
)
def test_parse_dataset_ref(ref: str, expected: tuple[str, int | None]) -> None:
    assert parse_dataset_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("support@0", "positive integer"),
        ("support@-1", "positive integer"),
        ("support@v2", "positive integer"),
        ("support@1.5", "positive integer"),
        ("@3", "dataset name"),
        ("-support", "dataset name"),
        ("has space", "dataset name"),
        ("x" * 65, "dataset name"),
    ],
)
def test_parse_dataset_ref_errors(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dataset_ref(ref)


def test_jsonl_line_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"input": "café au lait?", "reference": "oui"}).encode()
    bad = b'{"input": "caf\xe9"}'  # Latin-1, not UTF-8
    path.write_bytes(good + b"\n" + bad + b"\n" + good.replace(b"lait", b"the") + b"\n")
    imported = read_jsonl_cases(path)
    assert [c.user_input for c in imported.cases] == ["café au lait?", "café au the?"]
    assert imported.errors == [f"{path}:2: not UTF-8 (byte 15 of the line)"]
