"""``flywheel report latency|goodput|cost|guardrails``: the numbers of the Latency & goodput,
Cost and Guardrails & quality pages as a table, JSON or CSV, with the same scope (time window,
services, models, routes).

``app/cli.py`` wires it in with ``add_report_parser(subparsers, common)``; each report is a list
of named tables built from ``analytics`` functions, so a number on a page can be scripted and
checked. JSON keys name their units (``ttft_p95_ms``, ``cost_usd``, ``requests_per_min``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from analytics.cost import (
    COST_DIMENSIONS,
    PriceFileError,
    cost_by_dimension,
    cost_projection,
    cost_summary,
    install_prices,
    most_expensive_traces,
    unpriced_models,
)
from analytics.goodput import (
    GOODPUT_DIMENSIONS,
    goodput_by_dimension,
    goodput_summary,
    slo_misses,
)
from analytics.guardrails import (
    GUARDRAIL_DIMENSIONS,
    blocks_followed_by_pass,
    guardrail_rate_by_dimension,
    guardrail_rate_by_guardrail,
    guardrail_spikes,
)
from analytics.latency import DIMENSIONS, latency_by_dimension, latency_percentiles
from analytics.quality import quality_rates
from analytics.scope import Scope, data_time_range
from analytics.slos import SLOConfigError, load_slo_config
from app.settings import Settings, SettingsError
from app.stores import open_store, where_stored

__all__ = [
    "REPORTS",
    "Report",
    "add_report_parser",
    "build_report",
    "cmd_report",
    "duration_text",
    "parse_since",
]

#: Report kind → the dimensions ``--by`` accepts.
REPORTS: dict[str, tuple[str, ...]] = {
    "latency": DIMENSIONS,
    "goodput": GOODPUT_DIMENSIONS,
    "cost": COST_DIMENSIONS,
    "guardrails": GUARDRAIL_DIMENSIONS,
}
DEFAULT_SINCE = "7d"
#: Latency measure → (column prefix, name of its count column).
_LATENCY_PREFIXES = {
    "request": ("latency", "num_requests"),
    "call": ("call_latency", "num_llm_calls"),
    "ttft": ("ttft", "num_streamed_calls"),
    "tpot": ("tpot", "num_tpot_calls"),
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Report:
    """A report: the scope it covers and its tables, the first one the main one."""

    kind: str
    scope: Scope
    tables: dict[str, pl.DataFrame]


# --------------------------------------------------------------------------- time options


def duration_text(span: timedelta) -> str:
    """A time to live in words: ``1 hour``, ``5 minutes``, ``1 day``, ``90 seconds``."""
    seconds = span.total_seconds()
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}" + ("s" if count > 1 else "")
    return f"{seconds:g} seconds"


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time; UTC when it names no zone (``2026-11-20``, ``…T12:00Z``)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time (use 2026-11-20 or 2026-11-20T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_since(text: str, until: datetime) -> datetime:
    """``--since``: a date-time, or a span before ``until`` such as ``90m``, ``24h``, ``7d``, ``2w``.

    >>> from datetime import datetime, UTC
    >>> parse_since("36h", datetime(2026, 11, 27, tzinfo=UTC)).isoformat()
    '2026-11-25T12:00:00+00:00'
    """
    match = _DURATION.fullmatch(text.strip())
    if match:
        return until - timedelta(**{_UNITS[match[2]]: float(match[1])})
    return parse_moment(text)


def _window(
    conn: duckdb.DuckDBPyConnection, args: argparse.Namespace, project: str
) -> tuple[datetime, datetime]:
    if args.until is not None:
        until = args.until
    else:
        _, last = data_time_range(conn, project)
        if last is None:
            raise LookupError(f"no spans for project {project!r}")
        # Like the dashboard's presets: end just after the latest span, on a whole minute.
        minute = int(last.timestamp() // 60) * 60
        until = datetime.fromtimestamp(minute, UTC) + timedelta(minutes=1)
    since = parse_since(args.since, until)
    if since >= until:
        raise argparse.ArgumentTypeError(f"--since {since:%Y-%m-%d %H:%M} is not before --until")
    return since, until


# --------------------------------------------------------------------------- reports


def _latency(conn: duckdb.DuckDBPyConnection, scope: Scope, by: str | None) -> dict[str, Any]:
    if by is None:
        row: dict[str, Any] = {}
        sources = {"request": "scoped_traces"}
        columns = {"request": "duration_ms", "call": "duration_ms", "ttft": "ttft_ms"}
        for measure, (prefix, count) in _LATENCY_PREFIXES.items():
            stats = latency_percentiles(
                conn,
                scope,
                columns.get(measure, "tpot_ms"),
                sources.get(measure, "scoped_llm_calls"),  # type: ignore[arg-type]
            )
            row[count] = stats.n
            for name in ("p50", "p90", "p95", "p99", "mean", "max"):
                row[f"{prefix}_{name}_ms"] = getattr(stats, name)
        return {"latency": pl.DataFrame([row])}
    merged: pl.DataFrame | None = None
    for measure, (prefix, count) in _LATENCY_PREFIXES.items():
        if measure == "request" and by == "operation":
            continue  # a request has no operation
        table = latency_by_dimension(conn, scope, measure, by).drop("enough_samples")  # type: ignore[arg-type]
        table = table.rename(
            {"n": count, **{c: f"{prefix}_{c}" for c in table.columns if c.endswith("_ms")}}
        )
        merged = (
            table
            if merged is None
            else merged.join(table, on=by, how="full", coalesce=True, nulls_equal=True)
        )
    assert merged is not None
    return {f"latency_by_{by}": merged}


def _goodput(
    conn: duckdb.DuckDBPyConnection, scope: Scope, by: str | None, slo_file: Path | None
) -> dict[str, Any]:
    config = load_slo_config(slo_file)
    misses = slo_misses(conn, scope, config)
    if by is not None:
        table = goodput_by_dimension(conn, scope, config, by)  # type: ignore[arg-type]
        return {f"goodput_by_{by}": table, "slos": misses}
    summary = asdict(goodput_summary(conn, scope, config))
    return {"goodput": pl.DataFrame([{"slo_file": config.source, **summary}]), "slos": misses}


def _cost(conn: duckdb.DuckDBPyConnection, scope: Scope, by: str | None) -> dict[str, Any]:
    missing = unpriced_models(conn, scope)
    if by is not None:
        return {f"cost_by_{by}": cost_by_dimension(conn, scope, by), "unpriced_models": missing}  # type: ignore[arg-type]
    projection = cost_projection(conn, scope)
    row = {
        **asdict(cost_summary(conn, scope)),
        "projection_days": projection.recent_days,
        "daily_cost_usd": projection.daily_cost_usd,
        "projected_monthly_usd": projection.projected_monthly_usd,
    }
    return {
        "cost": pl.DataFrame([row]),
        "unpriced_models": missing,
        "most_expensive_traces": most_expensive_traces(conn, scope, limit=10),
    }


def _guardrails(conn: duckdb.DuckDBPyConnection, scope: Scope, by: str | None) -> dict[str, Any]:
    if by is not None:
        return {f"guardrails_by_{by}": guardrail_rate_by_dimension(conn, scope, by)}  # type: ignore[arg-type]
    return {
        "guardrails": guardrail_rate_by_guardrail(conn, scope).with_columns(
            pl.col("categories").list.join(",")
        ),
        "quality": quality_rates(conn, scope),
        "spikes": guardrail_spikes(conn, scope),
        "blocks_followed_by_pass": blocks_followed_by_pass(conn, scope).drop("trace_ids"),
    }


def build_report(
    conn: duckdb.DuckDBPyConnection,
    scope: Scope,
    kind: str,
    by: str | None = None,
    slo_file: Path | None = None,
) -> Report:
    """The tables of one report over a scope (``kind``: ``latency``, ``goodput``, ``cost`` or
    ``guardrails``)."""
    if kind not in REPORTS:
        raise ValueError(f"unknown report {kind!r}; use one of {', '.join(REPORTS)}")
    if by is not None and by not in REPORTS[kind]:
        raise ValueError(f"{kind} cannot be split by {by}; use one of {', '.join(REPORTS[kind])}")
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "latency": lambda: _latency(conn, scope, by),
        "goodput": lambda: _goodput(conn, scope, by, slo_file),
        "cost": lambda: _cost(conn, scope, by),
        "guardrails": lambda: _guardrails(conn, scope, by),
    }
    return Report(kind=kind, scope=scope, tables=builders[kind]())


# --------------------------------------------------------------------------- output


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _scope_dict(scope: Scope) -> dict[str, Any]:
    return {
        "project": scope.project,
        "since": _plain(scope.start),
        "until": _plain(scope.end),
        "services": list(scope.services),
        "models": list(scope.models),
        "routes": list(scope.routes),
    }


def render_json(report: Report) -> str:
    """The report as one JSON object: ``scope``, then each table as a list of rows."""
    body: dict[str, Any] = {"report": report.kind, "scope": _scope_dict(report.scope)}
    for name, table in report.tables.items():
        body[name] = [{k: _plain(v) for k, v in row.items()} for row in table.to_dicts()]
    return json.dumps(body, indent=2, ensure_ascii=False)


def render_csv(report: Report) -> str:
    """The report's main (first) table as CSV, lists joined with ``;``."""
    table = next(iter(report.tables.values()))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.iter_rows():
        writer.writerow(
            [
                "" if v is None else ";".join(map(str, v)) if isinstance(v, list) else _plain(v)
                for v in row
            ]
        )
    return out.getvalue()


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        # For reading; JSON and CSV carry full precision.
        if abs(value) >= 1000:
            return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def render_table(report: Report) -> str:
    """The report as aligned text: a one-row table as name/value lines, others as columns."""
    scope = report.scope
    lines = [f"{report.kind} · {scope.project} · {_plain(scope.start)} → {_plain(scope.end)}"]
    for label, values in (
        ("services", scope.services),
        ("models", scope.models),
        ("routes", scope.routes),
    ):
        if values:
            lines.append(f"{label}: {', '.join(values)}")
    for name, table in report.tables.items():
        lines += ["", f"## {name}"]
        if table.is_empty():
            lines.append("(none)")
        elif table.height == 1 and table.width > 6:
            width = max(map(len, table.columns))
            lines += [f"{k:<{width}}  {_cell(v)}" for k, v in table.row(0, named=True).items()]
        else:
            cells = [[_cell(v) for v in row] for row in table.iter_rows()]
            widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(table.columns)]
            lines.append("  ".join(c.ljust(w) for c, w in zip(table.columns, widths, strict=True)))
            lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_table,
    "json": render_json,
    "csv": render_csv,
}


