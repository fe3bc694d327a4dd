"""The ``flywheel`` command: ingest, serve, compact, sample data, reports, the demo and the dashboard."""

from __future__ import annotations

import argparse
import functools
import getpass
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from app.alerts_cmd import add_alerts_parser
from app.eval_cmd import add_eval_parser
from app.feedback_cmd import add_feedback_parsers
from app.opportunities_cmd import add_opportunities_parser
from app.report import STORE_HELP, add_report_parser
from app.sample_evals import load_sample_evals
from app.settings import Settings, SettingsError
from app.stores import StoreUnreachable, connect_store, open_tables, store_display, where_stored
from ingest.guard import Guard
from ingest.loader import FileReport, ingest_paths
from ingest.redaction import PolicyError, load_policy
from store.lake import Lake
from store.writer import LakeWriter

SAMPLE_FILES = ("traces.pb.gz", "feedback.jsonl.gz")
MAX_ERRORS_SHOWN = 5


def _guard(settings: Settings) -> Guard:
    """The guard stage for ingest: built-in detectors and the redaction policy in force."""
    return Guard(load_policy(settings.redaction_file))


def _print_report(report: FileReport) -> None:
    line = f"{report.path}: {report.num_spans:,} spans"
    if report.num_guardrail_results:
        line += f", {report.num_guardrail_results:,} guardrail results"
    if report.num_feedback:
        line += f", {report.num_feedback:,} feedback"
    if report.num_rejected:
        line += f", {report.num_rejected:,} rejected"
    print(line, flush=True)
    for error in report.errors[:MAX_ERRORS_SHOWN]:
        print(f"  rejected: {error}", file=sys.stderr)
    if report.num_rejected > MAX_ERRORS_SHOWN:
        print(f"  … and {report.num_rejected - MAX_ERRORS_SHOWN:,} more", file=sys.stderr)


def keep_query_work(settings: Settings) -> None:
    """Compute what queries keep per segment (store.derived) for every segment of the lake now,
    so that the first dashboard page after a large ingest does not wait for it. (ClickHouse
    keeps none: nothing to do with ``--store``.)"""
    from analytics.cost import install_prices
    from store.catalog import open_catalog
    from store.derived import Derived

    if settings.store is not None:
        return
    started = time.perf_counter()
    conn = open_catalog(settings.data_dir)
    install_prices(conn, settings.price_file)
    # The load has finished, so its past days will receive nothing more: keep them whole now.
    derived = Derived(settings.data_dir, day_settle=timedelta(0))
    lo, hi = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    kept = derived.ensure(conn, lo + timedelta(days=1), hi - timedelta(days=1))
    conn.close()
    if kept is None:
        print("query work not kept: the data directory is not writable", file=sys.stderr)
        return
    num_files = sum(len(files) for files in kept.files.values())
    print(f"kept query work: {num_files:,} files in {time.perf_counter() - started:.1f} s")


def cmd_ingest(args: argparse.Namespace) -> int:
    """Decode files into the lake; exit 1 when any record was rejected (valid ones still land)."""
    settings = Settings.from_args(args)
    try:
        guard = _guard(settings)
    except PolicyError as exc:
        print(f"flywheel ingest: {exc}", file=sys.stderr)
        return 2
    with LakeWriter(open_tables(settings)) as writer:
        reports = ingest_paths(
            [Path(p) for p in args.paths],
            writer,
            project=settings.project,
            on_file=_print_report,
            guard=guard,
        )
        result = writer.flush()
    if result.num_written or any(r.num_spans for r in reports):
        keep_query_work(settings)
    num_spans = sum(r.num_spans for r in reports)
    num_rejected = sum(r.num_rejected for r in reports)
    print(
        f"ingested {num_spans:,} spans from {len(reports)} file(s) into {where_stored(settings)}"
        f" ({result.num_duplicates:,} already present, skipped); {num_rejected:,} rejected"
    )
    if not reports:
        print("no ingestible files found (.pb, .json, .jsonl, optionally .gz)", file=sys.stderr)
        return 1
    return 1 if num_rejected else 0


