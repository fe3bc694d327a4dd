"""``flywheel alerts check``: evaluate the alert rules, print them, record and send what fired.

Exit codes: 0 nothing fired, 1 at least one rule fired (so a cron job or CI step fails
loudly), 2 the rules, SLOs or options cannot be used. ``--webhook URL`` POSTs a JSON body that
Slack's incoming webhooks accept as is (``text``) and that carries every fired alert with its
evidence (``alerts``); the data directory's own address is the only other thing it names.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analytics.alerts import (
    AlertConfigError,
    AlertResult,
    evaluate_alerts,
    load_alert_config,
)
from analytics.cost import PriceFileError, install_prices
from analytics.scope import data_time_range
from analytics.slos import SLOConfigError, load_slo_config
from app.report import parse_moment
from app.settings import Settings
from app.stores import open_store, open_tables, where_stored

WEBHOOK_TIMEOUT_S = 10.0


def payload(results: list[AlertResult], project: str, at: datetime) -> dict[str, Any]:
    """The webhook body: a Slack-ready ``text`` and the fired alerts with their evidence."""
    fired = [r for r in results if r.fired]
    lines = [
        f"Flywheel: {len(fired)} alert(s) firing for project {project} at {at:%Y-%m-%d %H:%M} UTC"
    ]
    lines += [f"• [{r.rule.severity}] {r.summary}" for r in fired]
    return {
        "text": "\n".join(lines),
        "project": project,
        "evaluated_at": at.isoformat(),
        "alerts": [
            {
                "rule": r.rule.name,
                "metric": r.rule.metric,
                "severity": r.rule.severity,
                "value": r.value,
                "threshold": r.rule.threshold,
                "direction": r.rule.direction,
                "window_start": r.start.isoformat(),
                "window_end": r.end.isoformat(),
                "evidence": r.evidence,
            }
            for r in fired
        ],
    }


def post_webhook(url: str, body: dict[str, Any]) -> None:
    """POST ``body`` as JSON; raise OSError with the reason when the hook does not take it."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body, default=str).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            if not 200 <= response.status < 300:
                raise OSError(f"webhook answered HTTP {response.status}")
    except urllib.error.HTTPError as exc:
        raise OSError(f"webhook answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise OSError(f"webhook unreachable: {exc.reason}") from None


def _table(results: list[AlertResult]) -> str:
    rows = [("rule", "severity", "state", "value", "threshold", "window")]
    for r in results:
        state = "FIRING" if r.fired else ("ok" if r.value is not None else "not judged")
        value = "—" if r.value is None else f"{r.value:.4g}"
        sign = "≥" if r.rule.direction == "above" else "≤"
        rows.append(
            (
                r.rule.name,
                r.rule.severity,
                state,
                value,
                f"{sign} {r.rule.threshold:g}",
                str(r.rule.window),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def cmd_alerts_check(args: argparse.Namespace) -> int:
    """Run ``flywheel alerts check``; see the module docstring for exit codes."""
    from analytics.alerts import record_alerts

    settings = Settings.from_args(args, alerts_file=Path(args.rules) if args.rules else None)
    try:
        config = load_alert_config(settings.alerts_file)
        slos = load_slo_config(settings.slo_file)
        conn = open_store(settings)
        install_prices(conn, settings.price_file)
        if args.at == "latest":
            _, last = data_time_range(conn, settings.project)
            if last is None:
                print(
                    f"flywheel alerts check: no spans in {where_stored(settings)}", file=sys.stderr
                )
                return 2
            at = last
        else:
            at = parse_moment(args.at) if args.at else datetime.now(UTC)
    except (AlertConfigError, SLOConfigError, PriceFileError, argparse.ArgumentTypeError) as exc:
        print(f"flywheel alerts check: {exc}", file=sys.stderr)
        return 2
    results = evaluate_alerts(conn, settings.project, at, config, slos)
    fired = [r for r in results if r.fired]
    if args.format == "json":
        print(json.dumps(payload(results, settings.project, at) | {
            "rules": [{"rule": r.rule.name, "value": r.value, "fired": r.fired, "evidence": r.evidence} for r in results]
        }, default=str, indent=2))  # fmt: skip
    else:
        print(f"alerts · {settings.project} · at {at:%Y-%m-%d %H:%M:%S} UTC · {config.source}")
        print(_table(results))
        for r in fired:
            print(f"FIRING [{r.rule.severity}] {r.summary}", file=sys.stderr)
    if fired:
        try:
            record_alerts(open_tables(settings), fired)
        except OSError as exc:
            print(f"flywheel alerts check: could not record the alerts: {exc}", file=sys.stderr)
        if args.webhook:
            try:
                post_webhook(args.webhook, payload(results, settings.project, at))
            except OSError as exc:
                print(f"flywheel alerts check: {exc}", file=sys.stderr)
    return 1 if fired else 0


def add_alerts_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Add ``alerts check`` to the ``flywheel`` parser."""
    alerts = subparsers.add_parser(
        "alerts",
        help="evaluate the alert rules (exit 1 when one fires)",
        description="Alert rules over the lake: analytics/alerts.toml or $FLYWHEEL_ALERTS_FILE.",
    )
    actions = alerts.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        parents=[common],
        help="evaluate every rule now (or --at), print, record and send what fired",
        description="Evaluate every alert rule over the window ending now (or --at), print a "
        "table, record fired alerts in the lake, POST them to --webhook, and exit 1 when any "
        "fired (0 when none, 2 when the rules or options cannot be used).",
    )
    check.add_argument("--rules", metavar="PATH", help="rule file ($FLYWHEEL_ALERTS_FILE)")
    check.add_argument(
        "--at",
        metavar="TIME",
        help="evaluate at this UTC time instead of now, or 'latest' (the newest span)",
    )
    check.add_argument("--webhook", metavar="URL", help="POST fired alerts here as JSON")
    check.add_argument("--format", choices=("table", "json"), default="table")
    check.set_defaults(func=cmd_alerts_check)
