"""``flywheel eval``: datasets from traces or JSONL, replays against a target, comparisons for CI.

flywheel eval dataset create NAME --filter 'status=ok&q=refund' --since 7d --limit 500
flywheel eval dataset import NAME cases.jsonl
flywheel eval dataset list | show NAME[@VERSION]
flywheel eval run --dataset NAME --recorded                       # score production's answers
flywheel eval run --dataset NAME --base-url URL --model M -e exact -e judge --judge-model M
flywheel eval runs
flywheel eval compare RUN --baseline RUN --fail-if-worse judge    # exit 1 on a regression
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from app.eval_compare_cmd import add_compare_parser
from app.eval_dataset_cmd import add_dataset_parser, fail, settings_and_catalog
from app.settings import Settings
from app.stores import open_tables

_EPILOG_EVALUATORS = "evaluators (-e SPEC, repeatable): see the README's Evals section"


def _text_or_file(value: str | None) -> str | None:
    """``@path`` reads a file; anything else is the text itself."""
    if value is None or not value.startswith("@"):
        return value
    return Path(value[1:]).read_text(encoding="utf-8")


def _target_config(args: argparse.Namespace, prefix: str = "") -> Any:
    from evals.targets import TargetConfig

    return TargetConfig(
        base_url=getattr(args, prefix + "base_url"),
        model=getattr(args, prefix + "model"),
        api_key_env=getattr(args, prefix + "api_key_env"),
        system_prompt=None if prefix else _text_or_file(args.system_prompt),
        user_template=None if prefix else _text_or_file(args.user_template),
        temperature=args.temperature,
        max_tokens=None if prefix else args.max_tokens,
        timeout_s=args.timeout,
        max_retries=args.retries,
    )


def _from_record(args: argparse.Namespace, run: Any) -> None:
    """Fill a resumed run's arguments from its record (what it replays and how it scores)."""
    target = run.target
    args.dataset = f"{run.dataset}@{run.version}"
    args.split = run.split or "all"
    args.evaluator = list(run.evaluators)
    if target.get("kind") == "recorded":
        args.recorded = target.get("source")
    else:
        args.recorded = None
        args.base_url, args.model = target["base_url"], target["model"]
        args.api_key_env = target.get("api_key_env") or args.api_key_env
        args.system_prompt, args.user_template = (
            target.get("system_prompt"),
            target.get("user_template"),
        )
        args.temperature, args.max_tokens = target.get("temperature"), target.get("max_tokens")
    judge = target.get("judge")
    if judge:
        args.judge_base_url, args.judge_model = judge["base_url"], judge["model"]
        args.judge_api_key_env = judge.get("api_key_env") or args.judge_api_key_env
        args.judge_rubric = judge.get("rubric")


