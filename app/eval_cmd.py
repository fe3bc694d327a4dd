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
import json
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.report import add_scope_arguments, scope_from_args
from app.settings import Settings

_EPILOG_EVALUATORS = "evaluators (-e SPEC, repeatable): see the README's Evals section"


def span_conversation(span: Any) -> tuple[list[dict[str, str]], str | None]:
    """A model call's chat input (text messages, roles OpenAI takes) and what it answered, as
    the trace view reads them from any convention."""
    from app.chat import input_messages, output_messages

    messages = [
        {"role": m.role, "content": m.text}
        for m in input_messages(span)
        if m.text and m.role in ("system", "developer", "user", "assistant")
    ]
    answer = "\n".join(m.text for m in output_messages(span) if m.text) or span.output_text
    return messages, answer


def filter_from_text(text: str | None) -> tuple[Any, dict[str, list[str]]]:
    """The Traces page's list filter from a copied page URL or its query string
    (``status=error&q=refund``), and the parameters it held."""
    from app.trace_links import filter_from_params

    if not text:
        return filter_from_params({}), {}
    # A URL (or a path) has a "?" before any "="; in a bare query string a "?" is text
    # (``q=why?``) and must not drop the filter.
    head, question_mark, _ = text.partition("?")
    query = urlsplit(text).query if question_mark and "=" not in head else text
    params = parse_qs(query, keep_blank_values=False)
    return filter_from_params(params), params


def _settings_and_catalog(args: argparse.Namespace) -> tuple[Settings, Any]:
    from analytics.cost import install_prices
    from store.catalog import open_catalog

    settings = Settings.from_args(args)
    conn = open_catalog(settings.data_dir)
    install_prices(conn, settings.price_file)
    return settings, conn


def _fail(message: str, code: int = 2) -> int:
    print(f"flywheel eval: {message}", file=sys.stderr)
    return code


def _dataset_args_error(args: argparse.Namespace) -> str | None:
    """Why a dataset command's name, --holdout or --limit is unusable (None: they are fine),
    checked before any work so a typo is an error message, not a traceback."""
    from evals.datasets import check_dataset_name

    try:
        check_dataset_name(args.name)
    except ValueError as exc:
        return str(exc)
    if not 0.0 <= args.holdout <= 1.0:
        return f"--holdout must be in [0, 1], got {args.holdout}"
    if getattr(args, "limit", 1) < 1:
        return f"--limit must be at least 1, got {args.limit}"
    return None


def cmd_dataset_create(args: argparse.Namespace) -> int:
    """Build a dataset version from the traces that match the filters."""
    from evals.datasets import cases_from_traces, write_dataset

    if error := _dataset_args_error(args):
        return _fail(error)
    filters, params = filter_from_text(args.filter)
    if not args.project and params.get("project"):
        args.project = params["project"][0]
    if params.keys() & {"range", "start", "end", "from", "to"}:
        print(
            "note: the window comes from --since/--until "
            f"({args.since}{' to ' + str(args.until) if args.until else ''}), not the URL's range",
            file=sys.stderr,
        )
    settings, conn = _settings_and_catalog(args)
    if not args.service and params.get("service"):
        args.service = params["service"]
    if not args.model and params.get("model"):
        args.model = params["model"]
    if not args.route and params.get("route"):
        args.route = params["route"]
    try:
        scope = scope_from_args(conn, args, settings.project)
    except argparse.ArgumentTypeError as exc:
        return _fail(str(exc))
    except LookupError as exc:
        return _fail(f"{exc} in {settings.data_dir}", 1)
    built = cases_from_traces(
        conn, scope, filters, span_conversation, limit=args.limit, holdout=args.holdout
    )
    print(
        f"{built.num_traces:,} matching requests: {len(built.cases):,} cases, "
        f"{built.num_duplicates:,} repeated inputs, {built.num_without_answer:,} without a "
        f"model call, {built.num_without_input:,} without input messages"
    )
    if not built.cases:
        return _fail("no cases: nothing matched the filters", 1)
    dataset = write_dataset(
        conn, settings.data_dir, settings.project, args.name, built.cases, append=args.append
    )
    print(f"wrote {dataset.name}@{dataset.version}: {len(dataset.cases):,} cases")
    return 0


