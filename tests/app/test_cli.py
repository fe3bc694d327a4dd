"""The ``flywheel`` command: help everywhere, ingest with its report, re-ingest, demo loading once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from app.cli import build_parser, main
from store.derived import CACHE_DIR, DAY_PREFIX, DERIVED_DIR, KINDS

GOLDEN = Path(__file__).parent.parent / "golden"
SUBCOMMANDS = (
    "ingest",
    "serve",
    "report",
    "hash-password",
    "compact",
    "sample-data",
    "demo",
    "dashboard",
    "alerts",
    "backfill-guardrails",
)


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
    # the query work is kept before the command returns: a past day in one file per kind (the
    # load is over, so its days count as settled at once)
    days = {p.name for p in (data / "spans").glob("date=*")}
    for kind in KINDS:
        kept = list((data / CACHE_DIR / DERIVED_DIR).glob(f"*/{kind}/*/*"))
        assert {p.parent.name for p in kept} == days, kind
        assert all(p.name.startswith(DAY_PREFIX) for p in kept), kind
    assert f"kept query work: {len(KINDS) * len(days)} files" in out
    assert main(["ingest", "--data-dir", str(data), *map(str, files)]) == 0
    assert "(8 already present, skipped)" in capsys.readouterr().out
    assert _count(data) == 8


def test_sample_data_writes_every_format_and_they_ingest_to_the_same_spans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sample"
    assert (
        main(["sample-data", "--traces", "12", "--days", "2", "--seed", "3", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "feedback.jsonl.gz", "traces.jsonl.gz", "traces.otlp.jsonl.gz", "traces.pb.gz"
    ]  # fmt: skip
    num_spans = int(printed.splitlines()[-1].split(" traces, ")[1].split(" spans")[0])
    assert printed.splitlines()[-1].startswith("12 traces, ")
    counts = {}
    for name in ("traces.pb.gz", "traces.otlp.jsonl.gz", "traces.jsonl.gz"):
        data = tmp_path / name
        assert main(["ingest", "--data-dir", str(data), str(out / name)]) == 0
        counts[name] = _count(data)
    assert set(counts.values()) == {num_spans} and num_spans > 12
    assert main(["sample-data", "--out", str(out), "--formats", "pb,xml"]) == 2
    assert "unknown formats ['xml']" in capsys.readouterr().err


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_acknowledges_a_batch_that_is_then_in_the_lake(tmp_path: Path) -> None:
    """``flywheel serve`` end to end: ready line, an OTLP/JSON POST, a clean stop on SIGTERM."""
    data, port = tmp_path / "lake", _free_port()
    env = os.environ | {"FLYWHEEL_DATA_DIR": str(data), "FLYWHEEL_PROJECT": "web"}
    env |= {"FLYWHEEL_TOKENS": "", "FLYWHEEL_TOKENS_FILE": "", "FLYWHEEL_DECODE_WORKERS": "0"}
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--grpc-port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert f"OTLP/HTTP on http://127.0.0.1:{port}" in ready
        assert "gRPC" not in ready and "project 'web'" in ready
        body = (GOLDEN / "otlp_spec_example.in.json").read_bytes()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    # Stopping flushes the log, so the acknowledged span is in Parquet under the project.
    files = sorted(str(p) for p in (data / "spans").glob("*/*.parquet"))
    rows = duckdb.sql(f"SELECT project, name FROM read_parquet({files!r})").fetchall()
    expected = json.loads(body)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert sorted(rows) == sorted(("web", span["name"]) for span in expected)


def test_serve_refuses_a_bad_setting_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("FLYWHEEL_MAX_BODY_BYTES", "lots")
    assert main(["serve", "--port", "0"]) == 2
    assert "FLYWHEEL_MAX_BODY_BYTES='lots': not a number" in capsys.readouterr().err


def test_ingest_applies_the_redaction_policy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "spans.jsonl"
    record = {
        "type": "span",
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "name": "chat",
        "start_time": 1_790_000_000_000_000_000,
        "end_time": 1_790_000_001_000_000_000,
        "attributes": {"gen_ai.operation.name": "chat", "input.value": "I am ann@example.com"},
    }
    source.write_text(json.dumps(record) + "\n")
    policy = tmp_path / "redaction.toml"
    policy.write_text('[default]\npii = "mask"\n')
    monkeypatch.setenv("FLYWHEEL_REDACTION_FILE", str(policy))
    data = tmp_path / "lake"
    assert main(["ingest", "--data-dir", str(data), str(source)]) == 0
    assert "1 guardrail results" in capsys.readouterr().out
    files = [str(p) for p in (data / "spans").glob("*/*.parquet")]
    [(text,)] = duckdb.sql(f"SELECT input_text FROM read_parquet({files!r})").fetchall()
    assert text == "I am <EMAIL_1>"
    assert _count(data, "guardrails") == 1
    # a policy Flywheel cannot use stops the command before anything is read
    policy.write_text('[default]\npii = "blur"\n')
    assert main(["ingest", "--data-dir", str(tmp_path / "other"), str(source)]) == 2
    err = capsys.readouterr().err
    assert f"FLYWHEEL_REDACTION_FILE {policy}: default.pii = 'blur'" in err
    assert not (tmp_path / "other" / "spans").exists()


def test_stopping_the_dashboard_command_stops_the_server(tmp_path: Path) -> None:
    """``flywheel dashboard`` becomes the Streamlit server, so a signal to it leaves no orphan."""
    port = _free_port()
    env = os.environ | {"FLYWHEEL_DATA_DIR": str(tmp_path / "lake")}
    command = [sys.executable, "-m", "app.cli", "dashboard", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the dashboard did not start")
    finally:
        process.terminate()
        process.wait(timeout=30)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