def cmd_run(args: argparse.Namespace) -> int:
    """Replay a dataset against a target (or resume a run); exit 0 when every case has a result."""
    from evals.datasets import parse_dataset_ref, read_dataset
    from evals.evaluators import EvaluatorContext, parse_evaluator
    from evals.replay import (
        read_results,
        read_run,
        recorded_outputs,
        reference_outputs,
        replay,
        start_run,
    )
    from evals.targets import OpenAITarget, RateLimiter, RecordedTarget, RecordingTarget
    from store.writer import LakeWriter

    settings, conn = settings_and_catalog(args)
    tables = open_tables(settings)
    project = settings.project
    run = None
    if args.resume:
        try:
            run = read_run(conn, project, args.resume)
        except LookupError as exc:
            return fail(str(exc), 1)
        _from_record(args, run)
    if not args.dataset:
        return fail("say which dataset to replay: --dataset NAME[@VERSION]")
    try:
        name, version = parse_dataset_ref(args.dataset)
        dataset = read_dataset(conn, project, name, version)
    except (ValueError, LookupError) as exc:
        return fail(str(exc), 1)
    if args.concurrency < 1:
        return fail(f"--concurrency must be at least 1, got {args.concurrency}")
    try:
        limiter = RateLimiter(args.rate_limit)
        rubric = _text_or_file(args.judge_rubric)
    except ValueError as exc:
        return fail(f"--rate-limit: {exc}")
    except OSError as exc:
        return fail(f"--judge-rubric: {exc.strerror or exc}: {exc.filename}")
    target: Any
    if args.recorded:
        if args.recorded == "reference":
            target = RecordedTarget(reference_outputs(dataset), "reference")
        else:
            try:
                source = read_run(conn, project, args.recorded)
            except LookupError as exc:
                return fail(f"--recorded: {exc}", 1)
            outputs = recorded_outputs(read_results(conn, project, [source.run_id]))
            target = RecordedTarget(outputs, source.run_id)
    else:
        if not (args.base_url and args.model):
            return fail("a target needs --base-url and --model (or --recorded)")
        try:
            target = OpenAITarget(_target_config(args), limiter)
        except (ValueError, OSError) as exc:
            return fail(str(exc))
    judge = None
    if args.judge_model:
        # Recorded, so the replay traces each judge call with the case it scored.
        judge = RecordingTarget(
            OpenAITarget(_target_config(_judge_args(args), "judge_"), limiter), "judge"
        )
    context = EvaluatorContext(
        data_dir=settings.data_dir, judge=judge, rubric=rubric, cost_of=_cost_of(settings)
    )
    specs = args.evaluator or ["exact"]
    try:
        evaluators = [parse_evaluator(spec, context=context) for spec in specs]
    except ValueError as exc:
        return fail(str(exc))
    names = [e.name for e in evaluators]
    if len(set(names)) < len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        return fail(f"two evaluators would store their scores as {', '.join(twice)}")
    split = None if args.split == "all" else args.split
    if run is None:
        description = target.describe()
        if judge is not None:
            description["judge"] = {**judge.describe(), "rubric": rubric}
        with LakeWriter(tables) as writer:
            run = start_run(
                writer,
                project,
                dataset,
                _Described(target, description),
                specs,
                split=split,
                name=args.name,
            )
        which = "every case" if split is None else f"the {split} split; --split all for every case"
        print(
            f"run {run.run_id}: {run.num_cases:,} cases of {dataset.name}@{dataset.version} "
            f"({which})"
        )
    else:
        print(f"resuming {run.run_id}")
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping: finishing the calls in flight (Ctrl-C again to abort)", file=sys.stderr)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)
    started = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0 or done == total:
            last[0] = now
            print(f"  {done:,}/{total:,} cases ({now - started:.0f} s)", file=sys.stderr)

    try:
        summary = replay(
            conn,
            tables,
            run,
            dataset,
            target,
            evaluators,
            concurrency=args.concurrency,
            retry_errors=args.retry_errors,
            progress=progress,
            stop=stop,
        )
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    elapsed = time.monotonic() - started
    print(
        f"run {summary.run_id}: {summary.num_called:,} called ({summary.num_errors:,} failed), "
        f"{summary.num_skipped:,} already done, {elapsed:.1f} s"
    )
    if summary.interrupted:
        print(f"interrupted: resume with  flywheel eval run --resume {summary.run_id}")
        return 130
    return 0


class _Described:
    """A target whose recorded description adds what the run needs to resume (the judge)."""

    def __init__(self, target: Any, description: dict[str, Any]) -> None:
        self.target, self.description = target, description

    def describe(self) -> dict[str, Any]:
        return self.description

    def complete(self, case: Any) -> Any:
        return self.target.complete(case)


def _judge_args(args: argparse.Namespace) -> argparse.Namespace:
    judge = argparse.Namespace(**vars(args))
    judge.judge_base_url = args.judge_base_url or args.base_url
    if not judge.judge_base_url:
        raise SystemExit("flywheel eval: --judge-model needs --judge-base-url (or --base-url)")
    return judge


def _cost_of(settings: Settings) -> Any:
    from datetime import UTC, datetime

    from analytics.cost import load_price_table
    from evals.compare import cost_usd

    table = load_price_table(settings.price_file)

    def cost_of(completion: Any) -> float | None:
        return cost_usd(
            completion.model,
            completion.input_tokens,
            completion.output_tokens,
            datetime.now(UTC),
            table,
        )

    return cost_of


