"""Replaying a dataset against a target: bounded concurrency, durable per-case results, resume.

A run is recorded first (``eval_runs``: dataset version, split, target, evaluators). Then each
case is sent to the target from one of ``concurrency`` worker threads (the target's own rate
limiter spaces the calls), scored by every evaluator, and its result (output or error, attempts,
latency, tokens, scores) is appended through a :class:`store.writer.LakeWriter`: fsynced in its
write-ahead log before the next case is counted as done, so a run killed part way keeps every
finished case (the next writer replays the log). Resuming a run (:func:`replay` with its
``run_id``) calls only the cases without a result (and, with ``retry_errors``, those whose
latest result is an error); a run is finished when every case has a result.

The replay is traced: each case called on an endpoint becomes a trace (a root span for the
case, a ``chat`` span for the call, with its model, tokens, input, output and error) in the
project's eval project (:func:`eval_project`, ``<project>.eval``), so eval traffic can be read
on the Traces page and never counts in the production project's metrics.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import duckdb
import polars as pl
import pyarrow as pa

from evals.cases import Case, Completion, Score
from evals.datasets import Dataset
from evals.evaluators import Evaluator, score_all
from evals.replay_traces import EVAL_PROJECT_SUFFIX, eval_project, span_rows
from evals.targets import RecordedCall, Target, take_recorded_calls
from store.catalog import query
from store.lake import EVAL_RESULTS, EVAL_RUNS, SPANS, Lake, as_lake
from store.schema import EVAL_RESULT_SCHEMA, EVAL_RUN_SCHEMA
from store.writer import LakeWriter

__all__ = [
    "EVAL_PROJECT_SUFFIX",
    "ReplaySummary",
    "RunInfo",
    "eval_project",
    "list_runs",
    "read_results",
    "read_run",
    "recorded_outputs",
    "reference_outputs",
    "replay",
    "start_run",
    "target_label",
]

#: ``progress(done, total)`` as a run's finished cases are stored (one at a time, or in groups
#: when an evaluator scores a batch at once).
Progress = Callable[[int, int], None]


def target_label(target: dict[str, Any] | str) -> str:
    """A run's target in a few words: its model, or where its recorded outputs came from.

    >>> target_label('{"kind": "recorded", "source": "reference"}')
    'recorded: reference'
    """
    described = json.loads(target) if isinstance(target, str) else target
    return str(described.get("model") or f"recorded: {described.get('source')}")


@dataclass(frozen=True)
class RunInfo:
    """A run as recorded when it started."""

    run_id: str
    project: str
    time: datetime
    name: str | None
    dataset: str
    version: int
    split: str | None
    target: dict[str, Any]
    evaluators: list[str]
    num_cases: int


@dataclass(frozen=True)
class ReplaySummary:
    """What one :func:`replay` call did: cases called now, skipped (already done), failed."""

    run_id: str
    num_cases: int
    num_called: int
    num_skipped: int
    num_errors: int
    interrupted: bool = False


def start_run(
    writer: LakeWriter,
    project: str,
    dataset: Dataset,
    target: Target,
    evaluator_specs: Sequence[str],
    *,
    split: str | None = None,
    name: str | None = None,
    now: datetime | None = None,
) -> RunInfo:
    """Record a new run of ``dataset`` (its ``split``, None: all cases) and return it."""
    run = RunInfo(
        run_id="run-"
        + (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S-")
        + secrets.token_hex(3),
        project=project,
        time=now or datetime.now(UTC),
        name=name,
        dataset=dataset.name,
        version=dataset.version,
        split=split,
        target=target.describe(),
        evaluators=list(evaluator_specs),
        num_cases=len(dataset.split(split)),
    )
    row = {
        "project": run.project,
        "run_id": run.run_id,
        "time": run.time,
        "name": run.name,
        "dataset": run.dataset,
        "version": run.version,
        "split": run.split,
        "target": json.dumps(run.target, sort_keys=True),
        "evaluators": json.dumps(run.evaluators),
        "num_cases": run.num_cases,
    }
    writer.append(EVAL_RUNS.name, pa.Table.from_pylist([row], schema=EVAL_RUN_SCHEMA))
    writer.flush()
    return run


# A run by id, else the newest run with that name.
READ_RUN_SQL = """
SELECT * FROM eval_runs WHERE project = $project AND (run_id = $ref OR name = $ref)
ORDER BY run_id = $ref DESC, time DESC, run_id
LIMIT 1
"""


def _run_info(row: dict[str, Any]) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        project=row["project"],
        time=row["time"],
        name=row["name"],
        dataset=row["dataset"],
        version=row["version"],
        split=row["split"],
        target=json.loads(row["target"]),
        evaluators=json.loads(row["evaluators"]),
        num_cases=row["num_cases"],
    )


def read_run(conn: duckdb.DuckDBPyConnection, project: str, ref: str) -> RunInfo:
    """A recorded run by id, or the newest run named ``ref`` (LookupError if there is none)."""
    rows = query(conn.cursor(), READ_RUN_SQL, {"project": project, "ref": ref}).to_pylist()
    if not rows:
        raise LookupError(f"no eval run with id or name {ref!r} in project {project!r}")
    return _run_info(rows[0])


# The latest result of each case of each run (a resumed run may have called a case again).
_LATEST = "QUALIFY row_number() OVER (PARTITION BY run_id, case_id ORDER BY time DESC, result_id DESC) = 1"

LATEST_RESULTS_SQL = f"""
SELECT * REPLACE (map_entries(scores) AS scores, map_entries(score_details) AS score_details)
FROM eval_results
WHERE project = $project AND list_contains($run_ids, run_id)
{_LATEST}
ORDER BY run_id, case_id
"""

LIST_RUNS_SQL = f"""
WITH latest AS (
    SELECT run_id, case_id, error, latency_ms FROM eval_results WHERE project = $project
    {_LATEST}
)
SELECT
    r.run_id, r.time, r.name, r.dataset, r.version, r.split, r.target, r.evaluators, r.num_cases,
    count(l.case_id) AS num_done,
    count(l.case_id) FILTER (WHERE l.error IS NOT NULL) AS num_errors,
    median(l.latency_ms) AS median_latency_ms