def cmd_dataset_import(args: argparse.Namespace) -> int:
    """Import cases from a JSONL file as a new dataset version."""
    from evals.datasets import read_jsonl_cases, write_dataset

    if error := _dataset_args_error(args):
        return _fail(error)
    settings, conn = _settings_and_catalog(args)
    try:
        imported = read_jsonl_cases(args.path, holdout=args.holdout)
    except OSError as exc:
        return _fail(f"{args.path}: {exc.strerror or exc}")
    for error in imported.errors[:5]:
        print(f"  rejected: {error}", file=sys.stderr)
    if len(imported.errors) > 5:
        print(f"  … and {len(imported.errors) - 5:,} more", file=sys.stderr)
    print(
        f"{args.path}: {len(imported.cases):,} cases, {imported.num_duplicates:,} repeated, "
        f"{len(imported.errors):,} rejected"
    )
    if not imported.cases:
        return _fail("no valid cases to import", 1)
    dataset = write_dataset(
        conn, settings.data_dir, settings.project, args.name, imported.cases, append=args.append
    )
    print(f"wrote {dataset.name}@{dataset.version}: {len(dataset.cases):,} cases")
    return 1 if imported.errors else 0


def cmd_dataset_list(args: argparse.Namespace) -> int:
    """List datasets and their versions."""
    from evals.datasets import list_datasets

    settings, conn = _settings_and_catalog(args)
    frame = list_datasets(conn, settings.project)
    if frame.is_empty():
        print(f"no datasets in project {settings.project!r}")
        return 0
    print(f"{'dataset':<24} {'version':>7} {'cases':>7} {'holdout':>7}  created (UTC)")
    for row in frame.to_dicts():
        print(
            f"{row['dataset']:<24} {row['version']:>7} {row['num_cases']:>7,} "
            f"{row['num_holdout']:>7,}  {row['time']:%Y-%m-%d %H:%M}"
        )
    return 0


