"""Alert rules as data, evaluated over windows that end at a moment, with their evidence.

A rule file (``alerts.toml`` documents the format; ``FLYWHEEL_ALERTS_FILE`` replaces it) lists
rules: a metric, a window, a threshold, a direction and a severity. :func:`evaluate_alerts`
computes each rule's metric over ``[at − window, at)`` with the same analytics the pages use,
and says whether it fires and why (the counts behind the value). A window with fewer than
``min_requests`` requests is not judged: no data is not an alert. :func:`record_alerts` keeps
fired alerts in the lake's ``alerts`` table (one small segment per check, like annotations), so
the Alerts page can show what fired and when.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from analytics.drift import embedding_drift
from analytics.goodput import burn_rate, goodput_summary
from analytics.guardrails import guardrail_spikes
from analytics.overview import overview_summary
from analytics.scope import Scope, run_scoped
from analytics.slos import SLOConfig
from store.catalog import query
from store.lake import ALERTS, Lake, as_lake
from store.schema import ALERT_SCHEMA

__all__ = [
    "ALERT_METRICS",
    "AlertConfig",
    "AlertConfigError",
    "AlertResult",
    "AlertRule",
    "evaluate_alerts",
    "format_window",
    "load_alert_config",
    "parse_alert_config",
    "parse_window",
    "read_alerts",
    "record_alerts",
]

#: What a rule can watch.
ALERT_METRICS: tuple[str, ...] = (
    "error_rate",
    "burn_rate",
    "guardrail_spikes",
    "cost_per_day",
    "feedback_rate",
    "drift_score",
)
SEVERITIES: tuple[str, ...] = ("page", "ticket", "info")
_RULE_KEYS = {
    "name", "metric", "window", "threshold", "direction", "severity", "baseline", "min_requests",
}  # fmt: skip
_WINDOW = re.compile(r"(\d+(?:\.\d+)?)\s*(m|h|d|w)")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class AlertConfigError(ValueError):
    """An alert rule file Flywheel cannot use; the message names the file and the rule."""


def parse_window(text: str) -> timedelta:
    """A window such as ``15m``, ``1h``, ``6h``, ``1d``, ``2w``.

    >>> parse_window("6h"), parse_window("1.5d")
    (datetime.timedelta(seconds=21600), datetime.timedelta(days=1, seconds=43200))
    """
    match = _WINDOW.fullmatch(str(text).strip())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"window {text!r}: use a positive number and m, h, d or w, such as 1h")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def format_window(window: timedelta) -> str:
    """A window as a rule file writes it: ``15m``, ``1h``, ``6h``, ``1d``, ``2w``.

    >>> format_window(timedelta(hours=6)), format_window(timedelta(days=14))
    ('6h', '2w')
    """
    minutes = window.total_seconds() / 60
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60)):
        if minutes >= size and minutes % size == 0:
            return f"{minutes / size:g}{unit}"
    return f"{minutes:g}m"


@dataclass(frozen=True)
class AlertRule:
    """One rule: fire when ``metric`` over ``window`` is at or past ``threshold``."""

    name: str
    metric: str
    window: timedelta
    threshold: float
    severity: str = "ticket"
    direction: str = "above"
    baseline: timedelta = timedelta(days=7)
    min_requests: int = 20

    def breached(self, value: float) -> bool:
        """Whether ``value`` is at or past the threshold in the rule's direction."""
        return value >= self.threshold if self.direction == "above" else value <= self.threshold


@dataclass(frozen=True)
class AlertConfig:
    """The rules in force and where they came from."""

    rules: tuple[AlertRule, ...]
    source: str