def cmd_backfill_guardrails(args: argparse.Namespace) -> int:
    """Write guardrail results for spans already stored: the lake's, or (with ``--store``) the
    OpenTelemetry Collector's in ClickHouse, with the feedback they carry."""
    from app.report import parse_since
    from ingest.loader import backfill_collector_spans, backfill_guardrails

    settings = Settings.from_args(args)
    if settings.store is None:
        if args.since is not None:
            print("flywheel backfill-guardrails: --since applies with --store", file=sys.stderr)
            return 2
        report = backfill_guardrails(settings.data_dir)
        print(
            f"{report.num_results:,} guardrail results and {report.num_feedback:,} feedback "
            f"records read from {report.num_spans:,} spans in {report.num_segments:,} segments, "
            f"{report.num_new:,} new"
        )
        return 0
    try:
        since = None if args.since is None else parse_since(args.since, datetime.now(UTC))
    except argparse.ArgumentTypeError as exc:
        print(f"flywheel backfill-guardrails: {exc}", file=sys.stderr)
        return 2
    from app.stores import open_store

    report = backfill_collector_spans(open_store(settings), open_tables(settings), since=since)
    print(
        f"from the Collector's spans in {where_stored(settings)}: {report.num_results:,} "
        f"guardrail results and {report.num_feedback:,} feedback records read from "
        f"{report.num_spans:,} spans over {report.num_segments:,} day(s), {report.num_new:,} new"
    )
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """Merge small segments of each partition into one."""
    settings = Settings.from_args(args)
    if settings.store is not None:
        print(f"nothing to compact: ClickHouse merges its own parts ({where_stored(settings)})")
        return 0
    lake = Lake(settings.data_dir)
    for table in args.tables:
        result = lake.compact(table, min_segments=args.min_segments)
        print(f"{table}: {result}")
    if "spans" in args.tables:
        keep_query_work(settings)
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    """Write a seeded sample dataset in the chosen formats."""
    from sample_data.formats import write_dataset

    try:
        written = write_dataset(
            args.out,
            num_traces=args.traces,
            days=args.days,
            seed=args.seed,
            formats=tuple(f.strip() for f in args.formats.split(",")),
        )
    except ValueError as exc:
        print(f"flywheel sample-data: {exc}", file=sys.stderr)
        return 2
    for path in written.paths.values():
        print(path)
    print(
        f"{written.num_traces:,} traces, {written.num_spans:,} spans, "
        f"{written.num_feedback:,} feedback records"
    )
    return 0


def sample_data_dir() -> Path:
    """Where the committed sample dataset lives."""
    return Path(str(resources.files("sample_data").joinpath("data")))


def load_sample_data(settings: Settings) -> bool:
    """Ingest the committed sample dataset unless the store already has spans; True if loaded."""
    tables = open_tables(settings)
    if tables.has_data("spans"):
        return False
    files = [sample_data_dir() / name for name in SAMPLE_FILES]
    with LakeWriter(tables) as writer:
        reports = ingest_paths(
            files, writer, project=settings.project, on_file=_print_report, guard=_guard(settings)
        )
        writer.flush()
    loaded = sum(r.num_spans for r in reports) > 0
    if loaded:
        keep_query_work(settings)
        dataset = load_sample_evals(settings)
        if dataset:
            print(f"eval dataset {dataset} with two runs to compare (Evals page)")
    return loaded


