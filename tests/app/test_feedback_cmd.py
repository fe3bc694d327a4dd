"""``flywheel export preferences|sft`` and ``flywheel import-metrics``: the exported pairs match
the feedback they came from exactly."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from app.cli import main
from tests.analytics.feedback_world import Turn, World, ingest_world

WINDOW = ["--since", "2026-10-01", "--until", "2026-10-30"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    data_dir = tmp_path_factory.mktemp("export") / "lake"
    return ingest_world(data_dir, num_sessions=1200), data_dir


def _read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _expected_regeneration_pairs(turns: list[Turn]) -> set[tuple[str, str, str]]:
    pairs = set()
    for first, second in pairwise(turns):
        if not first.regenerated or first.session_id != second.session_id:
            continue
        up = [t for t in (first, second) if t.thumbs == 1]
        if len(up) != 1:
            continue
        chosen = up[0]
        rejected = second if chosen is first else first
        pairs.add((rejected.input_text, chosen.output_text, rejected.output_text))
    return pairs


def test_preference_pairs_match_their_source_feedback(
    world: tuple[World, Path], tmp_path: Path
) -> None:
    generated, data_dir = world
    out = tmp_path / "pairs.jsonl"
    assert (
        main(["export", "preferences", "--data-dir", str(data_dir), *WINDOW, "--out", str(out)])
        == 0
    )
    rows = _read(out)
    edits = {(t.input_text, t.edit, t.output_text): t.trace_id for t in generated.turns if t.edit}
    got_edits = {
        (r["prompt"], r["chosen"], r["rejected"]): r["metadata"]["trace_id"]  # type: ignore[index]
        for r in rows
        if r["metadata"]["source"] == "edit"  # type: ignore[index]
    }
    assert got_edits == edits and edits
    regenerations = {
        (r["prompt"], r["chosen"], r["rejected"])
        for r in rows
        if r["metadata"]["source"] == "regeneration"  # type: ignore[index]
    }
    assert regenerations == _expected_regeneration_pairs(generated.turns) and regenerations
    # each pair once
    assert len({(r["prompt"], r["chosen"], r["rejected"]) for r in rows}) == len(rows)


def test_sources_filter_and_sft_examples(world: tuple[World, Path], tmp_path: Path) -> None:
    generated, data_dir = world
    out = tmp_path / "edits.jsonl"
    args = ["export", "preferences", "--data-dir", str(data_dir), *WINDOW, "--source", "edit"]
    assert main([*args, "--out", str(out)]) == 0
    assert {r["metadata"]["source"] for r in _read(out)} == {"edit"}  # type: ignore[index]
    sft = tmp_path / "sft.jsonl"
    assert main(["export", "sft", "--data-dir", str(data_dir), *WINDOW, "--out", str(sft)]) == 0
    got = {(r["prompt"], r["completion"]) for r in _read(sft)}
    voted_up = {(t.input_text, t.output_text) for t in generated.turns if t.thumbs == 1}
    assert got == voted_up


def test_nothing_to_export_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "empty"
    assert main(["export", "sft", "--data-dir", str(data_dir), *WINDOW]) == 1
    assert capsys.readouterr().out == ""


def test_import_metrics_reports_bad_rows_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "daily.csv"
    source.write_text("date,metric,value\n2026-10-01,revenue,100\n2026-10-02,revenue,n/a\n")
    data_dir = tmp_path / "lake"
    assert main(["import-metrics", "--data-dir", str(data_dir), str(source)]) == 1
    captured = capsys.readouterr()
    assert "1 values (1 new), 1 rejected" in captured.out
    assert "line 3: value 'n/a' is not a number" in captured.err
    assert main(["import-metrics", "--data-dir", str(data_dir), str(source)]) == 1
    assert "(0 new)" in capsys.readouterr().out
    assert main(["import-metrics", "--data-dir", str(data_dir), str(tmp_path / "x.txt")]) == 2