# --------------------------------------------------------------------------- command


def cmd_report(args: argparse.Namespace) -> int:
    """Run ``flywheel report <kind>``: print the report; 1 when the lake has no spans."""
    settings = Settings.from_args(
        args,
        slo_file=Path(args.slo_file) if getattr(args, "slo_file", None) else None,
        price_file=Path(args.price_file) if args.price_file else None,
    )
    try:
        conn = open_store(settings)
        install_prices(conn, settings.price_file)
        scope = scope_from_args(conn, args, settings.project)
        report = build_report(conn, scope, args.report, args.by, settings.slo_file)
    except (SLOConfigError, PriceFileError, argparse.ArgumentTypeError) as exc:
        print(f"flywheel report: {exc}", file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"flywheel report: {exc} in {where_stored(settings)}", file=sys.stderr)
        return 1
    sys.stdout.write(RENDERERS[args.format](report))
    return 0


STORE_HELP = (
    "use ClickHouse instead of the lake in --data-dir: clickhouse://user:pass@host:8123/db "
    "(clickhouses:// for HTTPS; default $FLYWHEEL_STORE); its tables are created if missing, "
    "--data-dir then keeps only write-ahead logs and caches"
)


def add_scope_arguments(p: argparse.ArgumentParser) -> None:
    """The time window and filters every command that reads a scope of the lake takes."""
    p.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help="window start: a date/time (UTC unless it has a zone) or a span "
        "before --until such as 90m, 24h, 7d, 2w (default 7d)",
    )
    p.add_argument(
        "--until",
        type=parse_moment,
        help="window end, exclusive (default: just after the latest span)",
    )
    p.add_argument(
        "--service", action="append", metavar="NAME", help="only this service (repeatable)"
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="only calls to / requests that called this model (repeatable)",
    )
    p.add_argument(
        "--route",
        action="append",
        metavar="ROUTE",
        help="only this route, the root span name (repeatable)",
    )