def _run_dashboard(settings: Settings, host: str, port: int) -> int:
    script = Path(__file__).with_name("dashboard.py")
    env = dict(
        os.environ,
        FLYWHEEL_DATA_DIR=str(settings.data_dir.resolve()),
        FLYWHEEL_PROJECT=settings.project,
    )
    if settings.store is not None:
        env["FLYWHEEL_STORE"] = settings.store
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]
    print(
        f"Flywheel dashboard on http://{host}:{port}  (data: {where_stored(settings)})",
        flush=True,
    )
    # Become Streamlit rather than wait for it: a signal to this process (a terminal's Ctrl-C,
    # `docker stop`, a test's terminate) then reaches the server instead of orphaning it.
    os.execve(sys.executable, command, env)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the Streamlit dashboard over the lake."""
    settings = Settings.from_args(args)
    return _run_dashboard(
        settings, args.host or settings.dashboard_host, args.port or settings.dashboard_port
    )


def cmd_demo(args: argparse.Namespace) -> int:
    """Load the sample data once, then serve the dashboard on it."""
    settings = Settings.from_args(args)
    if load_sample_data(settings):
        print(f"loaded the sample data into {where_stored(settings)}")
    else:
        print(f"{where_stored(settings)} already has spans; not loading the sample data again")
    if args.no_dashboard:
        return 0
    return _run_dashboard(
        settings, args.host or settings.dashboard_host, args.port or settings.dashboard_port
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the OTLP receiver (HTTP and gRPC) until SIGTERM/SIGINT."""
    from ingest.receiver import ConfigError, Limits, read_tokens, serve
    from ingest.receiver_core import OpenWriter

    settings = Settings.from_args(args)
    try:
        limits = Limits.from_env()
        tokens = read_tokens()
        redaction = load_policy(settings.redaction_file)
    except (ConfigError, PolicyError) as exc:
        print(f"flywheel serve: {exc}", file=sys.stderr)
        return 2

    open_writer: OpenWriter = LakeWriter
    where = f"lake in {settings.data_dir}"
    if settings.store is not None:
        from store.clickhouse.writer import ClickHouseWriter

        engine, database = connect_store(settings.store)
        open_writer = functools.partial(ClickHouseWriter, engine=engine, database=database)
        where = f"{store_display(settings.store)}, log in {settings.data_dir}"

    def ready(port: int, grpc_port: int | None) -> None:
        grpc = f", OTLP/gRPC on {args.host}:{grpc_port}" if grpc_port else ""
        auth = f"{len(tokens)} token(s)" if tokens else f"no auth, project {settings.project!r}"
        print(
            f"flywheel serve: OTLP/HTTP on http://{args.host}:{port}{grpc} ({auth}; {where})",
            flush=True,
        )

    serve(
        settings.data_dir,
        host=args.host,
        port=args.port,
        grpc_port=None if args.grpc_port == 0 else args.grpc_port,
        tokens=tokens,
        project=settings.project,
        limits=limits,
        on_ready=ready,
        redaction=redaction,
        open_writer=open_writer,
    )
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print a hash for FLYWHEEL_DASHBOARD_PASSWORD_HASH; the password comes from stdin or a prompt."""
    from app.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Dashboard password: ")
        if getpass.getpass("Again: ") != password:
            print("flywheel hash-password: the two passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("flywheel hash-password: an empty password cannot protect anything", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with --help on every subcommand."""
    parser = argparse.ArgumentParser(
        prog="flywheel",
        description="Observability and evaluation for LLM applications: OTLP in, Parquet lake, DuckDB, Streamlit.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", help="the lake folder (default: $FLYWHEEL_DATA_DIR or ./flywheel-data)"
    )
    common.add_argument(
        "--project", help="project the data belongs to (default: $FLYWHEEL_PROJECT or 'default')"
    )
    common.add_argument("--store", metavar="URL", help=STORE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="load .pb/.json/.jsonl(.gz) files or folders into the lake",
        description="Load OTLP protobuf (.pb), OTLP/JSON (.json), JSON lines (.jsonl: collector file export, flat spans, feedback), each optionally gzipped, or folders of them. Bad records are reported with file and position; the valid ones land. Re-ingesting adds no duplicates.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="receive OTLP traces over HTTP (4318) and gRPC (4317)",
        description="Serve OTLP/HTTP (/v1/traces, /v1/feedback, /healthz, /metrics) and OTLP/gRPC "
        "TraceService/Export. A batch is acknowledged only once it is fsynced in the write-ahead "
        "log. Tokens: $FLYWHEEL_TOKENS ('token=project,...') or $FLYWHEEL_TOKENS_FILE; limits: "
        "the FLYWHEEL_MAX_*/FLUSH_* variables (see the README). With --store, the log is "
        "flushed into ClickHouse instead of the Parquet lake: one INSERT per table per flush, "
        "the log kept (in --data-dir) until ClickHouse acknowledged it, retried with backoff "
        "while it is down, replayed at start after a crash; re-sent spans are not stored twice.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4318, help="OTLP/HTTP port (default 4318)")
    p.add_argument(
        "--grpc-port", type=int, default=4317, help="OTLP/gRPC port (default 4317; 0: off)"
    )
    p.set_defaults(func=cmd_serve)

    add_opportunities_parser(add_report_parser(sub, common), common)
    add_alerts_parser(sub, common)
    add_feedback_parsers(sub, common)
    add_eval_parser(sub, common)

    p = sub.add_parser(
        "hash-password",
        help="hash a dashboard password for FLYWHEEL_DASHBOARD_PASSWORD_HASH",
        description="Read a password (a prompt, or the first line of stdin) and print its scrypt "
        "hash. Set FLYWHEEL_DASHBOARD_PASSWORD_HASH to it and the dashboard asks for the password.",
    )
    p.set_defaults(func=cmd_hash_password)

    p = sub.add_parser(
        "compact",
        parents=[common],
        help="merge small Parquet segments",
        description="Merge each date partition's small segments into one file (de-duplicating again).",
    )
    p.add_argument(
        "--tables",
        nargs="+",
        default=["spans", "feedback", "guardrails"],
        help="tables to compact (default: spans feedback guardrails)",
    )
    p.add_argument(
        "--min-segments",
        type=int,
        default=2,
        help="compact a partition once it has this many segments",
    )
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser(
        "backfill-guardrails",
        parents=[common],
        help="write guardrail results for spans already stored",
        description="Read every span segment and write the guardrail results the guard stage "
        "would have written (guardrail spans and events, built-in detectors) and the feedback "
        "the spans carry, for spans ingested before it existed. With --store, read the spans "
        "the OpenTelemetry Collector stored in ClickHouse (otel_traces), which no Flywheel "
        "ingest saw; run it from a scheduler with --since. Re-running adds nothing; stored "
        "text is not redacted.",
    )
    p.add_argument(
        "--since",
        help="with --store: only spans from this date/time or this long ago (2h, 1d)",
    )
    p.set_defaults(func=cmd_backfill_guardrails)

    p = sub.add_parser(
        "sample-data",
        help="generate a seeded sample dataset",
        description="Generate realistic traces of a RAG chat product (with seeded scenarios) as OTLP protobuf, OTLP/JSON lines and flat JSONL, plus feedback.",
    )
    p.add_argument("--traces", type=int, default=3000, help="number of traces (default 3000)")
    p.add_argument("--days", type=int, default=14, help="days the traces span (default 14)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--out", default="sample-out", help="output folder (default ./sample-out)")
    p.add_argument(
        "--formats", default="pb,otlp-json,jsonl", help="comma-separated: pb, otlp-json, jsonl"
    )
    p.set_defaults(func=cmd_sample_data)

    for name, func, text in (
        ("demo", cmd_demo, "load the sample data (once) and open the dashboard"),
        ("dashboard", cmd_dashboard, "serve the Streamlit dashboard over the lake"),
    ):
        p = sub.add_parser(
            name, parents=[common], help=text, description=text[0].upper() + text[1:] + "."
        )
        p.add_argument("--host", help="address to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port (default 8501)")
        if name == "demo":
            p.add_argument("--no-dashboard", action="store_true", help="only load the sample data")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flywheel`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (SettingsError, StoreUnreachable) as exc:
        print(f"flywheel: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``flywheel eval dataset show … | head``): not an error of ours.
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
