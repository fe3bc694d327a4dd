"""Replays against a real OpenAI-compatible server on loopback (``FakeOpenAI``) into a tmp lake:
one durable result per case, failures recorded, the replay's own traces in ``<project>.eval``,
resumption after a stop, an exception or a SIGKILL, bounded concurrency, recorded targets."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from analytics.cost import install_prices
from analytics.scope import Scope, run_scoped
from analytics.traces import count_traces
from evals.cases import Case, Completion, Score, case_id_of
from evals.datasets import Dataset, read_dataset, write_dataset
from evals.evaluators import EvaluatorContext, parse_evaluator
from evals.replay import (
    ReplaySummary,
    RunInfo,
    eval_project,
    list_runs,
    read_results,
    read_run,
    recorded_outputs,
    reference_outputs,
    replay,
    start_run,
)
from evals.targets import (
    OpenAITarget,
    RecordedTarget,
    RecordingTarget,
    Target,
    TargetConfig,
)
from store.catalog import open_catalog, query
from store.lake import EVAL_RESULTS, SPANS, Lake
from store.schema import SPAN_SCHEMA
from store.writer import LakeWriter
from tests.evals.openai_server import FakeOpenAI, last_user_text

KEY_ENV = "FLYWHEEL_TEST_FAKE_OPENAI_KEY"
PROJECT = "default"
REPO = Path(__file__).resolve().parents[2]


class InFlight:
    """A model answer (echo) that records how many requests were being answered at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.now = 0
        self.max = 0
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        with self._lock:
            self.now += 1
            self.max = max(self.max, self.now)
        time.sleep(self.delay_s)
        with self._lock:
            self.now -= 1
        return last_user_text(messages)


@pytest.fixture(scope="module")
def in_flight() -> InFlight:
    return InFlight(delay_s=0.03)


@pytest.fixture(scope="module")
def server(in_flight: InFlight) -> Iterator[FakeOpenAI]:
    judge = lambda messages: '{"score": 4, "reason": "close to the reference"}'  # noqa: E731
    with FakeOpenAI(answers={"inflight": in_flight, "judge": judge}) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # A key of our own, so a real OPENAI_API_KEY from the environment never reaches the fake.
    monkeypatch.setenv(KEY_ENV, "sk-test")


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[tuple[Path, duckdb.DuckDBPyConnection]]:
    data_dir = tmp_path / "lake"
    conn = open_catalog(data_dir)
    install_prices(conn)
    yield data_dir, conn
    conn.close()


def make_dataset(
    data_dir: Path,
    conn: duckdb.DuckDBPyConnection,
    texts: Sequence[str],
    references: Sequence[str | None] | None = None,
    metadata: Sequence[dict[str, str]] | None = None,
    name: str = "qa",
) -> Dataset:
    cases = []
    for i, text in enumerate(texts):
        messages = ({"role": "system", "content": "Answer."}, {"role": "user", "content": text})
        cases.append(
            Case(
                case_id_of(messages),
                messages,
                reference=None if references is None else references[i],
                metadata={} if metadata is None else metadata[i],
            )
        )
    return write_dataset(conn, data_dir, PROJECT, name, cases)


def target(base_url: str, model: str = "upper", **config: Any) -> OpenAITarget:
    settings: dict[str, Any] = {"timeout_s": 10.0, "backoff_s": 0.0, "max_retries": 1}
    settings.update(config)
    return OpenAITarget(
        TargetConfig(base_url=base_url, model=model, api_key_env=KEY_ENV, **settings)
    )


def evaluators(*specs: str) -> list[Any]:
    return [parse_evaluator(spec, context=EvaluatorContext()) for spec in specs]


def begin(data_dir: Path, dataset: Dataset, tgt: Target, specs: Sequence[str]) -> RunInfo:
    with LakeWriter(data_dir) as writer:
        return start_run(writer, PROJECT, dataset, tgt, specs)


