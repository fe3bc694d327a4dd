"""``flywheel import-metrics`` (the product's daily metrics) and ``flywheel export preferences|sft``
(training data from feedback)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.report import add_scope_arguments, scope_from_args
from app.settings import Settings

MAX_ERRORS_SHOWN = 5


def cmd_import_metrics(args: argparse.Namespace) -> int:
    """Import daily metric files; 1 when any row was rejected, 2 when a file cannot be read."""
    from app.stores import open_tables
    from ingest.business import read_business_metrics
    from store.lake import BUSINESS_METRICS

    settings = Settings.from_args(args)
    lake = open_tables(settings)
    status = 0
    for path in args.paths:
        try:
            imported = read_business_metrics(path, settings.project)
        except (OSError, ValueError) as exc:
            print(f"flywheel import-metrics: {exc}", file=sys.stderr)
            status = 2
            continue
        written = (
            lake.write(BUSINESS_METRICS.name, imported.table) if imported.table.num_rows else None
        )
        new = written.num_written if written else 0
        line = f"{path}: {imported.table.num_rows:,} values ({new:,} new)"
        if imported.errors:
            line += f", {len(imported.errors):,} rejected"
            status = max(status, 1)
        print(line)
        for error in imported.errors[:MAX_ERRORS_SHOWN]:
            print(f"  rejected: {error}", file=sys.stderr)
        if len(imported.errors) > MAX_ERRORS_SHOWN:
            print(f"  … and {len(imported.errors) - MAX_ERRORS_SHOWN:,} more", file=sys.stderr)
    return status


def _jsonl(rows: list[dict[str, Any]], out: str) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).write_text(text, encoding="utf-8")


def cmd_export(args: argparse.Namespace) -> int:
    """Write DPO pairs or SFT examples as JSON lines; 1 when there is nothing to export."""
    from analytics.cost import install_prices
    from analytics.preferences import preference_pairs, sft_examples
    from app.stores import open_store, where_stored

    settings = Settings.from_args(args)
    conn = open_store(settings)
    install_prices(conn, settings.price_file)
    try:
        scope = scope_from_args(conn, args, settings.project)
    except argparse.ArgumentTypeError as exc:
        print(f"flywheel export: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"flywheel export: {exc} in {where_stored(settings)}", file=sys.stderr)
        return 1
    if args.kind == "preferences":
        sources = tuple(args.source or ("edit", "regeneration"))
        frame = preference_pairs(conn, scope, sources)
        rows = [
            {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
             "metadata": {"source": r["source"], "trace_id": r["trace_id"],
                          "chosen_trace_id": r["other_trace_id"], "model": r["model"],
                          "route": r["route"]}}
            for r in frame.iter_rows(named=True)
        ]  # fmt: skip
    else:
        frame = sft_examples(conn, scope, args.min_rating)
        rows = [
            {"prompt": r["prompt"], "completion": r["completion"],
             "metadata": {"trace_id": r["trace_id"], "model": r["model"], "route": r["route"],
                          "rating": r["rating"]}}
            for r in frame.iter_rows(named=True)
        ]  # fmt: skip
    _jsonl(rows, args.out)
    where = "stdout" if args.out == "-" else args.out
    print(f"{len(rows):,} {args.kind} rows → {where}", file=sys.stderr)
    return 0 if rows else 1


def add_feedback_parsers(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``import-metrics`` and ``export preferences|sft`` to the ``flywheel`` parser."""
    p = subparsers.add_parser(
        "import-metrics",
        parents=[common],
        help="import the product's daily metrics (CSV or Parquet: date, metric, value)",
        description="Import daily business metrics (revenue, sign-ups, …) for the Feedback & "
        "business page's correlations. Columns: date, metric, value (and optionally project). "
        "Bad rows are reported with their line; re-importing adds nothing, a changed value "
        "replaces the earlier one. Exit 1 when a row was rejected, 2 when a file is unreadable.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_import_metrics)

    export = subparsers.add_parser(
        "export",
        help="training data from feedback: DPO preference pairs or SFT examples (JSONL)",
        description="Write training data derived from user feedback as JSON lines.",
    )
    kinds = export.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, text in (
        ("preferences", "DPO pairs {prompt, chosen, rejected} from edits and voted regenerations"),
        ("sft", "SFT examples {prompt, completion} from answers rated highly or voted up"),
    ):
        p = kinds.add_parser(
            kind, parents=[common], help=text, description=text[0].upper() + text[1:] + "."
        )
        add_scope_arguments(p)
        p.add_argument("--out", default="-", help="output file (default: stdout)")
        if kind == "preferences":
            p.add_argument(
                "--source",
                action="append",
                choices=("edit", "regeneration"),
                help="only pairs from this source (repeatable; default both)",
            )
        else:
            p.add_argument(
                "--min-rating",
                type=float,
                default=4.0,
                help="lowest rating that makes an example (default 4; a thumbs up always does)",
            )
        p.set_defaults(func=cmd_export)
