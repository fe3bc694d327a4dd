"""``flywheel report opportunities``: the Opportunities page as Markdown on stdout — what an exact
and a semantic cache would have saved and risked, and where a cheaper model already does as
well."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from analytics.cache import CacheRules, ExactCache, exact_cache_opportunity
from analytics.routing import Routing, routing_opportunity
from analytics.semantic_cache import (
    DEFAULT_THRESHOLDS,
    SemanticCache,
    semantic_cache_opportunity,
)
from app.report import add_scope_arguments, duration_text, scope_from_args
from app.settings import Settings

MAX_TEXT = 80


def _short(text: Any, size: int = MAX_TEXT) -> str:
    """One line of a text for a Markdown table cell."""
    flat = " ".join(str(text or "").split()).replace("|", "\\|")
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}" if value >= 1 else f"${value:,.4f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def render_exact(exact: ExactCache) -> list[str]:
    """The exact-cache section."""
    excluded = ", ".join(f"{n:,} {why.replace('_', '-')}" for why, n in exact.num_excluded.items())
    lines = [
        "## Exact cache",
        "",
        f"Time to live {duration_text(exact.ttl)}: **{exact.num_hits:,} of {exact.num_calls:,} calls "
        f"({_pct(exact.hit_rate)})** repeat an identical earlier request, saving "
        f"{_usd(exact.saved_cost_usd)} ({_usd(exact.monthly_saving_usd)} a month) and "
        f"{exact.saved_latency_ms / 1000:,.1f} s of model time. Excluded: {excluded or 'none'}.",
    ]
    if exact.repeats.height:
        lines += ["", "| input | model | calls | hits | saved |", "|---|---|---:|---:|---:|"]
        for row in exact.repeats.to_dicts():
            lines.append(
                f"| {_short(row['input_text'])} | {row['model']} | {row['num_calls']} "
                f"| {row['num_hits']} | {_usd(row['saved_cost_usd'])} |"
            )
    return lines


def render_semantic(semantic: SemanticCache) -> list[str]:
    """The semantic-cache section: per threshold, then the recommendation and examples."""
    lines = [
        "## Semantic cache",
        "",
        f"{semantic.num_compared:,} calls simulated (each compared with the live entries of its "
        f"model and system prompt, served for {duration_text(semantic.ttl)} from when they were "
        f"stored); a hit disagrees when the answers' similarity is below "
        f"{semantic.answer_agreement} or their votes are opposite.",
        "",
        "| threshold | hits | hit rate | saved a month | disagreeing hits (95%) |",
        "|---:|---:|---:|---:|---|",
    ]
    for row in semantic.by_threshold.to_dicts():
        band = (
            "—"
            if row["disagreement_rate"] is None
            else f"{row['disagreement_rate']:.1%} ({row['disagreement_low']:.1%}–"
            f"{row['disagreement_high']:.1%})"
        )
        lines.append(
            f"| {row['threshold']:.2f} | {row['num_hits']:,} | {_pct(row['hit_rate'])} "
            f"| {_usd(row['monthly_saving_usd'])} | {band} |"
        )
    lines += ["", f"**Recommendation.** {semantic.trade_off}"]
    lines += [f"_Note: {note}._" for note in semantic.notes]
    if semantic.examples.height:
        lines += ["", "Examples just above each threshold:", ""]
        lines += ["| threshold | similarity | input | cached input | answers agree |"]
        lines += ["|---:|---:|---|---|---|"]
        for row in semantic.examples.to_dicts():
            lines.append(
                f"| {row['threshold']:.2f} | {row['similarity']:.3f} | {_short(row['input_text'], 60)} "
                f"| {_short(row['cached_input'], 60)} | {'no' if row['disagrees'] else 'yes'} |"
            )
    return lines


def render_routing(routing: Routing) -> list[str]:
    """The routing section: recommendations, then every comparison with its reason."""
    lines = [
        "## Routing",
        "",
        f"{routing.intents.height} intents from {routing.num_sampled:,} sampled of "
        f"{routing.num_calls:,} calls; a cheaper model does as well when its thumbs-down rate is "
        f"at most {routing.margin:.0%} worse (95% interval)"
        + (f" and its `{routing.eval_metric}` eval score too" if routing.eval_metric else "")
        + ".",
        "",
    ]
    examples = {row["intent"]: row["examples"] for row in routing.intents.to_dicts()}
    if routing.recommendations.height:
        lines += ["| intent | route from | to | saving a month | thumbs-down difference |"]
        lines += ["|---|---|---|---:|---|"]
        for row in routing.recommendations.to_dicts():
            difference = (
                "—"
                if row["down_difference"] is None
                else f"{row['down_difference']:+.1%} ({row['down_low']:+.1%} to "
                f"{row['down_high']:+.1%})"
            )
            lines.append(
                f"| {row['intent']}: {_short((examples.get(row['intent']) or [''])[0], 50)} "
                f"| {row['from_model']} | {row['to_model']} | {_usd(row['monthly_saving_usd'])} "
                f"| {difference} |"
            )
    else:
        lines.append(
            "No intent has a cheaper model that does as well, on the votes and scores there are."
        )
    rejected = routing.candidates.filter(~routing.candidates["recommended"])
    if rejected.height:
        lines += ["", "Not recommended:", ""]
        for row in rejected.sort("monthly_saving_usd", descending=True).head(10).to_dicts():
            lines.append(
                f"- intent {row['intent']}: {row['from_model']} → {row['to_model']} "
                f"({_usd(row['monthly_saving_usd'])} a month): {row['reason']}"
            )
    return lines


def cmd_opportunities(args: argparse.Namespace) -> int:
    """Print the cache and routing opportunities of a scope as Markdown."""
    from analytics.cost import install_prices
    from app.stores import open_store, where_stored

    settings = Settings.from_args(args)
    conn = open_store(settings)
    install_prices(conn, settings.price_file)
    try:
        scope = scope_from_args(conn, args, settings.project)
        patterns = {
            key: value
            for key, value in (("time_sensitive", args.time_pattern),
                               ("user_specific", args.user_pattern))
            if value is not None
        }  # fmt: skip
        rules = CacheRules(
            ttl=timedelta(minutes=args.ttl_minutes),
            exclude_routes=tuple(args.exclude_route or ()),
            per_user=args.per_user,
            **patterns,  # type: ignore[arg-type]
        )
        thresholds = tuple(args.threshold or DEFAULT_THRESHOLDS)
        if not all(0.0 < t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be in (0, 1], got {', '.join(map(str, thresholds))}")
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"flywheel report: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"flywheel report: {exc} in {where_stored(settings)}", file=sys.stderr)
        return 1
    lines = [
        f"# Opportunities: {scope.project}, {scope.start:%Y-%m-%d %H:%M} to "
        f"{scope.end:%Y-%m-%d %H:%M} UTC",
        "",
    ]
    lines += render_exact(exact_cache_opportunity(conn, scope, rules))
    if not args.no_embeddings:
        semantic = semantic_cache_opportunity(
            conn, scope, rules, thresholds=thresholds,
            max_risk=args.max_risk,
        )  # fmt: skip
        lines += ["", *render_semantic(semantic)]
        try:
            routing = routing_opportunity(
                conn, scope, num_intents=args.intents, margin=args.margin,
                eval_metric=args.eval_metric or None,
            )  # fmt: skip
        except ValueError as exc:
            lines += ["", "## Routing", "", f"Not computed: {exc}."]
        else:
            lines += ["", *render_routing(routing)]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def add_opportunities_parser(kinds: Any, common: argparse.ArgumentParser) -> None:
    """Add ``report opportunities`` to the ``report`` subcommands."""
    text = "cache and routing opportunities: savings and risks, as Markdown"
    p = kinds.add_parser(
        "opportunities", parents=[common], help=text,
        description="What an exact and a semantic response cache would have answered, saved "
        "and risked, and the intents where a cheaper model already does as well, as Markdown. "
        "Embeds the inputs (cached in the lake) unless --no-embeddings.",
    )  # fmt: skip
    add_scope_arguments(p)
    p.add_argument("--ttl-minutes", type=float, default=60.0, help="cache time to live (60)")
    p.add_argument(
        "--per-user", action="store_true", help="a cache per user (keeps user-specific requests)"
    )
    p.add_argument(
        "--exclude-route", action="append", metavar="GLOB", help="never cache these routes"
    )
    p.add_argument(
        "--time-pattern",
        metavar="REGEX",
        help="never cache inputs matching this as time-sensitive ('' for none; default: today, "
        "latest, right now, status of …)",
    )
    p.add_argument(
        "--user-pattern",
        metavar="REGEX",
        help="never cache inputs matching this as user-specific ('' for none; default: my "
        "account, my invoice …)",
    )
    p.add_argument(
        "--threshold", type=float, action="append", help="similarity thresholds (repeatable)"
    )
    p.add_argument("--max-risk", type=float, default=0.05, help="disagreeing hits allowed (0.05)")
    p.add_argument("--intents", type=int, default=8, help="intent clusters (8)")
    p.add_argument("--margin", type=float, default=0.05, help="non-inferiority margin (0.05)")
    p.add_argument("--eval-metric", default="judge", help="eval score compared per model (judge)")
    p.add_argument("--no-embeddings", action="store_true", help="the exact cache only")
    p.set_defaults(func=cmd_opportunities)
