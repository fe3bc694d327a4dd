"""The ``flywheel`` command: help everywhere, ingest with its report, re-ingest, demo loading once."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from app.cli import build_parser, main

GOLDEN = Path(__file__).parent.parent / "golden"
SUBCOMMANDS = ("ingest", "compact", "sample-data", "demo", "dashboard")


def _count(data_dir: Path, table: str = "spans") -> int:
    files = sorted(str(p) for p in (data_dir / table).glob("*/*.parquet"))
    if not files:
        return 0
    return int(duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0])


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: flywheel {command}" in capsys.readouterr().out


def test_parser_lists_the_subcommands() -> None:
    help_text = build_parser().format_help()
    assert all(command in help_text for command in SUBCOMMANDS)


def test_ingest_reports_then_reingest_adds_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "lake"
    files = [
        GOLDEN / "openllmetry.in.json",
        GOLDEN / "jaeger_general.in.pb",
        GOLDEN / "otel_genai_flat_attributes.in.jsonl",
    ]
    assert main(["ingest", "--data-dir", str(data), *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert "ingested 8 spans from 3 file(s)" in out
    assert _count(data) == 8
    assert main(["ingest", "--data-dir", str(data), *map(str, files)]) == 0
    assert "(8 already present, skipped)" in capsys.readouterr().out
    assert _count(data) == 8


def test_ingest_a_folder_with_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.json").write_bytes((GOLDEN / "otel_genai_util.in.json").read_bytes())
    lines = [
        json.dumps(
            {
                "trace_id": "a" * 32,
                "span_id": "b" * 16,
                "name": "ok",
                "start_time": 1,
                "end_time": 2,
            }
        ),
        "{oops",
    ]
    (folder / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "notes.txt").write_text("ignored: not an ingestible file type")
    data = tmp_path / "lake"
    assert main(["ingest", "--data-dir", str(data), str(folder)]) == 1
    captured = capsys.readouterr()
    assert "mixed.jsonl: line 2: invalid JSON" in captured.err
    assert "ingested 2 spans from 2 file(s)" in captured.out and "1 rejected" in captured.out
    assert _count(data) == 2


def test_ingest_into_a_project(tmp_path: Path) -> None:
    data = tmp_path / "lake"
    assert (
        main(
            [
                "ingest",
                "--data-dir",
                str(data),
                "--project",
                "checkout",
                str(GOLDEN / "openinference.in.json"),
            ]
        )
        == 0
    )
    files = [str(p) for p in (data / "spans").glob("*/*.parquet")]
    assert duckdb.sql(f"SELECT DISTINCT project FROM read_parquet({files!r})").fetchall() == [
        ("checkout",)
    ]


def test_bad_project_name_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "ingest",
                "--data-dir",
                str(tmp_path),
                "--project",
                "no spaces!",
                str(GOLDEN / "openinference.in.json"),
            ]
        )
        == 2
    )
    assert "--project 'no spaces!'" in capsys.readouterr().err


def test_demo_loads_the_sample_data_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "lake"
    assert main(["demo", "--no-dashboard", "--data-dir", str(data)]) == 0
    spans, feedback = _count(data), _count(data, "feedback")
    assert spans > 20_000 and feedback > 500
    assert main(["demo", "--no-dashboard", "--data-dir", str(data)]) == 0
    assert "already has spans" in capsys.readouterr().out
    assert (_count(data), _count(data, "feedback")) == (spans, feedback)


def test_compact_keeps_every_row_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "lake"
    for name in ("openllmetry.in.json", "otel_genai_util.in.json", "openinference.in.json"):
        assert main(["ingest", "--data-dir", str(data), str(GOLDEN / name)]) == 0
    before = _count(data)
    segments_before = len(list((data / "spans").glob("*/*.parquet")))
    assert main(["compact", "--data-dir", str(data), "--tables", "spans"]) == 0
    assert _count(data) == before
    assert len(list((data / "spans").glob("*/*.parquet"))) < segments_before
