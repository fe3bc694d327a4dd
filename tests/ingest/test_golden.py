"""Golden ingest cases: ``tests/golden/<case>.in.{json,jsonl,pb}`` -> ``<case>.out.jsonl``.

The OTLP/JSON form and the protobuf form of each case must decode to identical rows, and both
must equal the reviewed golden output. ``pytest --update-golden`` rewrites the outputs (and the
``.in.pb`` files, made from the JSON by an independent converter); the guard test then fails so
a run that rewrote goldens can never pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest.files import iter_file
from ingest.otlp import decode_otlp_json, decode_otlp_protobuf
from tests.ingest.otlp_convert import json_to_protobuf

GOLDEN = Path(__file__).parent.parent / "golden"
CASES = sorted(p.name.split(".in.")[0] for p in GOLDEN.glob("*.in.*") if not p.name.endswith(".pb"))
OTLP_CASES = [
    c
    for c in CASES
    if (GOLDEN / f"{c}.in.json").exists()
    and "resourceSpans" in (GOLDEN / f"{c}.in.json").read_text()
]


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts, times as integer unix nanoseconds (datetime stops at µs)."""
    nanos = {k: table[k].cast(pa.int64()).to_pylist() for k in ("start_time", "end_time")}
    event_nanos = (
        [
            [
                e.cast(pa.int64()).as_py()
                for e in (events.values.field("time") if events.is_valid else [])
            ]
            for events in table["events"].combine_chunks()
        ]
        if table.num_rows
        else []
    )
    rows = []
    for i, row in enumerate(table.to_pylist()):
        row["start_time"], row["end_time"] = nanos["start_time"][i], nanos["end_time"][i]
        for event, time_ns in zip(row["events"] or [], event_nanos[i], strict=True):
            event["time"] = time_ns
        rows.append(row)
    return rows


def _decode_case(case: str) -> tuple[pa.Table, list[str]]:
    path = next(p for p in GOLDEN.glob(f"{case}.in.*") if not p.name.endswith(".pb"))
    batches = list(iter_file(path))
    table = pa.concat_tables([b.spans for b in batches])
    errors = [f"{e.location}: {e.reason}" for b in batches for e in b.errors]
    return table, errors


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, update_golden: bool) -> None:
    table, errors = _decode_case(case)
    out = GOLDEN / f"{case}.out.jsonl"
    rendered = "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in _rows(table)
    )
    if errors:
        rendered += json.dumps({"errors": errors}) + "\n"
    if update_golden:
        out.write_text(rendered, encoding="utf-8")
    assert out.exists(), f"no golden output for {case}; run pytest --update-golden and review it"
    assert rendered == out.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", OTLP_CASES)
def test_protobuf_and_json_give_identical_rows(case: str, update_golden: bool) -> None:
    text = (GOLDEN / f"{case}.in.json").read_bytes()
    pb_path = GOLDEN / f"{case}.in.pb"
    if update_golden:
        pb_path.write_bytes(json_to_protobuf(json.loads(text)).SerializeToString())
    from_json = decode_otlp_json(text)
    from_pb = decode_otlp_protobuf(pb_path.read_bytes())
    assert from_json.spans.num_rows > 0
    assert from_json.spans.equals(from_pb.spans)
    assert [str(e) for e in from_json.errors] == [str(e) for e in from_pb.errors] == []


def test_update_golden_is_off(update_golden: bool) -> None:
    assert not update_golden, (
        "--update-golden rewrote the goldens: review the diff, then rerun without it"
    )