def parse_alert_config(text: str, source: str) -> AlertConfig:
    """Parse an alert rule file (format in ``analytics/alerts.toml``)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AlertConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(data) - {"schema_version", "rule"}
    if unknown:
        raise AlertConfigError(f"{source}: unknown key(s) {sorted(unknown)}")
    rules = []
    for index, entry in enumerate(data.get("rule", [])):
        where = f"{source}: [[rule]] #{index + 1} ({entry.get('name', 'unnamed')})"
        extra = set(entry) - _RULE_KEYS
        if extra:
            raise AlertConfigError(f"{where}: unknown key(s) {sorted(extra)}")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise AlertConfigError(f"{where}: needs a name")
        if entry.get("metric") not in ALERT_METRICS:
            raise AlertConfigError(
                f"{where}: metric {entry.get('metric')!r} is not one of {', '.join(ALERT_METRICS)}"
            )
        threshold = entry.get("threshold")
        if not isinstance(threshold, int | float) or isinstance(threshold, bool):
            raise AlertConfigError(f"{where}: threshold must be a number")
        if entry.get("severity", "ticket") not in SEVERITIES:
            raise AlertConfigError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
        if entry.get("direction", "above") not in ("above", "below"):
            raise AlertConfigError(f"{where}: direction must be above or below")
        min_requests = entry.get("min_requests", 20)
        if not isinstance(min_requests, int) or isinstance(min_requests, bool) or min_requests < 0:
            raise AlertConfigError(f"{where}: min_requests must be a whole number ≥ 0")
        try:
            window = parse_window(entry.get("window", ""))
            baseline = parse_window(entry.get("baseline", "7d"))
        except ValueError as exc:
            raise AlertConfigError(f"{where}: {exc}") from None
        rules.append(
            AlertRule(
                name=entry["name"],
                metric=entry["metric"],
                window=window,
                threshold=float(threshold),
                severity=entry.get("severity", "ticket"),
                direction=entry.get("direction", "above"),
                baseline=baseline,
                min_requests=min_requests,
            )
        )
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise AlertConfigError(f"{source}: rule names must be unique")
    return AlertConfig(tuple(rules), source)


def load_alert_config(path: Path | None = None) -> AlertConfig:
    """The rules in ``path``, or the built-in ``analytics/alerts.toml`` when no path is given."""
    if path is None:
        text = resources.files("analytics").joinpath("alerts.toml").read_text(encoding="utf-8")
        return parse_alert_config(text, "analytics/alerts.toml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertConfigError(f"{path}: cannot read the alert rules: {exc.strerror}") from None
    return parse_alert_config(text, str(path))


@dataclass(frozen=True)
class AlertResult:
    """A rule evaluated over ``[start, end)``: its value (None: not judged), whether it fired,
    and the evidence (counts and what they came from)."""

    rule: AlertRule
    project: str
    start: datetime
    end: datetime
    value: float | None
    fired: bool
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One line for people: what, how much, against what."""
        if self.value is None:
            return f"{self.rule.name}: not judged ({self.evidence.get('reason', 'no data')})"
        sign = "≥" if self.rule.direction == "above" else "≤"
        state = "FIRING" if self.fired else "ok"
        return (
            f"{self.rule.name}: {state} — {self.rule.metric} {self.value:.4g} "
            f"({sign} {self.rule.threshold:g} fires) over {format_window(self.rule.window)}"
        )


def _not_judged(rule: AlertRule, scope: Scope, reason: str, **evidence: Any) -> AlertResult:
    return AlertResult(
        rule, scope.project, scope.start, scope.end, None, False, {"reason": reason, **evidence}
    )


def _judged(rule: AlertRule, scope: Scope, value: float, **evidence: Any) -> AlertResult:
    return AlertResult(
        rule, scope.project, scope.start, scope.end, value, rule.breached(value), evidence
    )


def _error_rate(
    conn: duckdb.DuckDBPyConnection, rule: AlertRule, scope: Scope, slos: SLOConfig
) -> AlertResult:
    summary = overview_summary(conn, scope)
    evidence = {"num_requests": summary.num_requests, "num_errors": summary.num_errors}
    if summary.num_requests < rule.min_requests or summary.error_rate is None:
        return _not_judged(
            rule, scope, f"{summary.num_requests} requests < {rule.min_requests}", **evidence
        )
    return _judged(rule, scope, summary.error_rate, **evidence)


def _burn_rate(
    conn: duckdb.DuckDBPyConnection, rule: AlertRule, scope: Scope, slos: SLOConfig
) -> AlertResult:
    summary = goodput_summary(conn, scope, slos)
    num_bad = summary.num_requests - summary.num_good
    evidence = {
        "num_requests": summary.num_requests,
        "num_bad": num_bad,
        "slo_target": slos.target,
        "slo_file": slos.source,
    }
    value = burn_rate(num_bad, summary.num_requests, slos.target)
    if summary.num_requests < rule.min_requests or value is None:
        return _not_judged(
            rule, scope, f"{summary.num_requests} requests < {rule.min_requests}", **evidence
        )
    return _judged(rule, scope, value, **evidence)


def _guardrail_spikes(
    conn: duckdb.DuckDBPyConnection, rule: AlertRule, scope: Scope, slos: SLOConfig
) -> AlertResult:
    spikes = guardrail_spikes(conn, scope, rule.baseline)
    fired = spikes.filter(spikes["is_spike"])
    evidence = {
        "baseline_s": rule.baseline.total_seconds(),
        "spikes": [
            {k: row[k] for k in ("guardrail", "stage", "category", "num_triggered", "num_checks",
                                 "trigger_rate", "baseline_rate", "p_value")}
            for row in fired.iter_rows(named=True)
        ],
    }  # fmt: skip
    return _judged(rule, scope, float(fired.height), **evidence)


COST_SQL = """
SELECT count(DISTINCT trace_id) AS num_requests, coalesce(sum(total_cost_usd), 0.0) AS cost_usd
FROM scoped_llm_calls
"""


def _cost_per_day(
    conn: duckdb.DuckDBPyConnection, rule: AlertRule, scope: Scope, slos: SLOConfig
) -> AlertResult:
    row = run_scoped(conn, scope, COST_SQL).to_pylist()[0]
    days = (scope.end - scope.start) / timedelta(days=1)
    evidence = {"cost_usd": row["cost_usd"], "days": days, "num_requests": row["num_requests"]}
    return _judged(rule, scope, row["cost_usd"] / days, **evidence)