def run_all(
    data_dir: Path,
    conn: duckdb.DuckDBPyConnection,
    dataset: Dataset,
    tgt: Target,
    specs: Sequence[str] = ("exact",),
    **options: Any,
) -> tuple[RunInfo, ReplaySummary]:
    run = begin(data_dir, dataset, tgt, specs)
    summary = replay(conn, data_dir, run, dataset, tgt, evaluators(*specs), **options)
    return run, summary


def results_by_input(
    conn: duckdb.DuckDBPyConnection, run: RunInfo, dataset: Dataset
) -> dict[str, dict[str, Any]]:
    """The latest result of each case, by the case's user input."""
    inputs = {c.case_id: c.user_input for c in dataset.cases}
    frame = read_results(conn, PROJECT, [run.run_id])
    return {inputs[row["case_id"]]: row for row in frame.to_dicts()}


def scores(row: dict[str, Any]) -> dict[str, float]:
    return {item["key"]: item["value"] for item in row["scores"]}


def all_result_rows(conn: duckdb.DuckDBPyConnection, run_id: str) -> list[str]:
    """Every stored result (not just the latest per case): the case ids."""
    sql = "SELECT case_id FROM eval_results WHERE run_id = $run_id ORDER BY case_id"
    return [row["case_id"] for row in query(conn.cursor(), sql, {"run_id": run_id}).to_pylist()]


def words(text: str) -> int:
    return len(text.split())


# --- one result per case ---------------------------------------------------------------------


