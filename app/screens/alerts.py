"""Alerts: the rules evaluated at the end of the range, and the alerts recorded by checks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import polars as pl
import streamlit as st

from analytics.alerts import AlertResult, format_window, read_alerts
from analytics.changes import change_impact
from analytics.scope import Scope
from app import components as ui
from app.untrusted import md_escape

SEVERITY_ICONS = {"page": "🔴", "ticket": "🟠", "info": "🔵"}


def _state(result: AlertResult) -> str:
    if result.fired:
        return f"{SEVERITY_ICONS.get(result.rule.severity, '')} firing"
    return "ok" if result.value is not None else "not judged"


def _evidence_text(evidence: dict[str, Any]) -> str:
    """The counts behind a value, as a person reads them (the why first)."""
    parts = [str(evidence["reason"])] if evidence.get("reason") else []
    for s in evidence.get("spikes") or ():
        parts.append(
            f"{s['category'] or 'triggers'} on {s['guardrail']}: "
            f"{ui.format_percent(s['trigger_rate'])} vs {ui.format_percent(s['baseline_rate'])}"
        )
    for key, value in evidence.items():
        if key in ("reason", "spikes", "slo_file") or value is None:
            continue
        if key == "baseline_s":
            parts.append(f"baseline {format_window(timedelta(seconds=float(value)))}")
        elif isinstance(value, float):
            parts.append(f"{key.replace('_', ' ')} {value:.4g}")
        else:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return "; ".join(parts)


def _rules(scope: Scope, results: list[AlertResult]) -> None:
    rows = [
        {
            "state": _state(r),
            "rule": r.rule.name,
            "severity": r.rule.severity,
            "metric": r.rule.metric,
            "value": r.value,
            "threshold": f"{'≥' if r.rule.direction == 'above' else '≤'} {r.rule.threshold:g}",
            "window": format_window(r.rule.window),
            "evidence": _evidence_text(r.evidence),
            "link": ui.evidence_link(scope, r),
        }
        for r in sorted(results, key=lambda r: (not r.fired, r.rule.severity != "page"))
    ]
    st.dataframe(
        pl.DataFrame(rows),
        hide_index=True,
        column_config={
            "state": "State",
            "rule": "Rule",
            "severity": "Severity",
            "metric": "Metric",
            "value": st.column_config.NumberColumn("Value", format="%.4g"),
            "threshold": "Fires at",
            "window": "Window",
            "evidence": st.column_config.TextColumn("Evidence", width="large"),
            "link": st.column_config.LinkColumn("Traces", display_text="open"),
        },
    )


def _recorded(conn: Any, scope: Scope) -> None:
    st.subheader("Recorded alerts", anchor=False)
    recorded = read_alerts(conn, scope.project, scope.start, scope.end)
    if recorded.num_rows == 0:
        st.caption(
            "No alert recorded in this range. `flywheel alerts check` (from cron, say) evaluates "
            "the rules, records what fires here and can post it to a webhook."
        )
        return
    frame = pl.from_arrow(recorded)
    assert isinstance(frame, pl.DataFrame)
    shown = frame.with_columns(
        pl.col("evidence").map_elements(
            lambda text: _evidence_text(json.loads(text)) if text else "", return_dtype=pl.String
        )
    ).select("time", "severity", "rule", "metric", "value", "threshold", "evidence")
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "time": st.column_config.DatetimeColumn("Checked (UTC)", format="YYYY-MM-DD HH:mm"),
            "severity": "Severity",
            "rule": "Rule",
            "metric": "Metric",
            "value": st.column_config.NumberColumn("Value", format="%.4g"),
            "threshold": st.column_config.NumberColumn("Threshold", format="%g"),
            "evidence": st.column_config.TextColumn("Evidence", width="large"),
        },
    )


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "—"
    if "rate" in metric:
        return ui.format_percent(value)
    if "USD" in metric:
        return ui.format_usd(value)
    return ui.format_ms(value)


def _what_changed(conn: Any, scope: Scope) -> None:
    st.subheader("What changed", anchor=False)
    events = ui.changes(scope)
    if not events:
        st.caption(
            "No model version, system prompt, route, tool or price changed in this range "
            "(each is marked on the time-series charts when one does)."
        )
        return
    labels = [f"{e.time:%Y-%m-%d %H:%M} UTC · {e.label}" for e in events]
    picked = st.selectbox("Change", range(len(events)), format_func=labels.__getitem__)
    event = events[int(picked or 0)]
    impact = change_impact(conn, scope, event)
    rows = [
        {
            "metric": r["metric"],
            "day before": f"{_fmt(r['metric'], r['before'])} "
            f"[{_fmt(r['metric'], r['before_low'])}–{_fmt(r['metric'], r['before_high'])}]",
            "n before": r["n_before"],
            "day after": f"{_fmt(r['metric'], r['after'])} "
            f"[{_fmt(r['metric'], r['after_low'])}–{_fmt(r['metric'], r['after_high'])}]",
            "n after": r["n_after"],
            "moved": "yes"
            if r["after_low"] is not None
            and r["before_high"] is not None
            and (r["after_low"] > r["before_high"] or r["after_high"] < r["before_low"])
            else "",
        }
        for r in impact.iter_rows(named=True)
    ]
    st.dataframe(pl.DataFrame(rows), hide_index=True)
    st.caption(
        "95% intervals: order statistics for p95 (distribution-free), Wilson for rates, normal "
        "for the mean cost. “moved”: the intervals do not overlap. A model change compares the "
        "requests that called either version; a system-prompt change, the service's requests."
    )


def render(scope: Scope) -> None:
    """Draw the Alerts page for a scope."""
    conn = ui.catalog()
    results = ui.active_alerts(scope)
    firing = [r for r in results if r.fired]
    st.subheader(f"At the end of the range: {scope.end:%Y-%m-%d %H:%M} UTC", anchor=False)
    if firing:
        names = ", ".join(r.rule.name for r in firing)
        st.error(
            md_escape(f"{len(firing)} of {len(results)} rules firing — {names}"),
            icon=":material/notifications_active:",
        )
    else:
        st.success(f"None of the {len(results)} rules is firing.", icon=":material/check:")
    _rules(scope, results)
    st.caption(
        f"Rules: `{ui.alert_config().source}` (set `FLYWHEEL_ALERTS_FILE` to use your own). "
        "Each rule looks back its window from the end of the range; windows with too few "
        "requests are not judged."
    )
    _recorded(conn, scope)
    _what_changed(conn, scope)


st.title("Alerts")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