FEEDBACK_RATE_SQL = """
SELECT
    (SELECT count(*) FROM scoped_traces) AS num_requests,
    (SELECT count(*) FROM scoped_trace_feedback AS f
     WHERE f.trace_id IN (SELECT trace_id FROM scoped_traces)) AS num_feedback
"""


def _feedback_rate(
    conn: duckdb.DuckDBPyConnection, rule: AlertRule, scope: Scope, slos: SLOConfig
) -> AlertResult:
    now = run_scoped(conn, scope, FEEDBACK_RATE_SQL).to_pylist()[0]
    before_scope = replace(scope, start=scope.start - rule.baseline, end=scope.start)
    before = run_scoped(conn, before_scope, FEEDBACK_RATE_SQL).to_pylist()[0]
    evidence = {
        "num_requests": now["num_requests"],
        "num_feedback": now["num_feedback"],
        "baseline_requests": before["num_requests"],
        "baseline_feedback": before["num_feedback"],
    }
    if now["num_requests"] < rule.min_requests or before["num_requests"] < rule.min_requests:
        return _not_judged(rule, scope, "too few requests now or in the baseline", **evidence)
    if before["num_feedback"] == 0:
        return _not_judged(rule, scope, "no feedback in the baseline", **evidence)
    rate = now["num_feedback"] / now["num_requests"]
    base = before["num_feedback"] / before["num_requests"]
    return _judged(rule, scope, rate / base, rate=rate, baseline_rate=base, **evidence)


def _drift_score(
    conn: duckdb.DuckDBPyConnection, rule: AlertRule, scope: Scope, slos: SLOConfig
) -> AlertResult:
    reference = replace(scope, start=scope.start - rule.baseline, end=scope.start)
    try:
        drift = embedding_drift(conn, reference, scope)
    except ValueError as exc:
        return _not_judged(rule, scope, str(exc))
    evidence = {
        "method": drift.method,
        "score": drift.score,
        "drift_threshold": drift.threshold,
        "reference_self_score": drift.reference_self_score,
        "num_reference": drift.num_reference,
        "num_current": drift.num_current,
        "baseline_s": rule.baseline.total_seconds(),
    }
    if drift.num_current < rule.min_requests:
        return _not_judged(
            rule, scope, f"{drift.num_current} texts < {rule.min_requests}", **evidence
        )
    # score as a multiple of its calibrated threshold: 1 is where drift begins
    return _judged(rule, scope, drift.score / drift.threshold, **evidence)


_EVALUATORS: dict[
    str, Callable[[duckdb.DuckDBPyConnection, AlertRule, Scope, SLOConfig], AlertResult]
] = {
    "error_rate": _error_rate,
    "burn_rate": _burn_rate,
    "guardrail_spikes": _guardrail_spikes,
    "cost_per_day": _cost_per_day,
    "feedback_rate": _feedback_rate,
    "drift_score": _drift_score,
}


def evaluate_alerts(
    conn: duckdb.DuckDBPyConnection,
    project: str,
    at: datetime,
    config: AlertConfig,
    slos: SLOConfig,
) -> list[AlertResult]:
    """Every rule evaluated over the window that ends at ``at``, in the file's order."""
    results = []
    for rule in config.rules:
        scope = Scope(project, at - rule.window, at)
        results.append(_EVALUATORS[rule.metric](conn, rule, scope, slos))
    return results


def _alert_id(result: AlertResult) -> str:
    key = f"{result.project}|{result.rule.name}|{result.end.isoformat()}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def record_alerts(where: Lake | Path | str, results: Sequence[AlertResult]) -> int:
    """Keep the fired ones in the ``alerts`` table of ``where`` (a data directory's lake, or
    another store's tables: ``store.lake.as_lake``); returns how many were new.

    An alert is keyed by project, rule and evaluation time, so checking the same moment twice
    records it once.
    """
    fired = [r for r in results if r.fired]
    if not fired:
        return 0
    rows = [
        {
            "project": r.project,
            "alert_id": _alert_id(r),
            "time": r.end,
            "rule": r.rule.name,
            "metric": r.rule.metric,
            "severity": r.rule.severity,
            "value": r.value,
            "threshold": r.rule.threshold,
            "direction": r.rule.direction,
            "window_start": r.start,
            "evidence": json.dumps(r.evidence, default=str, sort_keys=True),
        }
        for r in fired
    ]
    table = pa.Table.from_pylist(rows, schema=ALERT_SCHEMA)
    return as_lake(where).write(ALERTS.name, table).num_written


READ_ALERTS_SQL = """
SELECT time, rule, metric, severity, value, threshold, direction, window_start, evidence
FROM alerts_between($since, $until + INTERVAL 1 MICROSECOND)
WHERE project = $project AND time > $since
ORDER BY time DESC, rule
"""


def read_alerts(
    conn: duckdb.DuckDBPyConnection, project: str, since: datetime, until: datetime
) -> pa.Table:
    """Recorded (fired) alerts of a project checked in ``(since, until]``, newest first: a check
    at ``until`` judged the window that ends there."""
    cur = conn.cursor()
    try:
        cur.execute("SET TimeZone = 'UTC'")
        return query(cur, READ_ALERTS_SQL, {"project": project, "since": since, "until": until})
    finally:
        cur.close()
