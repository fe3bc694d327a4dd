"""``flywheel eval`` end to end through ``app.cli.main`` with ``--data-dir`` and ``FakeOpenAI``:
import, list, show, create from traces, run (recorded, endpoint, resumed), runs, compare."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from analytics.cost import install_prices
from app.cli import main
from app.eval_dataset_cmd import filter_from_text
from evals.datasets import read_dataset
from evals.evaluators import EvaluatorContext, parse_evaluator
from evals.replay import list_runs, read_results, replay, start_run
from evals.targets import OpenAITarget, TargetConfig
from store.catalog import open_catalog
from store.writer import LakeWriter
from tests.evals.openai_server import FakeOpenAI, last_user_text
from tests.evals.support_world import Planted, write_support_world

KEY_ENV = "FLYWHEEL_TEST_FAKE_OPENAI_KEY"
NUM_CASES = 40
WRONG = frozenset(range(0, NUM_CASES, 5)) | frozenset(range(1, NUM_CASES, 5)) | {2, 7, 12}
REFERENCES = {f"cli question {i:02d}": f"Answer {i:02d}." for i in range(NUM_CASES)}


def good(messages: list[dict[str, Any]]) -> str:
    return REFERENCES[last_user_text(messages)]


def bad(messages: list[dict[str, Any]]) -> str:
    text = last_user_text(messages)
    return "No idea." if int(text.rsplit(" ", 1)[1]) in WRONG else REFERENCES[text]


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``flywheel ARGS``: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def run_id_of(stdout: str) -> str:
    match = re.search(r"^run (run-\S+): ", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def write_jsonl(path: Path, items: list[Any]) -> Path:
    path.write_text(
        "\n".join(item if isinstance(item, str) else json.dumps(item) for item in items) + "\n"
    )
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers={"good": good, "bad": bad}) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    for name in ("FLYWHEEL_DATA_DIR", "FLYWHEEL_PROJECT", "FLYWHEEL_PRICE_FILE"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Runs:
    data_dir: Path
    baseline: str
    good: str
    bad: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, server: FakeOpenAI) -> Iterator[Runs]:
    """A 40-case dataset and three runs: the references, a model that gives them, a worse one."""
    root = tmp_path_factory.mktemp("eval-cli")
    data_dir = str(root / "lake")
    lines = [{"input": q, "reference": r} for q, r in REFERENCES.items()]
    source = write_jsonl(root / "qa.jsonl", lines)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, "sk-test")
        code, out, _ = cli(
            "eval", "dataset", "import", "qa", str(source), "--holdout", "0", "--data-dir", data_dir
        )
        assert code == 0, out
        common = ["--dataset", "qa", "--data-dir", data_dir]
        code, out, err = cli("eval", "run", *common, "--recorded", "reference", "--name", "ref")
        assert code == 0, err
        baseline = run_id_of(out)
        ids = []
        for model in ("good", "bad"):
            code, out, err = cli(
                "eval",
                "run",
                *common,
                "--base-url",
                server.base_url,
                "--model",
                model,
                "--api-key-env",
                KEY_ENV,
                "--retries",
                "0",
                "-e",
                "exact",
                "-e",
                "contains:answer",
            )
            assert code == 0, err
            ids.append(run_id_of(out))
    yield Runs(Path(data_dir), baseline, *ids)


# --- datasets --------------------------------------------------------------------------------


def test_import_reports_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "cases.jsonl",
        [
            {"input": "one", "reference": "1"},
            {"input": "two", "expected": "2"},
            "{oops",
            {"messages": [{"role": "robot", "content": "x"}]},
            {"input": "one", "reference": "again"},
        ],
    )
    data_dir = str(tmp_path / "lake")
    code, out, err = cli("eval", "dataset", "import", "mixed", str(source), "--data-dir", data_dir)
    assert code == 1
    assert f"rejected: {source}:3: not JSON" in err
    assert f"rejected: {source}:4: messages[0].role" in err
    assert f"{source}: 2 cases, 1 repeated, 2 rejected" in out
    assert "wrote mixed@1: 2 cases" in out
    code, out, _ = cli("eval", "dataset", "show", "mixed", "--data-dir", data_dir)
    shown = [json.loads(line) for line in out.splitlines()]
    assert [(s["messages"][-1]["content"], s["reference"]) for s in shown] == [
        ("one", "1"),
        ("two", "2"),
    ]
    # a file with nothing good writes nothing
    empty = write_jsonl(tmp_path / "bad.jsonl", ["{oops", {"reference": "x"}])
    code, _, err = cli("eval", "dataset", "import", "none", str(empty), "--data-dir", data_dir)
    assert code == 1 and "no valid cases" in err
    code, _, err = cli("eval", "dataset", "show", "none", "--data-dir", data_dir)
    assert code == 1 and "no dataset named 'none'" in err
    missing = str(tmp_path / "missing.jsonl")
    code, _, err = cli("eval", "dataset", "import", "x", missing, "--data-dir", data_dir)
    assert code == 2 and "missing.jsonl" in err


def test_dataset_list_and_show(runs: Runs, tmp_path: Path) -> None:
    data_dir = str(runs.data_dir)
    code, out, _ = cli("eval", "dataset", "list", "--data-dir", data_dir)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["dataset", "version", "cases", "holdout"]
    assert row.split()[:4] == ["qa", "1", "40", "0"]
    code, out, _ = cli("eval", "dataset", "show", "qa@1", "--data-dir", data_dir)
    shown = [json.loads(line) for line in out.splitlines()]
    assert {s["messages"][0]["content"]: s["reference"] for s in shown} == REFERENCES
    assert {s["split"] for s in shown} == {"test"}
    code, out, _ = cli(
        "eval", "dataset", "show", "qa", "--split", "holdout", "--data-dir", data_dir
    )
    assert (code, out) == (0, "")
    code, _, err = cli("eval", "dataset", "show", "qa@2", "--data-dir", data_dir)
    assert code == 1 and "has no version 2" in err
    code, _, err = cli("eval", "dataset", "show", "bad name", "--data-dir", data_dir)
    assert code == 1 and "dataset name" in err
    code, out, _ = cli("eval", "dataset", "list", "--data-dir", str(tmp_path / "empty"))
    assert (code, out.strip()) == (0, "no datasets in project 'default'")


@pytest.fixture(scope="module")
def traces_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Planted], Path]:
    data_dir = tmp_path_factory.mktemp("eval-cli-traces") / "lake"
    return {p.key: p for p in write_support_world(data_dir)}, data_dir


WINDOW = ["--since", "2026-05-04", "--until", "2026-05-05"]


def _show(data_dir: Path, ref: str) -> list[dict[str, Any]]:
    code, out, err = cli("eval", "dataset", "show", ref, "--data-dir", str(data_dir))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_create_from_a_copied_traces_page_url(
    traces_lake: tuple[dict[str, Planted], Path],
) -> None:
    planted, data_dir = traces_lake
    url = "http://localhost:8501/traces?project=default&status=error&q=parcel&page=2"
    code, out, err = cli(
        "eval", "dataset", "create", "errors", "--filter", url, "--data-dir", str(data_dir), *WINDOW
    )
    assert code == 0, err
    assert out.splitlines()[0] == (
        "1 matching requests: 1 cases, 0 repeated inputs, 0 without a model call, "
        "0 without input messages"
    )
    [case] = _show(data_dir, "errors")
    p = planted["parcel-error"]
    assert case["messages"] == p.messages
    assert case["trace_id"] == p.trace_id and case["reference"] is None
    assert case["metadata"]["status"] == "ERROR" and case["metadata"]["feedback"] == "down"


def test_create_with_a_query_string_route_and_append(
    traces_lake: tuple[dict[str, Planted], Path],
) -> None:
    planted, data_dir = traces_lake
    args = ["--data-dir", str(data_dir), *WINDOW]
    code, out, _ = cli("eval", "dataset", "create", "support", "--filter", "q=refund", *args)
    assert code == 0
    assert out.splitlines()[0].startswith("2 matching requests: 1 cases, 1 repeated inputs")
    [case] = _show(data_dir, "support@1")
    assert case["reference"] == planted["refund-new"].output
    # the route a copied URL carries narrows too; --append keeps version 1's case
    code, out, _ = cli(
        "eval",
        "dataset",
        "create",
        "support",
        "--append",
        "--filter",
        "route=POST%20/chat&feedback=thumbs_down",
        *args,
    )
    assert code == 0, out
    assert "3 matching requests: 3 cases" in out and "wrote support@2: 4 cases" in out
    shown = _show(data_dir, "support@2")
    expected = ["refund-new", "two-calls", "multi-turn", "parcel-error"]
    assert [s["trace_id"] for s in shown] == [planted[k].trace_id for k in expected]
    code, out, err = cli("eval", "dataset", "create", "nothing", "--filter", "q=zebra", *args)
    assert code == 1 and "no cases" in err and "0 matching requests" in out


def test_create_on_an_empty_lake_says_so(tmp_path: Path) -> None:
    code, _, err = cli("eval", "dataset", "create", "x", "--data-dir", str(tmp_path / "lake"))
    assert code == 1 and str(tmp_path / "lake") in err


# --- runs and comparisons ------------------------------------------------------------------------


def test_runs_recorded_and_endpoint(runs: Runs, server: FakeOpenAI) -> None:
    conn = open_catalog(runs.data_dir)
    results = read_results(conn, "default", [runs.baseline, runs.good, runs.bad])
    for run_id in (runs.baseline, runs.good, runs.bad):
        assert results.filter(results["run_id"] == run_id).height == NUM_CASES
    outputs = {
        (r["run_id"], r["output"]) for r in results.to_dicts() if r["run_id"] == runs.baseline
    }
    assert {o for _, o in outputs} == set(REFERENCES.values())
    assert all(server.num_calls(q) == 2 for q in REFERENCES)  # good and bad, not the recorded
    code, out, _ = cli("eval", "runs", "--data-dir", str(runs.data_dir))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {runs.baseline, runs.good, runs.bad}
    assert "recorded: reference" in lines[runs.baseline]
    assert re.search(r"\bbad\s+40/40\s+0\b", lines[runs.bad])
    code, out, _ = cli("eval", "runs", "--data-dir", str(runs.data_dir), "--project", "other")
    assert (code, out.strip()) == (0, "no eval runs in project 'other'")


def test_compare_fails_on_a_worse_candidate_only(runs: Runs) -> None:
    data_dir = ["--data-dir", str(runs.data_dir)]
    gate = ["--baseline", runs.baseline, "--fail-if-worse", "exact", "--fail-if-worse", "answered"]
    code, out, err = cli("eval", "compare", runs.bad, *gate, *data_dir)
    assert code == 1
    drop = len(WRONG) / NUM_CASES
    assert f"REGRESSION: exact -{drop:.3f}" in err and "answered" not in err
    assert f"## {runs.bad} vs ref" in out
    assert re.search(rf"\| exact \| 40 \| {1 - drop:.3f} \| 1.000 \| -{drop:.3f} ", out)
    assert f"| 0/{len(WRONG)}/{NUM_CASES - len(WRONG)} |" in out
    assert "### Regressed cases (worst 5)" in out and "+No idea." in out
    code, out, err = cli("eval", "compare", runs.good, *gate, *data_dir)
    assert code == 0, err
    assert "REGRESSION" not in err and "Regressed cases" not in out
    # a run can be named by its name (the newest run with it), as a CI script would
    by_name = ["--baseline", "ref", "--fail-if-worse", "exact"]
    assert cli("eval", "compare", runs.bad, *by_name, *data_dir)[0] == 1


def test_compare_json_has_the_numbers(runs: Runs) -> None:
    code, out, _ = cli(
        "eval",
        "compare",
        runs.bad,
        "--baseline",
        runs.baseline,
        "--format",
        "json",
        "--data-dir",
        str(runs.data_dir),
    )
    assert code == 0  # no --fail-if-worse: nothing gates
    report = json.loads(out)
    assert report["regressions"] == ["exact"]
    exact = next(e for e in report["evaluators"] if e["evaluator"] == "exact")
    assert exact["num_pairs"] == NUM_CASES
    assert exact["mean_difference"] == pytest.approx(-len(WRONG) / NUM_CASES)
    assert (exact["wins"], exact["losses"], exact["ties"]) == (0, len(WRONG), 40 - len(WRONG))
    assert exact["verdict"] == "worse" and exact["p_value"] < 0.05
    assert len(exact["interval"]) == 2
    assert len(report["regressed_cases"]) == len(WRONG)
    assert {c["candidate_output"] for c in report["regressed_cases"]} == {"No idea."}
    assert report["performance"]["num_pairs"] == NUM_CASES


def test_compare_errors(runs: Runs) -> None:
    data_dir = ["--data-dir", str(runs.data_dir)]
    code, _, err = cli(
        "eval",
        "compare",
        runs.bad,
        "--baseline",
        runs.baseline,
        "--fail-if-worse",
        "judge",
        *data_dir,
    )
    assert code == 2 and "no evaluator 'judge'" in err
    code, _, err = cli("eval", "compare", "run-nope", "--baseline", runs.baseline, *data_dir)
    assert code == 2 and "no eval run with id or name 'run-nope'" in err


def test_run_argument_errors(runs: Runs, server: FakeOpenAI) -> None:
    data_dir = ["--data-dir", str(runs.data_dir)]
    code, _, err = cli("eval", "run", "--recorded", "reference", *data_dir)
    assert code == 2 and "--dataset" in err
    code, _, err = cli("eval", "run", "--dataset", "qa", *data_dir)
    assert code == 2 and "--base-url and --model" in err
    code, _, err = cli(
        "eval", "run", "--dataset", "qa", "--recorded", "reference", "-e", "nope", *data_dir
    )
    assert code == 2 and "unknown evaluator 'nope'" in err
    code, _, err = cli("eval", "run", "--dataset", "qa@9", "--recorded", "reference", *data_dir)
    assert code == 1 and "no version 9" in err
    code, _, err = cli("eval", "run", "--resume", "run-nope", *data_dir)
    assert code == 1 and "no eval run with id or name 'run-nope'" in err
    # each refused before a run is recorded
    before = list_runs(open_catalog(runs.data_dir), "default").height
    recorded = ["eval", "run", "--dataset", "qa", "--recorded", "reference", *data_dir]
    code, _, err = cli(*recorded, "--concurrency", "0")
    assert code == 2 and "--concurrency must be at least 1" in err
    code, _, err = cli(*recorded, "--rate-limit", "0")
    assert code == 2 and "--rate-limit" in err and "positive" in err
    code, _, err = cli(*recorded, "--judge-rubric", "@/no/such/rubric.txt")
    assert code == 2 and "--judge-rubric" in err and "/no/such/rubric.txt" in err
    code, _, err = cli(*recorded, "-e", "exact", "-e", "exact")
    assert code == 2 and "two evaluators would store their scores as exact" in err
    code, _, err = cli("eval", "run", "--dataset", "qa", "--recorded", "run-nope", *data_dir)
    assert code == 1 and "--recorded: no eval run with id or name 'run-nope'" in err
    assert list_runs(open_catalog(runs.data_dir), "default").height == before


def test_the_default_split_is_test(tmp_path: Path) -> None:
    lines = [{"input": f"split question {i}", "reference": "x"} for i in range(50)]
    source = write_jsonl(tmp_path / "s.jsonl", lines)
    data_dir = ["--data-dir", str(tmp_path / "lake")]
    assert cli("eval", "dataset", "import", "s", str(source), "--holdout", "0.5", *data_dir)[0] == 0
    code, out, _ = cli("eval", "dataset", "show", "s", "--split", "test", *data_dir)
    num_test = len(out.splitlines())
    assert 0 < num_test < 50
    code, out, _ = cli("eval", "run", "--dataset", "s", "--recorded", "reference", *data_dir)
    assert code == 0 and f": {num_test} cases of s@1" in out
    code, out, _ = cli(
        "eval", "run", "--dataset", "s", "--recorded", "reference", "--split", "all", *data_dir
    )
    assert code == 0 and ": 50 cases of s@1" in out


def test_resume_calls_only_the_unfinished_cases(tmp_path: Path, server: FakeOpenAI) -> None:
    questions = [f"resume-cli-{i:02d}-question" for i in range(8)]
    lines = [{"input": q, "reference": q.upper()} for q in questions]
    source = write_jsonl(tmp_path / "r.jsonl", lines)
    data_dir = tmp_path / "lake"
    args = ["--data-dir", str(data_dir)]
    assert cli("eval", "dataset", "import", "r", str(source), "--holdout", "0", *args)[0] == 0
    # an interrupted run: 3 of 8 cases, as `eval run` would have recorded it
    conn = open_catalog(data_dir)
    install_prices(conn)
    dataset = read_dataset(conn, "default", "r")
    config = TargetConfig(server.base_url, "upper", api_key_env=KEY_ENV, max_retries=0)
    target = OpenAITarget(config)
    with LakeWriter(data_dir) as writer:
        run = start_run(writer, "default", dataset, target, ["exact"], split="test")
    stop = threading.Event()
    summary = replay(
        conn,
        data_dir,
        run,
        dataset,
        target,
        [parse_evaluator("exact", context=EvaluatorContext())],
        concurrency=1,
        progress=lambda done, total: stop.set() if done == 3 else None,
        stop=stop,
    )
    assert summary.interrupted and summary.num_called == 3
    order = [c.user_input for c in dataset.cases]
    assert [server.num_calls(q) for q in order] == [1, 1, 1, 0, 0, 0, 0, 0]

    code, out, err = cli("eval", "run", "--resume", run.run_id, *args)
    assert code == 0, err
    assert f"resuming {run.run_id}" in out
    assert f"run {run.run_id}: 5 called (0 failed), 3 already done" in out
    assert [server.num_calls(q) for q in questions] == [1] * 8
    [row] = list_runs(conn, "default").to_dicts()
    assert (row["num_done"], row["num_errors"]) == (8, 0)
    results = read_results(conn, "default", [run.run_id]).to_dicts()
    assert {r["output"] for r in results} == {q.upper() for q in questions}
    assert all(s["value"] == 1.0 for r in results for s in r["scores"])
    code, out, _ = cli("eval", "run", "--resume", run.run_id, *args)
    assert code == 0 and "0 called (0 failed), 8 already done" in out


@pytest.mark.parametrize(
    ("text", "search", "status"),
    [
        ("http://localhost:8501/traces?project=default&status=error&q=refund", "refund", "error"),
        ("localhost:8501/traces?q=refund", "refund", "any"),
        ("/traces?status=ok", None, "ok"),
        ("?q=refund&status=bogus", "refund", "any"),
        ("status=error&q=refund", "refund", "error"),
        ("q=why%20not%3F", "why not?", "any"),
        # a bare query string whose search has a question mark keeps its filter
        ("q=refund?&status=error", "refund?", "error"),
        ("", None, "any"),
    ],
)
def test_filter_from_text(text: str, search: str | None, status: str) -> None:
    filters, _ = filter_from_text(text)
    assert (filters.search, filters.status) == (search, status)


def test_dataset_argument_errors_are_messages_not_tracebacks(
    traces_lake: tuple[dict[str, Planted], Path], tmp_path: Path
) -> None:
    _, data_dir = traces_lake
    source = write_jsonl(tmp_path / "a.jsonl", [{"input": "a"}])
    for command, message in [
        (["create", "bad name", *WINDOW], "dataset name 'bad name'"),
        (["create", "ok", "--limit", "0", *WINDOW], "--limit must be at least 1"),
        (["create", "ok", "--holdout", "2", *WINDOW], "--holdout must be in [0, 1]"),
        (["import", "bad name", str(source)], "dataset name 'bad name'"),
        (["import", "ok", str(source), "--holdout", "1.5"], "--holdout must be in [0, 1]"),
    ]:
        code, out, err = cli("eval", "dataset", *command, "--data-dir", str(data_dir))
        assert (code, out) == (2, ""), command
        assert err.startswith("flywheel eval: ") and message in err, command


def test_a_search_with_a_question_mark_still_filters(
    traces_lake: tuple[dict[str, Planted], Path],
) -> None:
    planted, data_dir = traces_lake
    code, out, _ = cli(
        "eval",
        "dataset",
        "create",
        "questions",
        "--filter",
        "q=parcel 2?",
        "--data-dir",
        str(data_dir),
        *WINDOW,
    )
    assert code == 0 and out.startswith("1 matching requests: 1 cases")
    [case] = _show(data_dir, "questions")
    assert case["trace_id"] == planted["parcel-error"].trace_id


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    lines = [{"input": f"question number {i} " + "x" * 200, "reference": "y"} for i in range(3000)]
    source = write_jsonl(tmp_path / "many.jsonl", lines)
    data_dir = ["--data-dir", str(tmp_path / "lake")]
    assert cli("eval", "dataset", "import", "many", str(source), *data_dir)[0] == 0
    show = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "eval", "dataset", "show", "many", *data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert show.stdout is not None and show.stdout.read(100).startswith(b'{"messages"')
    show.stdout.close()  # like `| head -c 100`
    _, err = show.communicate(timeout=60)
    assert show.returncode == 0 and b"Traceback" not in err and b"BrokenPipe" not in err
