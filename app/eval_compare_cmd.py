"""``flywheel eval compare``: a run against a baseline, as Markdown or JSON, and the CI gate."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.settings import Settings


def _fail(message: str, code: int) -> int:
    print(f"flywheel eval compare: {message}", file=sys.stderr)
    return code


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
    from analytics.cost import install_prices, load_price_table
    from app.stores import open_store
    from evals.compare import compare_runs
    from evals.datasets import read_dataset
    from evals.replay import read_results, read_run

    settings = Settings.from_args(args)
    conn = open_store(settings)
    install_prices(conn, settings.price_file)
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


def add_compare_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``compare`` to the ``flywheel eval`` subcommands."""
    p = sub.add_parser(
        "compare",
        parents=[common],
        help="a run vs a baseline run; gate CI on a regression",
        description="Per evaluator: means, the paired difference with a bootstrap 95%% CI, "
        "wins/losses/ties and a paired permutation p-value; latency and cost; the regressed "
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