FROM eval_runs AS r
LEFT JOIN latest AS l USING (run_id)
WHERE r.project = $project
GROUP BY ALL
ORDER BY r.time DESC, r.run_id
"""


def list_runs(conn: duckdb.DuckDBPyConnection, project: str) -> pl.DataFrame:
    """The project's runs, newest first: the run record plus ``num_done`` (cases with a result),
    ``num_errors`` (whose latest result is an error) and ``median_latency_ms``."""
    frame = pl.from_arrow(query(conn.cursor(), LIST_RUNS_SQL, {"project": project}))
    assert isinstance(frame, pl.DataFrame)
    return frame


def read_results(
    conn: duckdb.DuckDBPyConnection, project: str, run_ids: Sequence[str]
) -> pl.DataFrame:
    """The latest result of every case of these runs (``store.schema.EVAL_RESULT_SCHEMA``, the
    ``scores`` and ``score_details`` maps as lists of ``{key, value}``)."""
    table = query(conn.cursor(), LATEST_RESULTS_SQL, {"project": project, "run_ids": list(run_ids)})
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _result_row(
    run: RunInfo,
    case: Case,
    completion: Completion,
    scores: dict[str, Score],
    trace_id: str | None,
    moment: datetime,
) -> pa.Table:
    row = {
        "project": run.project,
        "result_id": uuid.uuid4().hex,
        "run_id": run.run_id,
        "case_id": case.case_id,
        "time": moment,
        "output": completion.output,
        "error": completion.error,
        "num_attempts": completion.num_attempts,
        "latency_ms": completion.latency_ms,
        "model": completion.model,
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "trace_id": trace_id,
        "scores": [(n, s.value) for n, s in scores.items() if s.value is not None],
        "score_details": [(n, s.detail) for n, s in scores.items() if s.detail],
    }
    return pa.Table.from_pylist([row], schema=EVAL_RESULT_SCHEMA)


DONE_CASES_SQL = """
SELECT case_id, bool_or(error IS NULL) AS answered
FROM eval_results
WHERE project = $project AND run_id = $run_id
GROUP BY case_id
"""


def _done_cases(conn: duckdb.DuckDBPyConnection, run: RunInfo, retry_errors: bool) -> set[str]:
    rows = query(conn.cursor(), DONE_CASES_SQL, {"project": run.project, "run_id": run.run_id})
    return {row["case_id"] for row in rows.to_pylist() if row["answered"] or not retry_errors}


def replay(
    conn: duckdb.DuckDBPyConnection,
    where: Lake | Path | str,
    run: RunInfo,
    dataset: Dataset,
    target: Target,
    evaluators: Sequence[Evaluator],
    *,
    concurrency: int = 8,
    retry_errors: bool = False,
    traced: bool = True,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> ReplaySummary:
    """Call ``target`` on every case of ``run`` that has no result yet, score and store each.

    ``conn`` must read the store ``where`` writes: a data directory's lake, or a
    ``store.lake.Lake`` such as ClickHouse's tables. ``stop`` (set from another thread, e.g. on
    Ctrl-C) lets the calls in flight finish and starts no more; the summary then says
    ``interrupted`` and the run can be resumed.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if (dataset.name, dataset.version) != (run.dataset, run.version):
        raise ValueError(
            f"run {run.run_id} replays {run.dataset}@{run.version}, "
            f"not {dataset.name}@{dataset.version}"
        )
    stop = stop or threading.Event()
    # Opening the writer first replays the logs an interrupted run left, so what it finished
    # is in the lake before the done cases are read.
    lake = as_lake(where)
    with LakeWriter(lake, max_age_s=2.0) as writer:
        done = _done_cases(conn, run, retry_errors)
        cases = [c for c in dataset.split(run.split) if c.case_id not in done]
        num_skipped = len(dataset.split(run.split)) - len(cases)
        counts = {"called": 0, "errors": 0}
        # Evaluators that embed a batch at once score finished cases in groups, here; the
        # rest score each case in its worker, beside its call (a judge is a call too).
        batched = [e for e in evaluators if getattr(e, "batched", False)]
        each = [e for e in evaluators if not getattr(e, "batched", False)]
        group_size = max(32, 2 * concurrency) if batched else 1
        Done = tuple[Case, Completion, dict[str, Score], datetime, list[RecordedCall]]

        def one(case: Case) -> Done:
            started = datetime.now(UTC)
            take_recorded_calls()  # this thread's: only the calls made for this case follow
            try:
                completion = target.complete(case)
            except Exception as exc:  # a target's bug is this case's failure, not the run's
                completion = Completion(None, error=f"target failed: {type(exc).__name__}: {exc}")
            scores = score_all(each, [case], [completion])[0]
            return case, completion, scores, started, take_recorded_calls()

        def store(finished: list[Done]) -> None:
            extra = score_all(batched, [d[0] for d in finished], [d[1] for d in finished])
            records: list[tuple[str, pa.Table]] = []
            for (case, completion, scores, started, made), more in zip(
                finished, extra, strict=True
            ):
                # A recorded target calls nothing: its case has a trace only if a judge called.
                called = run.target.get("kind") != "recorded" or bool(made)
                trace_id = secrets.token_hex(16) if traced and called else None
                moment = datetime.now(UTC)
                row = _result_row(run, case, completion, {**scores, **more}, trace_id, moment)
                records.append((EVAL_RESULTS.name, row))
                if trace_id is not None:
                    spans = span_rows(run, case, completion, started, trace_id, made)
                    records.append((SPANS.name, spans))
                counts["called"] += 1
                counts["errors"] += completion.error is not None
            writer.append_many(records)  # fsynced: these cases are done
            writer.maybe_flush()
            if progress is not None:
                progress(num_skipped + counts["called"], num_skipped + len(cases))

        pending: set[Future[Done]] = set()
        ready: list[Done] = []
        queue = iter(cases)
        try:
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay") as pool:
                while True:
                    while len(pending) < concurrency and not stop.is_set():
                        case = next(queue, None)
                        if case is None:
                            break
                        pending.add(pool.submit(one, case))
                    if not pending:
                        break
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    ready.extend(future.result() for future in finished)
                    if len(ready) >= group_size:
                        store(ready)
                        ready = []
        finally:
            # What finished is stored even when the run stops on an error or a second Ctrl-C.
            ready.extend(f.result() for f in pending if f.done() and f.exception() is None)
            if ready:
                store(ready)
    # The writer flushed every few seconds: merge this run's small result segments, so reading
    # runs does not open one file per flush.
    lake.compact(EVAL_RESULTS.name, min_segments=8)
    return ReplaySummary(
        run_id=run.run_id,
        num_cases=num_skipped + len(cases),
        num_called=counts["called"],
        num_skipped=num_skipped,
        num_errors=counts["errors"],
        interrupted=stop.is_set() and counts["called"] < len(cases),
    )


