"""``flywheel eval dataset create|import|list|show``: eval datasets from traces or JSONL."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.report import add_scope_arguments, scope_from_args
from app.settings import Settings
from app.stores import open_tables, where_stored


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


def settings_and_catalog(args: argparse.Namespace) -> tuple[Settings, Any]:
    from analytics.cost import install_prices
    from app.stores import open_store

    settings = Settings.from_args(args)
    conn = open_store(settings)
    install_prices(conn, settings.price_file)
    return settings, conn


def fail(message: str, code: int = 2) -> int:
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


def _write(args: argparse.Namespace, settings: Settings, conn: Any, cases: list[Any]) -> None:
    """Write the cases as the dataset's next version and say which."""
    from evals.datasets import write_dataset

    dataset = write_dataset(
        conn, open_tables(settings), settings.project, args.name, cases, append=args.append
    )
    print(f"wrote {dataset.name}@{dataset.version}: {len(dataset.cases):,} cases")


def cmd_dataset_create(args: argparse.Namespace) -> int:
    """Build a dataset version from the traces that match the filters."""
    from evals.datasets import cases_from_traces

    if error := _dataset_args_error(args):
        return fail(error)
    filters, params = filter_from_text(args.filter)
    if not args.project and params.get("project"):
        args.project = params["project"][0]
    if params.keys() & {"range", "start", "end", "from", "to"}:
        print(
            "note: the window comes from --since/--until "
            f"({args.since}{' to ' + str(args.until) if args.until else ''}), not the URL's range",
            file=sys.stderr,
        )
    settings, conn = settings_and_catalog(args)
    if not args.service and params.get("service"):
        args.service = params["service"]
    if not args.model and params.get("model"):
        args.model = params["model"]
    if not args.route and params.get("route"):
        args.route = params["route"]
    try:
        scope = scope_from_args(conn, args, settings.project)
    except argparse.ArgumentTypeError as exc:
        return fail(str(exc))
    except LookupError as exc:
        return fail(f"{exc} in {where_stored(settings)}", 1)
    built = cases_from_traces(
        conn, scope, filters, span_conversation, limit=args.limit, holdout=args.holdout
    )
    print(
        f"{built.num_traces:,} matching requests: {len(built.cases):,} cases, "
        f"{built.num_duplicates:,} repeated inputs, {built.num_without_answer:,} without a "
        f"model call, {built.num_without_input:,} without input messages"
    )
    if not built.cases:
        return fail("no cases: nothing matched the filters", 1)
    _write(args, settings, conn, built.cases)
    return 0


def cmd_dataset_import(args: argparse.Namespace) -> int:
    """Import cases from a JSONL file as a new dataset version."""
    from evals.datasets import read_jsonl_cases

    if error := _dataset_args_error(args):
        return fail(error)
    settings, conn = settings_and_catalog(args)
    try:
        imported = read_jsonl_cases(args.path, holdout=args.holdout)
    except OSError as exc:
        return fail(f"{args.path}: {exc.strerror or exc}")
    for error in imported.errors[:5]:
        print(f"  rejected: {error}", file=sys.stderr)
    if len(imported.errors) > 5:
        print(f"  … and {len(imported.errors) - 5:,} more", file=sys.stderr)
    print(
        f"{args.path}: {len(imported.cases):,} cases, {imported.num_duplicates:,} repeated, "
        f"{len(imported.errors):,} rejected"
    )
    if not imported.cases:
        return fail("no valid cases to import", 1)
    _write(args, settings, conn, imported.cases)
    return 1 if imported.errors else 0


def cmd_dataset_list(args: argparse.Namespace) -> int:
    """List datasets and their versions."""
    from evals.datasets import list_datasets

    settings, conn = settings_and_catalog(args)
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

    settings, conn = settings_and_catalog(args)
    try:
        name, version = parse_dataset_ref(args.dataset)
        dataset = read_dataset(conn, settings.project, name, version)
    except (ValueError, LookupError) as exc:
        return fail(str(exc), 1)
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


def add_dataset_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``dataset create|import|list|show`` to the ``flywheel eval`` subcommands."""
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