def scope_from_args(
    conn: duckdb.DuckDBPyConnection, args: argparse.Namespace, project: str
) -> Scope:
    """The scope :func:`add_scope_arguments` describes (LookupError: the lake has no spans;
    argparse.ArgumentTypeError: a bad window)."""
    since, until = _window(conn, args, project)
    return Scope(
        project=project,
        start=since,
        end=until,
        services=tuple(args.service or ()),
        models=tuple(args.model or ()),
        routes=tuple(args.route or ()),
    )


def add_report_parser(subparsers: Any, common: argparse.ArgumentParser) -> Any:
    """Add ``report latency|goodput|cost|guardrails`` to the ``flywheel`` parser; returns the
    report kinds' subparsers, for other modules to add theirs (``report opportunities``)."""
    report = subparsers.add_parser(
        "report",
        help="latency, goodput, cost or guardrail numbers as a table, JSON or CSV",
        description="Print the numbers of the Latency & goodput, Cost and Guardrails & quality "
        "pages for a time "
        "window and filters, as an aligned table, JSON (keys name their units) or CSV.",
    )
    kinds = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    for kind, text in (
        ("latency", "request latency, model-call latency, TTFT and TPOT percentiles"),
        ("goodput", "good fraction against the SLOs, goodput, burn rates, missed SLOs"),
        ("cost", "spend, cost per request, token split, projection, unpriced models"),
        ("guardrails", "guardrail trigger rates and latency, quality rates, spikes, blocks"),
    ):
        p = kinds.add_parser(
            kind, parents=[common], help=text, description=text[0].upper() + text[1:] + "."
        )
        add_scope_arguments(p)
        p.add_argument("--by", choices=REPORTS[kind], help="one row per group")
        p.add_argument(
            "--format",
            choices=sorted(RENDERERS),
            default="table",
            help="table (default), json (every table) or csv (the main table)",
        )
        p.add_argument(
            "--price-file",
            metavar="PATH",
            help="extra prices over the built-in table ($FLYWHEEL_PRICE_FILE)",
        )
        if kind == "goodput":
            p.add_argument(
                "--slo-file",
                metavar="PATH",
                help="SLO file instead of the built-in one ($FLYWHEEL_SLO_FILE)",
            )
        p.set_defaults(func=cmd_report)
    return kinds


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report command alone (``python -m app.report latency …``), for tests and scripts."""
    parser = argparse.ArgumentParser(prog="flywheel")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir")
    common.add_argument("--project")
    add_report_parser(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(["report", *(argv or sys.argv[1:])])
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"flywheel: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