def cmd_dataset_show(args: argparse.Namespace) -> int:
    """Print a dataset version's cases as JSON lines (the import format)."""
    from evals.datasets import parse_dataset_ref, read_dataset

    settings, conn = _settings_and_catalog(args)
    try:
        name, version = parse_dataset_ref(args.dataset)
        dataset = read_dataset(conn, settings.project, name, version)
    except (ValueError, LookupError) as exc:
        return _fail(str(exc), 1)
    for case in dataset.split(None if args.split == "all" else args.split):
        line = {
            "messages": [dict(m) for m in case.messages],
            "reference": case.reference,
            "split": case.split,
            "metadata": dict(case.metadata),
            "trace_id": case.source_trace_id,
        }
        sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    return 0


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
    from evals.targets import OpenAITarget, RateLimiter, RecordedTarget
    from store.writer import LakeWriter

    settings, conn = _settings_and_catalog(args)
    project = settings.project
    run = None
    if args.resume:
        try:
            run = read_run(conn, project, args.resume)
        except LookupError as exc:
            return _fail(str(exc), 1)
        _from_record(args, run)
    if not args.dataset:
        return _fail("say which dataset to replay: --dataset NAME[@VERSION]")
    try:
        name, version = parse_dataset_ref(args.dataset)
        dataset = read_dataset(conn, project, name, version)
    except (ValueError, LookupError) as exc:
        return _fail(str(exc), 1)
    limiter = RateLimiter(args.rate_limit)
    target: Any
    if args.recorded:
        if args.recorded == "reference":
            target = RecordedTarget(reference_outputs(dataset), "reference")
        else:
            target = RecordedTarget(
                recorded_outputs(read_results(conn, project, [args.recorded])), args.recorded
            )
    else:
        if not (args.base_url and args.model):
            return _fail("a target needs --base-url and --model (or --recorded)")
        try:
            target = OpenAITarget(_target_config(args), limiter)
        except (ValueError, OSError) as exc:
            return _fail(str(exc))
    judge = None
    if args.judge_model:
        judge = OpenAITarget(_target_config(_judge_args(args), "judge_"), limiter)
    rubric = _text_or_file(args.judge_rubric)
    context = EvaluatorContext(
        data_dir=settings.data_dir, judge=judge, rubric=rubric, cost_of=_cost_of(settings)
    )
    specs = args.evaluator or ["exact"]
    try:
        evaluators = [parse_evaluator(spec, context=context) for spec in specs]
    except ValueError as exc:
        return _fail(str(exc))
    split = None if args.split == "all" else args.split
    if run is None:
        description = target.describe()
        if judge is not None:
            description["judge"] = {**judge.describe(), "rubric": rubric}
        with LakeWriter(settings.data_dir) as writer:
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
            settings.data_dir,
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
    from evals.replay import list_runs

    settings, conn = _settings_and_catalog(args)
    frame = list_runs(conn, settings.project)
    if frame.is_empty():
        print(f"no eval runs in project {settings.project!r}")
        return 0
    print(f"{'run':<30} {'dataset':<20} {'target':<28} {'done':>11} {'errors':>6}  started (UTC)")
    for row in frame.to_dicts():
        target = json.loads(row["target"])
        what = target.get("model") or f"recorded:{target.get('source')}"
        print(
            f"{row['run_id']:<30} {row['dataset'] + '@' + str(row['version']):<20} "
            f"{what[:28]:<28} {row['num_done']:>5,}/{row['num_cases']:<5,} "
            f"{row['num_errors']:>6,}  {row['time']:%Y-%m-%d %H:%M}"
        )
    return 0


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_comparison(comparison: Any, num_cases: int) -> str:
    """A comparison as Markdown: the verdict per evaluator, performance, regressed cases."""
    from evals.compare import output_diff

    lines = [
        f"## {comparison.candidate} vs {comparison.baseline}",
        "",
        "| evaluator | pairs | candidate | baseline | difference (95% CI) | W/L/T | p | verdict |",
        "|---|---:|---:|---:|---|---|---:|---|",
    ]
    for e in comparison.evaluators:
        low, high = e.interval
        lines.append(
            f"| {e.evaluator} | {e.num_pairs} | {e.mean_candidate:.3f} | {e.mean_baseline:.3f} "
            f"| {e.mean_difference:+.3f} ({low:+.3f}, {high:+.3f}) "
            f"| {e.num_wins}/{e.num_losses}/{e.num_ties} | {e.p_value:.3g} | {e.verdict} |"
        )
    perf = comparison.performance
    lines += [
        "",
        f"Latency on {perf.num_pairs} cases both answered: median "
        f"{_fmt(perf.median_latency_ms[0], 0)} ms vs {_fmt(perf.median_latency_ms[1], 0)} ms, "
        f"p95 {_fmt(perf.p95_latency_ms[0], 0)} ms vs {_fmt(perf.p95_latency_ms[1], 0)} ms; "
        f"mean cost {_fmt(perf.mean_cost_usd[0], 6)} vs {_fmt(perf.mean_cost_usd[1], 6)} USD.",
    ]
    worst = comparison.cases.filter(comparison.cases["score_difference"] < 0).head(num_cases)
    if worst.height:
        lines += ["", f"### Regressed cases (worst {worst.height})"]
        for row in worst.to_dicts():
            lines += [
                "",
                f"**{row['case_id']}** (score difference {row['score_difference']:+.2f}): "
                f"{(row['input'] or '')[:200]}",
                "```diff",
                output_diff(row["baseline_output"], row["candidate_output"])
                or (row["candidate_error"] or "(same output)"),
                "```",
            ]
    return "\n".join(lines) + "\n"


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare a run with a baseline; exit 1 when a --fail-if-worse evaluator regressed."""
    from analytics.cost import load_price_table
    from evals.compare import compare_runs
    from evals.datasets import read_dataset
    from evals.replay import read_results, read_run

    settings, conn = _settings_and_catalog(args)
    project = settings.project
    try:
        run = read_run(conn, project, args.run)
        base = read_run(conn, project, args.baseline)
    except LookupError as exc:
        return _fail(str(exc), 2)
    if (run.dataset, run.version) != (base.dataset, base.version):
        print(
            f"note: {run.run_id} replays {run.dataset}@{run.version}, {base.run_id} "
            f"{base.dataset}@{base.version}: comparing the cases both have",
            file=sys.stderr,
        )
    dataset = read_dataset(conn, project, run.dataset, run.version)
    results = read_results(conn, project, [run.run_id, base.run_id])
    comparison = compare_runs(
        results.filter(results["run_id"] == run.run_id),
        results.filter(results["run_id"] == base.run_id),
        dataset.cases,
        candidate_name=run.name or run.run_id,
        baseline_name=base.name or base.run_id,
        alpha=args.alpha,
        prices=load_price_table(settings.price_file),
    )
    if args.format == "json":
        sys.stdout.write(json.dumps(_comparison_json(comparison), indent=2) + "\n")
    else:
        sys.stdout.write(render_comparison(comparison, args.cases))
    status = 0
    for metric in args.fail_if_worse or ():
        try:
            item = comparison.evaluator(metric)
        except KeyError as exc:
            return _fail(str(exc.args[0]), 2)
        if item.regression:
            print(
                f"REGRESSION: {metric} {item.mean_difference:+.3f} (p = {item.p_value:.3g})",
                file=sys.stderr,
            )
            status = 1
    return status


def _comparison_json(comparison: Any) -> dict[str, Any]:
    perf = comparison.performance
    return {
        "candidate": comparison.candidate,
        "baseline": comparison.baseline,
        "alpha": comparison.alpha,
        "regressions": comparison.regressions,
        "evaluators": [
            {
                "evaluator": e.evaluator,
                "num_pairs": e.num_pairs,
                "mean_candidate": e.mean_candidate,
                "mean_baseline": e.mean_baseline,
                "mean_difference": e.mean_difference,
                "interval": list(e.interval),
                "wins": e.num_wins,
                "losses": e.num_losses,
                "ties": e.num_ties,
                "p_value": e.p_value,
                "verdict": e.verdict,
            }
            for e in comparison.evaluators
        ],
        "performance": {
            "num_pairs": perf.num_pairs,
            "median_latency_ms": list(perf.median_latency_ms),
            "p95_latency_ms": list(perf.p95_latency_ms),
            "mean_cost_usd": list(perf.mean_cost_usd),
            "total_cost_usd": list(perf.total_cost_usd),
        },
        "regressed_cases": [
            {
                k: row[k]
                for k in (
                    "case_id",
                    "score_difference",
                    "input",
                    "candidate_output",
                    "baseline_output",
                    "candidate_error",
                )
            }
            for row in comparison.cases.filter(comparison.cases["score_difference"] < 0).to_dicts()
        ],
    }


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

    ds = sub.add_parser("dataset", help="create, import, list or show datasets")
    dsub = ds.add_subparsers(dest="dataset_command", required=True, metavar="COMMAND")
    p = dsub.add_parser(
        "create",
        parents=[common],
        help="a dataset version from the traces that match filters",
        description="Each matching request's answer (its last model call) becomes a case: its "
        "input messages, what production answered as the reference, and its model, route, "
        "tokens, latency and votes as metadata. Repeated inputs are kept once.",
    )
    p.add_argument("name")
    p.add_argument(
        "--filter",
        metavar="URL_OR_QUERY",
        help="the Traces page's filters: a copied page URL or its query string, e.g. "
        "'status=ok&q=refund&feedback=thumbs_down'",
    )
    add_scope_arguments(p)
    p.add_argument("--limit", type=int, default=1000, help="newest N requests (default 1000)")
    p.add_argument("--holdout", type=float, default=0.2, help="share held out (default 0.2)")
    p.add_argument("--append", action="store_true", help="keep the previous version's cases")
    p.set_defaults(func=cmd_dataset_create)

    p = dsub.add_parser(
        "import",
        parents=[common],
        help="a dataset version from a JSONL file",
        description="One JSON object per line: messages (OpenAI chat messages) or input (text), "
        "optionally system, reference (or expected / output), metadata, split, trace_id. Bad "
        "lines are reported with their number and skipped (exit 1).",
    )
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--holdout", type=float, default=0.2, help="share held out (default 0.2)")
    p.add_argument("--append", action="store_true", help="keep the previous version's cases")
    p.set_defaults(func=cmd_dataset_import)

    p = dsub.add_parser("list", parents=[common], help="datasets and their versions")
    p.set_defaults(func=cmd_dataset_list)
    p = dsub.add_parser("show", parents=[common], help="a version's cases as JSON lines")
    p.add_argument("dataset", metavar="NAME[@VERSION]")
    p.add_argument("--split", choices=["all", "test", "holdout"], default="all")
    p.set_defaults(func=cmd_dataset_show)

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

    p = sub.add_parser(
        "compare",
        parents=[common],
        help="a run vs a baseline run; gate CI on a regression",
        description="Per evaluator: means, the paired difference with a bootstrap 95%% CI, "
        "wins/losses/ties and a Wilcoxon signed-rank p-value; latency and cost; the regressed "
        "cases first with a diff. Exit 1 when a --fail-if-worse evaluator got significantly "
        "worse, 2 when a run or evaluator is unknown.",
    )
    p.add_argument("run", metavar="RUN", help="a run id, or a run name (its newest run)")
    p.add_argument("--baseline", required=True, metavar="RUN", help="a run id or name")
    p.add_argument(
        "--fail-if-worse",
        action="append",
        metavar="EVALUATOR",
        help="exit 1 if this evaluator (or 'answered') regressed significantly (repeatable)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--format", choices=["markdown", "json"], default="markdown")
    p.add_argument("--cases", type=int, default=5, help="regressed cases shown (default 5)")
    p.set_defaults(func=cmd_compare)


SAMPLE_DATASET = "sample-support"
SAMPLE_EVALUATORS = ("normalized", "max_chars:300", "max_output_tokens:80")


def _first_sentences(text: str, count: int) -> str:
    sentences = [s for s in text.replace("\n", " ").split(". ") if s.strip()]
    short = ". ".join(sentences[:count]).strip()
    return short if short.endswith((".", "?", "!")) else short + "."


def load_sample_evals(settings: Settings) -> str | None:
    """An eval dataset from the sample traces and two runs to compare on the Evals page: what
    production answered, and a simulated candidate that answers in two sentences (its tokens
    and latency scaled by its length). Returns the dataset's name (None: nothing to build)."""
    from dataclasses import replace as with_changes

    from analytics.scope import Scope, data_time_range
    from analytics.traces import TraceFilter
    from evals.datasets import cases_from_traces, write_dataset
    from evals.evaluators import EvaluatorContext, parse_evaluator
    from evals.replay import reference_outputs, replay, start_run
    from evals.targets import RecordedTarget
    from store.catalog import open_catalog
    from store.writer import LakeWriter

    conn = open_catalog(settings.data_dir)
    first, last = data_time_range(conn, settings.project)
    if first is None or last is None:
        return None
    scope = Scope(settings.project, first, last + timedelta(seconds=1))
    built = cases_from_traces(
        conn, scope, TraceFilter(status="ok", operations=("chat",)), span_conversation, limit=200
    )
    if not built.cases:
        return None
    dataset = write_dataset(conn, settings.data_dir, settings.project, SAMPLE_DATASET, built.cases)
    production = reference_outputs(dataset)
    candidate = {}
    for case_id, answer in production.items():
        text = _first_sentences(answer.output or "", 2)
        ratio = len(text.split()) / max(1, len((answer.output or "").split()))
        candidate[case_id] = with_changes(
            answer,
            output=text,
            output_tokens=None
            if answer.output_tokens is None
            else round(answer.output_tokens * ratio),
            latency_ms=None
            if answer.latency_ms is None
            else answer.latency_ms * (0.4 + 0.6 * ratio),
        )
    evaluators = [parse_evaluator(s, context=EvaluatorContext()) for s in SAMPLE_EVALUATORS]
    for name, outputs, source in (
        ("production", production, "reference"),
        ("two-sentence answers (simulated)", candidate, "simulated"),
    ):
        target = RecordedTarget(outputs, source)
        with LakeWriter(settings.data_dir) as writer:
            run = start_run(
                writer, settings.project, dataset, target, SAMPLE_EVALUATORS, split=None, name=name
            )
        replay(conn, settings.data_dir, run, dataset, target, evaluators, concurrency=1)
    return dataset.name
