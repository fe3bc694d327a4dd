"""Guardrails & quality: what the layers around the model catch, what slips through, and when
that changes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from analytics.guardrails import (
    GUARDRAIL_DIMENSIONS,
    blocks_followed_by_pass,
    guardrail_latency,
    guardrail_rate_by_dimension,
    guardrail_rate_by_guardrail,
    guardrail_rate_by_time,
    guardrail_results,
    guardrail_spikes,
)
from analytics.overview import choose_bucket
from analytics.quality import quality_rates
from analytics.scope import Scope
from app import components as ui
from app.untrusted import md_escape

MAX_LINES = 8
MIN_CHECKS = 10
BASELINES = {"7": timedelta(days=7), "1": timedelta(days=1), "28": timedelta(days=28)}
SOURCE_LABELS = {"span": "guardrail span", "event": "guardrail event", "detector": "built-in"}
CHECKS_HELP = (
    "A check is one span evaluated by a guardrail (pass or not). Built-in detectors check every "
    "text-generating model call; the JSON check only calls that asked for JSON."
)


def _link(scope: Scope, guardrail: Any, stage: Any = None, category: Any = None) -> str:
    return ui.traces_link(
        scope,
        gr=None if guardrail is None else str(guardrail),
        gr_stage=None if stage is None else str(stage),
        gr_category=None if category is None else str(category),
    )


def _spike_banner(conn: Any, scope: Scope) -> None:
    spikes = guardrail_spikes(conn, scope).filter(pl.col("is_spike"))
    for row in spikes.iter_rows(named=True):
        times = f"×{row['ratio']:,.0f}" if row["ratio"] is not None else "new"
        what = row["category"] or "triggers"
        st.warning(
            md_escape(
                f"Spike: {what} on {row['guardrail']} ({row['stage'] or 'any stage'}) — "
                f"{ui.format_percent(row['trigger_rate'])} of {row['num_checks']:,} checks "
                f"vs {ui.format_percent(row['baseline_rate'])} of "
                f"{row['baseline_checks']:,} in the 7 days before ({times}, "
                f"p = {row['p_value']:.1g})."
            )
            + f" [Open these traces →]({_link(scope, row['guardrail'], row['stage'], row['category'])})",
            icon=":material/trending_up:",
        )


def _quality_tiles(conn: Any, scope: Scope) -> None:
    rates = quality_rates(conn, scope)
    columns = st.columns(len(rates))
    for column, row in zip(columns, rates.iter_rows(named=True), strict=True):
        interval = (
            f"95% interval {ui.format_percent(row['rate_low'])}–{ui.format_percent(row['rate_high'])}. "
            if row["rate"] is not None
            else ""
        )
        denominator = (
            "model calls that asked for JSON (output that is not valid JSON)"
            if row["signal"] == "format_error"
            else "text-generating model calls"
        )
        column.metric(
            row["label"],
            ui.format_percent(row["rate"]),
            help=f"{row['num_flagged']:,} of {row['num_checked']:,} {denominator}. {interval}",
        )
        if row["num_flagged"]:
            column.markdown(
                f"[{row['num_flagged']:,} trace{'s' if row['num_flagged'] != 1 else ''} →]"
                f"({_link(scope, None, None, row['category'])})"
            )
        elif row["num_checked"] == 0:
            column.caption("none checked")


def _by_guardrail(table: pl.DataFrame, scope: Scope) -> None:
    links = [
        _link(scope, g, s) if n else None
        for g, s, n in table.select("guardrail", "stage", "num_triggered").iter_rows()
    ]
    shown = table.with_columns(
        pl.col("trigger_rate") * 100,
        pl.col("source").replace_strict(SOURCE_LABELS, default=pl.col("source")),
        pl.col("categories").list.join(", "),
        pl.Series("traces", links, dtype=pl.String),
    ).select(
        "guardrail",
        "stage",
        "source",
        "categories",
        "num_checks",
        "num_triggered",
        "trigger_rate",
        "num_blocked",
        "num_masked",
        "num_warned",
        "latency_p50_ms",
        "latency_p95_ms",
        "traces",
    )
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "guardrail": "Guardrail",
            "stage": "Stage",
            "source": "From",
            "categories": "Categories triggered",
            "num_checks": st.column_config.NumberColumn(
                "Checks", format="localized", help=CHECKS_HELP
            ),
            "num_triggered": st.column_config.NumberColumn("Triggered", format="localized"),
            "trigger_rate": st.column_config.NumberColumn("Trigger rate", format="%.2f%%"),
            "num_blocked": st.column_config.NumberColumn("Blocked", format="localized"),
            "num_masked": st.column_config.NumberColumn("Masked", format="localized"),
            "num_warned": st.column_config.NumberColumn("Flagged", format="localized"),
            "latency_p50_ms": st.column_config.NumberColumn("p50 latency", format="%.0f ms"),
            "latency_p95_ms": st.column_config.NumberColumn("p95 latency", format="%.0f ms"),
            "traces": st.column_config.LinkColumn("Traces", display_text="open"),
        },
    )


def _over_time(conn: Any, scope: Scope, table: pl.DataFrame) -> None:
    bucket = choose_bucket(scope.start, scope.end, max_buckets=30)
    series = guardrail_rate_by_time(conn, scope, bucket).with_columns(
        # a rate from a handful of checks is noise, not a trend: leave a gap
        pl.when(pl.col("num_checks") >= MIN_CHECKS).then(pl.col("trigger_rate"))
    )
    top = table.filter(pl.col("num_triggered") > 0).head(MAX_LINES)
    figure = go.Figure()
    for name, stage in top.select("guardrail", "stage").iter_rows():
        rows = series.filter(
            (pl.col("guardrail") == name)
            & (pl.col("stage").is_null() if stage is None else pl.col("stage") == stage)
        )
        figure.add_scatter(
            x=rows["bucket_start"].to_list(),
            y=(rows["trigger_rate"] * 100).to_list(),
            customdata=[
                (*r, name, stage) for r in rows.select("num_triggered", "num_checks").rows()
            ],
            name=f"{name} ({stage})" if stage else str(name),
            mode="lines+markers",
            hovertemplate="%{y:.2f}% (%{customdata[0]} of %{customdata[1]})",
        )
    figure.update_yaxes(title_text="% of checks triggered", rangemode="tozero")
    ui.mark_changes(figure, ui.changes(scope))
    event = st.plotly_chart(
        ui.chart_layout(figure, f"Trigger rate per {ui.bucket_label(bucket)}", 380),
        key="guardrail_chart",
        on_select="rerun",
        selection_mode=("points", "box"),
    )
    points = [p for p in ui.selected_points(event) if p.get("customdata")]
    if points:
        starts = [datetime.fromisoformat(str(p["x"])) for p in points]
        window = {"from": ui.iso(min(starts)), "to": ui.iso(max(starts) + bucket)}
        for name, stage in sorted({(p["customdata"][2], p["customdata"][3]) for p in points}):
            ui.drill_down(
                f"Open the traces {name}{f' ({stage})' if stage else ''} triggered on in the "
                "selected buckets",
                ui.traces_link(scope, **window, gr=name, gr_stage=stage),
            )
    else:
        st.caption(
            f"Buckets with fewer than {MIN_CHECKS} checks of a guardrail are left as gaps. "
            "Select points (click, or drag a box) to open their triggered traces."
        )


def _by_dimension(conn: Any, scope: Scope) -> None:
    by = ui.url_choice(
        st.segmented_control, "Trigger rate by", list(GUARDRAIL_DIMENSIONS), "gr_by", str.title
    )
    table = guardrail_rate_by_dimension(conn, scope, by)  # type: ignore[arg-type]
    table = table.filter(pl.col("num_triggered") > 0)
    if table.is_empty():
        st.caption("Nothing triggered in this range.")
        return
    links = [
        _link(scope, g, s) if key is None else ui.traces_link(scope, gr=g, gr_stage=s, **{by: key})
        for key, g, s in table.select(by, "guardrail", "stage").iter_rows()
    ]
    shown = table.with_columns(
        pl.col(by).fill_null("(no model call)" if by == "model" else "(no root span)"),
        pl.col("trigger_rate") * 100,
        pl.Series("traces", links, dtype=pl.String),
    ).select(by, "guardrail", "stage", "num_checks", "num_triggered", "trigger_rate", "traces")
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            by: by.title(),
            "guardrail": "Guardrail",
            "stage": "Stage",
            "num_checks": st.column_config.NumberColumn("Checks", format="localized"),
            "num_triggered": st.column_config.NumberColumn("Triggered", format="localized"),
            "trigger_rate": st.column_config.NumberColumn("Rate", format="%.2f%%"),
            "traces": st.column_config.LinkColumn("Traces", display_text="open"),
        },
    )


def _latency_and_false_positives(conn: Any, scope: Scope) -> None:
    latency = guardrail_latency(conn, scope)
    st.markdown("**Latency guardrails add**")
    row = st.columns(3)
    row[0].metric(
        "Added p50",
        ui.format_ms(latency.added_p50_ms),
        help="Per request, the sum of its guardrail spans' durations.",
    )
    row[1].metric("Added p95", ui.format_ms(latency.added_p95_ms))
    row[2].metric(
        "Share p50",
        ui.format_percent(latency.share_p50),
        help="The added time's share of the request's duration: p50, p95 "
        f"{ui.format_percent(latency.share_p95)}; over "
        f"{latency.num_requests:,} requests with a guardrail span.",
    )
    st.markdown(
        "**Blocked, then passed**",
        help="Input blocks after which the same session (or user) sent a request that passed "
        "the same guardrail within 10 minutes: the user rephrased and got through — a sign "
        "the block may have been a false positive.",
    )
    blocks = blocks_followed_by_pass(conn, scope)
    if blocks.is_empty():
        st.caption("No input guardrail blocked anything in this range.")
        return
    shown = blocks.with_columns(
        pl.col("passed_after_rate") * 100,
        pl.Series(
            "traces",
            [_link(scope, g, "input") for g in blocks["guardrail"]],
            dtype=pl.String,
        ),
    ).select("guardrail", "num_blocked", "num_passed_after", "passed_after_rate", "traces")
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "guardrail": "Guardrail",
            "num_blocked": st.column_config.NumberColumn("Blocked", format="localized"),
            "num_passed_after": st.column_config.NumberColumn("Then passed", format="localized"),
            "passed_after_rate": st.column_config.NumberColumn("Share", format="%.1f%%"),
            "traces": st.column_config.LinkColumn("Blocked traces", display_text="open"),
        },
    )


def _spike_view(conn: Any, scope: Scope) -> None:
    with st.expander("Spike view: this range against its baseline", icon=":material/compare:"):
        days = ui.url_choice(
            st.segmented_control,
            "Baseline: the days before the range",
            list(BASELINES),
            "gr_baseline",
            lambda d: f"{d} day" + ("s" if d != "1" else ""),
        )
        spikes = guardrail_spikes(conn, scope, BASELINES[days])
        if spikes.is_empty():
            st.caption("Nothing triggered in this range.")
            return
        shown = spikes.with_columns(
            pl.col("trigger_rate") * 100,
            pl.col("baseline_rate") * 100,
            pl.when(pl.col("is_spike")).then(pl.lit("▲ spike")).otherwise(pl.lit("")).alias("flag"),
        ).select(
            "flag",
            "guardrail",
            "stage",
            "category",
            "num_triggered",
            "num_checks",
            "trigger_rate",
            "baseline_triggered",
            "baseline_checks",
            "baseline_rate",
            "ratio",
            "p_value",
        )
        st.dataframe(
            shown,
            hide_index=True,
            column_config={
                "flag": "",
                "guardrail": "Guardrail",
                "stage": "Stage",
                "category": "Category",
                "num_triggered": st.column_config.NumberColumn("Triggered", format="localized"),
                "num_checks": st.column_config.NumberColumn("Checks", format="localized"),
                "trigger_rate": st.column_config.NumberColumn("Rate", format="%.2f%%"),
                "baseline_triggered": st.column_config.NumberColumn(
                    "Before: triggered", format="localized"
                ),
                "baseline_checks": st.column_config.NumberColumn(
                    "Before: checks", format="localized"
                ),
                "baseline_rate": st.column_config.NumberColumn("Before: rate", format="%.2f%%"),
                "ratio": st.column_config.NumberColumn("×", format="%.1f"),
                "p_value": st.column_config.NumberColumn(
                    "p-value",
                    format="%.2g",
                    help="One-sided two-proportion z-test that the rate rose. A spike: p < 0.01, "
                    "at least 5 triggers and at least twice the baseline rate.",
                ),
            },
        )


def _results(conn: Any, scope: Scope, table: pl.DataFrame) -> None:
    st.subheader("Results behind the numbers", anchor=False)
    names = [g for g in table.filter(pl.col("num_triggered") > 0)["guardrail"].unique().sort()]
    choice = st.selectbox(
        "Guardrail", ["", *names], key="gr_results", format_func=lambda v: v or "Every guardrail"
    )
    results = guardrail_results(conn, scope, guardrail=choice or None, limit=100)
    if results.is_empty():
        st.caption("No triggered results in this range.")
        return
    shown = results.with_columns(
        pl.col("model", "route", "category").fill_null("—"),
        pl.Series(
            "link",
            [
                ui.trace_link(scope, t, start)
                for t, start in results.select("trace_id", "time").iter_rows()
            ],
        ),
    ).select(
        "link",
        "time",
        "guardrail",
        "stage",
        "category",
        "action",
        "score",
        "reason",
        "model",
        "route",
    )
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            "link": st.column_config.LinkColumn("Trace", display_text=r"trace=([0-9a-f]{8})"),
            "time": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "guardrail": "Guardrail",
            "stage": "Stage",
            "category": "Category",
            "action": "Action",
            "score": st.column_config.NumberColumn("Score", format="%.3f"),
            "reason": "Reason",
            "model": "Model",
            "route": "Route",
        },
    )
    if results.height == 100:
        st.caption("The latest 100 shown; open the traces from the tables above for all of them.")


def render(scope: Scope) -> None:
    """Draw the Guardrails & quality page for a scope."""
    conn = ui.catalog()
    table = guardrail_rate_by_guardrail(conn, scope)
    _spike_banner(conn, scope)
    st.subheader("Quality of model output", anchor=False)
    _quality_tiles(conn, scope)
    st.subheader("Guardrails and detectors", anchor=False)
    if table.is_empty():
        st.info(
            "No guardrail results in this range: no guardrail spans or events, and the built-in "
            "detectors found nothing. Widen the range or clear the filters."
        )
        return
    _by_guardrail(table, scope)
    _over_time(conn, scope, table)
    left, right = st.columns([1, 1])
    with left:
        _by_dimension(conn, scope)
    with right:
        _latency_and_false_positives(conn, scope)
    _spike_view(conn, scope)
    _results(conn, scope, table)


st.title("Guardrails & quality")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