def recorded_outputs(results: pl.DataFrame) -> dict[str, Completion]:
    """A run's latest results as completions by case id (for :class:`RecordedTarget`)."""
    return {
        row["case_id"]: Completion(
            output=row["output"],
            error=row["error"],
            latency_ms=row["latency_ms"],
            model=row["model"],
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            num_attempts=cast(int, row["num_attempts"] or 1),
        )
        for row in results.to_dicts()
    }


def reference_outputs(dataset: Dataset) -> dict[str, Completion]:
    """The dataset's references as completions (what production answered, with its model,
    tokens and latency from the case metadata), for :class:`RecordedTarget`."""

    def number(value: str | None) -> float | None:
        try:
            return None if value is None else float(value)
        except ValueError:
            return None

    outputs: dict[str, Completion] = {}
    for case in dataset.cases:
        if case.reference is None:
            continue
        meta = case.metadata
        tokens_in, tokens_out = number(meta.get("input_tokens")), number(meta.get("output_tokens"))
        outputs[case.case_id] = Completion(
            output=case.reference,
            latency_ms=number(meta.get("latency_ms")),
            model=meta.get("model"),
            input_tokens=None if tokens_in is None else int(tokens_in),
            output_tokens=None if tokens_out is None else int(tokens_out),
        )
    return outputs