def cmd_runs(args: argparse.Namespace) -> int:
    """List runs, newest first."""
    from evals.replay import list_runs, target_label

    settings, conn = settings_and_catalog(args)
    frame = list_runs(conn, settings.project)
    if frame.is_empty():
        print(f"no eval runs in project {settings.project!r}")
        return 0
    print(f"{'run':<30} {'dataset':<20} {'target':<28} {'done':>11} {'errors':>6}  started (UTC)")
    for row in frame.to_dicts():
        what = target_label(row["target"])
        print(
            f"{row['run_id']:<30} {row['dataset'] + '@' + str(row['version']):<20} "
            f"{what[:28]:<28} {row['num_done']:>5,}/{row['num_cases']:<5,} "
            f"{row['num_errors']:>6,}  {row['time']:%Y-%m-%d %H:%M}"
        )
    return 0


def _target_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target (an OpenAI-compatible chat-completions endpoint)")
    g.add_argument("--base-url", help="e.g. https://api.openai.com/v1, http://127.0.0.1:8000/v1")
    g.add_argument("--model", dest="model", help="the model to call")
    g.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="VAR",
        help="environment variable holding the key (default OPENAI_API_KEY)",
    )
    g.add_argument("--system-prompt", help="replace the system prompt (text or @file)")
    g.add_argument(
        "--user-template", help="rewrite the last user message; {input} is its text (or @file)"
    )
    g.add_argument("--temperature", type=float, default=0.0, help="default 0")
    g.add_argument("--max-tokens", type=int)
    g.add_argument(
        "--recorded",
        metavar="SOURCE",
        help="no calls: score stored outputs, 'reference' (what production answered) or a run id",
    )
    c = p.add_argument_group("calling")
    c.add_argument("--concurrency", type=int, default=8, help="calls in flight (default 8)")
    c.add_argument("--rate-limit", type=float, metavar="RPS", help="at most this many calls/s")
    c.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    c.add_argument("--retries", type=int, default=4, help="retries on 429/5xx/timeout (default 4)")
    j = p.add_argument_group("LLM judge (for -e judge)")
    j.add_argument("--judge-model")
    j.add_argument("--judge-base-url", help="default: --base-url")
    j.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", metavar="VAR")
    j.add_argument("--judge-rubric", help="the rubric (text or @file); a default rubric otherwise")


def add_eval_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``eval dataset|run|runs|compare`` to the ``flywheel`` parser."""
    from evals.evaluators import EVALUATORS

    ev = subparsers.add_parser(
        "eval",
        help="eval datasets, replays against a candidate, comparisons for CI",
        description="Build datasets from production traces, replay them against a candidate "
        "model or prompt, score and compare.",
    )
    sub = ev.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")

    add_dataset_parser(sub, common)

    names = ", ".join(EVALUATORS)
    p = sub.add_parser(
        "run",
        parents=[common],
        help="replay a dataset against a target and score it",
        description="Replay every case of a dataset version on a target, score each with the "
        "evaluators, store results as they finish (resumable). The replay's own traces land "
        f"in project <project>.eval. Evaluators: {names}.",
        epilog=_EPILOG_EVALUATORS,
    )
    p.add_argument("--dataset", metavar="NAME[@VERSION]")
    p.add_argument(
        "--split",
        choices=["all", "test", "holdout"],
        default="test",
        help="which cases (default test)",
    )
    p.add_argument(
        "-e",
        "--evaluator",
        action="append",
        metavar="SPEC",
        help="name or name:argument, e.g. exact, regex:^\\d+$, json_schema:s.json, "
        "max_latency_ms:2000, judge, py:module:function (repeatable; default exact)",
    )
    p.add_argument("--name", help="a label for the run")
    p.add_argument("--resume", metavar="RUN_ID", help="finish an interrupted run")
    p.add_argument(
        "--retry-errors", action="store_true", help="when resuming, call failed cases again"
    )
    _target_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", parents=[common], help="eval runs, newest first")
    p.set_defaults(func=cmd_runs)

    add_compare_parser(sub, common)