def test_a_run_stores_each_cases_output_tokens_and_scores(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = [f"run-one case {i} says hello" for i in range(6)]
    references = [t.upper() if i % 2 == 0 else "something else" for i, t in enumerate(texts)]
    dataset = make_dataset(data_dir, conn, texts, references)
    run, summary = run_all(
        data_dir, conn, dataset, target(server.base_url), ["exact", "contains:HELLO"]
    )
    assert summary == ReplaySummary(run.run_id, 6, 6, 0, 0, interrupted=False)
    got = results_by_input(conn, run, dataset)
    assert sorted(got) == sorted(texts)
    for i, text in enumerate(texts):
        row = got[text]
        assert row["output"] == text.upper() and row["error"] is None
        assert row["model"] == "upper" and row["num_attempts"] == 1
        # the fake counts words: the system prompt's one word and the user's
        assert row["input_tokens"] == words("Answer.") + words(text)
        assert row["output_tokens"] == words(text)
        assert row["latency_ms"] > 0
        assert scores(row) == {"exact": 1.0 if i % 2 == 0 else 0.0, "contains:HELLO": 1.0}
        assert server.num_calls(text) == 1
    assert len(all_result_rows(conn, run.run_id)) == 6
    assert read_run(conn, PROJECT, run.run_id) == run
    with pytest.raises(LookupError, match="no eval run"):
        read_run(conn, PROJECT, "run-nope")


def test_failed_cases_are_recorded_and_the_run_goes_on(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = ["fails-a [400] please", "fails-b [always500] please", "fails-c fine", "fails-d ok"]
    dataset = make_dataset(data_dir, conn, texts, [t.upper() for t in texts])
    run, summary = run_all(data_dir, conn, dataset, target(server.base_url, max_retries=1))
    assert (summary.num_called, summary.num_errors) == (4, 2)
    got = results_by_input(conn, run, dataset)
    bad_request, server_error = got[texts[0]], got[texts[1]]
    assert bad_request["error"].startswith("HTTP 400") and bad_request["output"] is None
    assert bad_request["num_attempts"] == 1  # a 400 is not retried
    assert server_error["error"].startswith("HTTP 500") and server_error["num_attempts"] == 2
    assert server.num_calls("fails-b") == 2
    for failed in (bad_request, server_error):
        assert failed["scores"] == []  # no score, not a zero
        details = {d["key"]: d["value"] for d in failed["score_details"]}
        assert details["exact"].startswith("no output: HTTP")
    for ok in texts[2:]:
        assert got[ok]["output"] == ok.upper() and scores(got[ok]) == {"exact": 1.0}
    [row] = list_runs(conn, PROJECT).to_dicts()
    assert (row["num_cases"], row["num_done"], row["num_errors"]) == (4, 4, 2)


# --- the replay's own traces ---------------------------------------------------------------------


def _production_spans(now: datetime, num: int) -> pa.Table:
    rows = []
    for i in range(num):
        start = now - timedelta(minutes=5 + i)
        base = {
            "project": PROJECT,
            "trace_id": f"{i + 1:032x}",
            "service_name": "support",
            "start_time": start,
            "end_time": start + timedelta(seconds=1),
            "duration_ms": 1000.0,
            "status_code": "OK",
        }
        rows.append({**base, "span_id": f"{i + 1:016x}", "name": "POST /chat", "kind": "SERVER"})
        rows.append(
            {
                **base,
                "span_id": f"{i + 1:08x}{2:08x}",
                "parent_span_id": f"{i + 1:016x}",
                "name": "chat gpt-4o-mini",
                "kind": "CLIENT",
                "operation": "chat",
                "request_model": "gpt-4o-mini",
                "response_model": "gpt-4o-mini",
                "input_tokens": 10,
                "output_tokens": 5,
            }
        )
    return pa.Table.from_pylist(rows, schema=SPAN_SCHEMA)


def test_replay_traces_land_in_the_eval_project_only(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    now = datetime.now(UTC)
    with LakeWriter(data_dir) as writer:
        writer.append(SPANS.name, _production_spans(now, 3))
    window = Scope(PROJECT, now - timedelta(hours=1), now + timedelta(hours=1))
    calls_sql = "SELECT count(*) AS n FROM scoped_llm_calls"

    def production() -> tuple[int, int]:
        calls = run_scoped(conn, window, calls_sql, {}).to_pylist()[0]["n"]
        return count_traces(conn, window), calls

    assert production() == (3, 3)
    texts = ["traced one", "traced two [400]", "traced three"]
    dataset = make_dataset(data_dir, conn, texts)
    run, _ = run_all(data_dir, conn, dataset, target(server.base_url))
    assert production() == (3, 3)  # the replay is not production traffic

    assert eval_project(PROJECT) == "default.eval"
    sql = """
        SELECT trace_id, span_id, parent_span_id, name, operation, status_code, input_text,
            output_text, input_tokens, output_tokens, response_model, attributes
        FROM spans WHERE project = $project ORDER BY trace_id, parent_span_id NULLS FIRST
    """
    spans = query(conn.cursor(), sql, {"project": "default.eval"}).to_pylist()
    results = {row["trace_id"]: row for row in read_results(conn, PROJECT, [run.run_id]).to_dicts()}
    assert len(spans) == 2 * len(texts)
    assert {s["trace_id"] for s in spans} == set(results)
    inputs = {c.case_id: c.user_input for c in dataset.cases}
    for root, call in zip(spans[::2], spans[1::2], strict=True):
        result = results[root["trace_id"]]
        assert root["parent_span_id"] is None and call["parent_span_id"] == root["span_id"]
        assert call["operation"] == "chat" and root["operation"] is None
        for span in (root, call):
            attributes = dict(span["attributes"])
            assert attributes["flywheel.eval.run_id"] == run.run_id
            assert attributes["flywheel.eval.case_id"] == result["case_id"]
            assert attributes["flywheel.eval.dataset"] == "qa@1"
            assert span["input_text"] == inputs[result["case_id"]]
            assert span["output_text"] == result["output"]
            assert span["status_code"] == ("ERROR" if result["error"] else "OK")
        assert (call["input_tokens"], call["output_tokens"]) == (
            result["input_tokens"],
            result["output_tokens"],
        )
    eval_window = Scope("default.eval", window.start, window.end)
    assert count_traces(conn, eval_window) == 3


def test_judge_calls_are_traced_with_the_case_they_scored(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = ["judged one", "judged two"]
    dataset = make_dataset(data_dir, conn, texts, references=["JUDGED ONE", "x"])
    judge = RecordingTarget(target(server.base_url, "judge"), "judge")
    context = EvaluatorContext(judge=judge)
    for tgt, calls_per_case in (
        (target(server.base_url), 2),
        (RecordedTarget(reference_outputs(dataset), "reference"), 1),
    ):
        run = begin(data_dir, dataset, tgt, ["judge"])
        replay(conn, data_dir, run, dataset, tgt, [parse_evaluator("judge", context=context)])
        results = read_results(conn, PROJECT, [run.run_id]).to_dicts()
        assert [scores(r)["judge"] for r in results] == [0.75, 0.75]  # 4 on 1-5
        sql = """
            SELECT s.trace_id, s.request_model, s.attributes['flywheel.eval.role'] AS role
            FROM spans AS s
            WHERE s.project = 'default.eval' AND s.operation = 'chat'
                AND s.attributes['flywheel.eval.run_id'] = $run
        """
        spans = query(conn.cursor(), sql, {"run": run.run_id}).to_pylist()
        assert len(spans) == calls_per_case * len(texts)
        assert {s["trace_id"] for s in spans} == {r["trace_id"] for r in results}
        judged = [s for s in spans if s["role"] == "judge"]
        assert len(judged) == len(texts) and {s["request_model"] for s in judged} == {"judge"}


# --- resumption ----------------------------------------------------------------------------------


def test_a_stopped_run_resumes_without_calling_finished_cases(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = [f"resume-{i:03d}-case" for i in range(10)]
    dataset = make_dataset(data_dir, conn, texts, [t.upper() for t in texts])
    tgt = target(server.base_url)
    run = begin(data_dir, dataset, tgt, ["exact"])
    stop = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 4:
            stop.set()

    first = replay(
        conn,
        data_dir,
        run,
        dataset,
        tgt,
        evaluators("exact"),
        concurrency=1,
        progress=progress,
        stop=stop,
    )
    assert first == ReplaySummary(run.run_id, 10, 4, 0, 0, interrupted=True)
    assert seen == [(1, 10), (2, 10), (3, 10), (4, 10)]
    order = [c.user_input for c in dataset.cases]  # concurrency 1 calls them in order
    assert [server.num_calls(t) for t in order] == [1] * 4 + [0] * 6
    [row] = list_runs(conn, PROJECT).to_dicts()
    assert (row["num_done"], row["num_cases"]) == (4, 10)

    seen.clear()
    second = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"), progress=progress)
    assert second == ReplaySummary(run.run_id, 10, 6, 4, 0, interrupted=False)
    # with 8 workers, cases that finish together are stored (and reported) together
    done = [d for d, _ in seen]
    assert done == sorted(set(done)) and done[0] >= 5 and seen[-1] == (10, 10)
    assert [server.num_calls(t) for t in texts] == [1] * 10
    assert sorted(all_result_rows(conn, run.run_id)) == sorted(c.case_id for c in dataset.cases)
    assert all(scores(r) == {"exact": 1.0} for r in results_by_input(conn, run, dataset).values())

    third = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"))
    assert (third.num_called, third.num_skipped) == (0, 10)
    assert server.num_calls("resume-") == 10


def test_stopping_after_the_last_case_is_not_an_interruption(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    dataset = make_dataset(data_dir, conn, ["last-stop a", "last-stop b"])
    tgt = target(server.base_url)
    run = begin(data_dir, dataset, tgt, ["exact"])
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == total:
            stop.set()

    summary = replay(
        conn, data_dir, run, dataset, tgt, evaluators("exact"), progress=progress, stop=stop
    )
    assert (summary.num_called, summary.interrupted) == (2, False)


def test_retry_errors_calls_only_the_failed_cases_again(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = ["retry-ok one", "retry-flaky [500x2] two", "retry-ok three"]
    dataset = make_dataset(data_dir, conn, texts, [t.upper() for t in texts])
    tgt = target(server.base_url, max_retries=0)
    run, first = run_all(data_dir, conn, dataset, tgt)
    assert (first.num_called, first.num_errors) == (3, 1)

    again = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"))
    assert (again.num_called, again.num_skipped) == (0, 3)  # a failed case has a result
    assert server.num_calls("retry-flaky") == 1

    retried = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"), retry_errors=True)
    assert (retried.num_called, retried.num_skipped, retried.num_errors) == (1, 2, 1)
    retried = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"), retry_errors=True)
    assert (retried.num_called, retried.num_errors) == (1, 0)
    assert [server.num_calls(t) for t in texts] == [1, 3, 1]
    flaky = results_by_input(conn, run, dataset)[texts[1]]
    assert flaky["error"] is None and scores(flaky) == {"exact": 1.0}
    [row] = list_runs(conn, PROJECT).to_dicts()
    assert (row["num_done"], row["num_errors"]) == (3, 0)
    # every attempt is kept; readers take the latest
    assert len(all_result_rows(conn, run.run_id)) == 5
    # once answered, retry_errors has nothing left to call
    done = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"), retry_errors=True)
    assert done.num_called == 0


class Exploding:
    """A target that raises (a bug, not a failed call) on one case."""

    def __init__(self, inner: Target, on: str) -> None:
        self.inner, self.on = inner, on

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def complete(self, case: Case) -> Completion:
        if self.on in case.user_input:
            raise RuntimeError("target bug")
        return self.inner.complete(case)


def test_a_target_that_raises_fails_that_case_only(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = [f"explode-{i}-case" for i in range(5)]
    dataset = make_dataset(data_dir, conn, texts)
    tgt = target(server.base_url)
    run = begin(data_dir, dataset, tgt, ["exact"])
    exploding = Exploding(tgt, "explode-2")
    summary = replay(conn, data_dir, run, dataset, exploding, evaluators("exact"), concurrency=1)
    assert (summary.num_called, summary.num_errors) == (5, 1)
    results = results_by_input(conn, run, dataset)
    assert results["explode-2-case"]["error"] == "target failed: RuntimeError: target bug"
    assert all(results[t]["error"] is None for t in texts if t != "explode-2-case")
    # calling the failed case again, with a target that works, calls only it
    again = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"), retry_errors=True)
    assert (again.num_called, again.num_skipped) == (1, 4)
    assert [server.num_calls(t) for t in texts] == [1, 1, 1, 1, 1]


CRASHING_REPLAY = textwrap.dedent(
    """
    import os, signal, sys
    from evals.datasets import read_dataset
    from evals.evaluators import EvaluatorContext, parse_evaluator
    from evals.replay import read_run, replay
    from evals.targets import OpenAITarget, TargetConfig
    from store.catalog import open_catalog

    data_dir, run_id, base_url, key_env, kill_after = sys.argv[1:]
    conn = open_catalog(data_dir)
    run = read_run(conn, "default", run_id)
    dataset = read_dataset(conn, "default", run.dataset, run.version)
    target = OpenAITarget(TargetConfig(base_url, "upper", api_key_env=key_env, timeout_s=10))

    def progress(done, total):
        if done == int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)  # no flush, no cleanup

    exact = parse_evaluator("exact", context=EvaluatorContext())
    replay(conn, data_dir, run, dataset, target, [exact], concurrency=1, progress=progress)
    """
)


def test_a_killed_run_keeps_what_it_finished(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = [f"killed-{i}-case" for i in range(6)]
    dataset = make_dataset(data_dir, conn, texts, [t.upper() for t in texts])
    tgt = target(server.base_url)
    run = begin(data_dir, dataset, tgt, ["exact"])
    env = {**os.environ, "PYTHONPATH": str(REPO), KEY_ENV: "sk-test"}
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_REPLAY,
            str(data_dir),
            run.run_id,
            server.base_url,
            KEY_ENV,
            "3",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    order = [c.user_input for c in dataset.cases]
    assert [server.num_calls(t) for t in order] == [1, 1, 1, 0, 0, 0]
    # the finished cases were only in the killed writer's log; the next run replays it first
    summary = replay(conn, data_dir, run, dataset, tgt, evaluators("exact"))
    assert (summary.num_called, summary.num_skipped) == (3, 3)
    assert [server.num_calls(t) for t in order] == [1] * 6
    assert sorted(all_result_rows(conn, run.run_id)) == sorted(c.case_id for c in dataset.cases)
    assert {s["exact"] for s in map(scores, results_by_input(conn, run, dataset).values())} == {1.0}


# --- concurrency ---------------------------------------------------------------------------------


def test_concurrency_bounds_the_calls_in_flight(
    server: FakeOpenAI, in_flight: InFlight, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = [f"parallel-{i:02d}-case" for i in range(40)]
    dataset = make_dataset(data_dir, conn, texts, texts)
    in_flight.max = 0
    run, summary = run_all(
        data_dir, conn, dataset, target(server.base_url, model="inflight"), concurrency=8
    )
    assert (summary.num_called, summary.num_errors) == (40, 0)
    assert 2 <= in_flight.max <= 8
    got = results_by_input(conn, run, dataset)
    assert len(got) == 40 and all(scores(r) == {"exact": 1.0} for r in got.values())
    assert [server.num_calls(t) for t in texts] == [1] * 40
    with pytest.raises(ValueError, match="concurrency"):
        replay(conn, data_dir, run, dataset, target(server.base_url), [], concurrency=0)


# --- recorded targets ----------------------------------------------------------------------------


def test_recorded_references_make_no_call_and_score_exact(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = ["recorded a", "recorded b", "recorded c"]
    metadata = [
        {"model": "gpt-4o-mini", "input_tokens": "12", "output_tokens": "7", "latency_ms": "850.5"},
        {},
        {},
    ]
    dataset = make_dataset(data_dir, conn, texts, ["Answer A", "Answer B", None], metadata)
    before = server.num_calls()
    recorded = RecordedTarget(reference_outputs(dataset), "reference")
    run, summary = run_all(data_dir, conn, dataset, recorded, ["exact", "max_chars:8"])
    assert server.num_calls() == before
    assert (summary.num_called, summary.num_errors) == (3, 1)
    got = results_by_input(conn, run, dataset)
    a, b, c = (got[t] for t in texts)
    assert scores(a) == scores(b) == {"exact": 1.0, "max_chars:8": 1.0}
    assert (a["model"], a["input_tokens"], a["output_tokens"], a["latency_ms"]) == (
        "gpt-4o-mini",
        12,
        7,
        850.5,
    )
    assert b["model"] is None and b["latency_ms"] is None
    assert c["error"] == f"no recorded output for case {dataset.cases[2].case_id}"
    assert {r["trace_id"] for r in got.values()} == {None}  # nothing called, nothing traced
    rows = query(conn.cursor(), "SELECT count(*) AS n FROM spans", {}).to_pylist()
    assert rows[0]["n"] == 0
    # a run's outputs re-scored with another evaluator: the same outputs, new scores
    again = RecordedTarget(recorded_outputs(read_results(conn, PROJECT, [run.run_id])), run.run_id)
    rerun, _ = run_all(data_dir, conn, dataset, again, ["contains:answer"])
    regot = results_by_input(conn, rerun, dataset)
    assert [regot[t]["output"] for t in texts] == ["Answer A", "Answer B", None]
    assert [scores(regot[t]) for t in texts] == [
        {"contains:answer": 1.0},
        {"contains:answer": 1.0},
        {},
    ]


def test_replay_refuses_another_dataset_version(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    v1 = make_dataset(data_dir, conn, ["version one"])
    v2 = make_dataset(data_dir, conn, ["version two"])
    tgt = target(server.base_url)
    run = begin(data_dir, v1, tgt, ["exact"])
    with pytest.raises(ValueError, match="qa@1, not qa@2"):
        replay(conn, data_dir, run, v2, tgt, evaluators("exact"))
    assert read_dataset(conn, PROJECT, "qa").version == 2


def test_list_runs_newest_first_with_counts_and_median_latency(
    server: FakeOpenAI, lake: tuple[Path, duckdb.DuckDBPyConnection]
) -> None:
    data_dir, conn = lake
    texts = ["listed one", "listed two [400]", "listed three", "listed four"]
    dataset = make_dataset(data_dir, conn, texts)
    tgt = target(server.base_url)
    with LakeWriter(data_dir) as writer:
        older = start_run(
            writer,
            PROJECT,
            dataset,
            tgt,
            ["exact"],
            name="older",
            now=datetime.now(UTC) - timedelta(hours=1),
        )
        newer = start_run(writer, PROJECT, dataset, tgt, ["exact"], name="newer", split="test")
    replay(conn, data_dir, older, dataset, tgt, evaluators("exact"))
    stop = threading.Event()
    replay(
        conn,
        data_dir,
        newer,
        dataset,
        tgt,
        evaluators("exact"),
        concurrency=1,
        progress=lambda done, total: stop.set() if done == 2 else None,
        stop=stop,
    )
    listed = list_runs(conn, PROJECT).to_dicts()
    assert [r["name"] for r in listed] == ["newer", "older"]
    newest, oldest = listed
    assert (oldest["num_done"], oldest["num_errors"], oldest["num_cases"]) == (4, 1, 4)
    assert (newest["num_done"], newest["num_errors"]) == (2, 1)
    assert newest["split"] == "test" and oldest["split"] is None
    latencies = [
        r["latency_ms"]
        for r in read_results(conn, PROJECT, [older.run_id]).to_dicts()
        if r["latency_ms"] is not None
    ]
    assert len(latencies) == 3
    assert oldest["median_latency_ms"] == pytest.approx(statistics.median(latencies))
    assert list_runs(conn, "other").is_empty()


class _Flaky:
    """A target whose code fails on one case (a bug, not an API error)."""

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def describe(self) -> dict[str, Any]:
        return {"kind": "flaky", "model": "flaky"}

    def complete(self, case: Case) -> Completion:
        if case.user_input == self.bad:
            raise AttributeError("'NoneType' object has no attribute 'content'")
        return Completion(case.user_input.upper(), latency_ms=1.0)


class _BatchLength:
    """A batched evaluator (scored in groups on the main thread, like similarity)."""

    name = "length"
    batched = True

    def score_many(self, cases: Sequence[Case], completions: Sequence[Completion]) -> list[Score]:
        return [Score(min(1.0, len(c.output or "") / 100)) for c in completions]


def test_a_failing_target_fails_its_case_and_the_batch_is_stored(
    lake: tuple[Path, duckdb.DuckDBPyConnection],
) -> None:
    data_dir, conn = lake
    texts = [f"case {i}" for i in range(9)]
    dataset = make_dataset(data_dir, conn, texts)
    flaky = _Flaky(bad="case 7")
    run = begin(data_dir, dataset, flaky, ["length"])
    summary = replay(conn, data_dir, run, dataset, flaky, [_BatchLength()], concurrency=2)
    assert (summary.num_called, summary.num_errors) == (9, 1)
    results = results_by_input(conn, run, dataset)
    assert set(results) == set(texts)
    assert results["case 7"]["error"].startswith("target failed: AttributeError")
    assert scores(results["case 3"]) == {"length": pytest.approx(len("CASE 3") / 100)}


def test_a_replay_merges_the_small_result_segments_it_left(
    lake: tuple[Path, duckdb.DuckDBPyConnection],
) -> None:
    data_dir, conn = lake
    texts = [f"segment case {i}" for i in range(10)]
    dataset = make_dataset(data_dir, conn, texts)
    recorded = RecordedTarget(reference_outputs(dataset), "reference")
    run = begin(data_dir, dataset, recorded, ["exact"])
    for case in dataset.cases[:9]:  # nine results, one segment each (as nine flushes would)
        one = Dataset(dataset.name, dataset.version, dataset.time, [case])
        with LakeWriter(data_dir) as writer:
            writer.flush()
        replay(conn, data_dir, run, one, recorded, evaluators("exact"))
    segments = Lake(data_dir).list_segments(EVAL_RESULTS.name)
    assert 1 <= len(segments) < 9
    assert len(read_results(conn, PROJECT, [run.run_id])) == 9
