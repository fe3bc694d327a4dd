"""The Latency & goodput page's Goodput tab: goodput vs throughput, burn rates, missed SLOs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from analytics.goodput import bad_requests, burn_rate_by_time, goodput_by_time, slo_misses
from analytics.overview import choose_bucket
from analytics.scope import Scope
from analytics.slos import SLOConfig
from app import components as ui

__all__ = ["goodput_tab"]


def goodput_tab(conn: Any, scope: Scope, config: SLOConfig) -> None:
    """Goodput against throughput, burn rates, which SLOs are missed, and the bad requests."""
    st.caption(
        f"SLOs from `{config.source}` (set `FLYWHEEL_SLO_FILE` to use your own). A request is "
        "good when it meets every SLO that applies to it; the objective is "
        f"{config.target:.1%} good, so the error budget is {config.error_budget:.1%} of requests."
    )
    _slo_table(conn, scope, config)
    bucket = choose_bucket(scope.start, scope.end)
    label = ui.bucket_label(bucket)
    series = goodput_by_time(conn, scope, config, bucket)
    times = series["bucket_start"].to_list()
    bad_per_min = [
        total - good
        for total, good in zip(series["requests_per_min"], series["goodput_per_min"], strict=True)
    ]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_bar(
        x=times,
        y=series["goodput_per_min"].to_list(),
        name="goodput (good / min)",
        marker_color="#2ca02c",
    )
    figure.add_bar(x=times, y=bad_per_min, name="bad / min", marker_color="#d62728")
    figure.add_scatter(
        x=times,
        y=series["good_fraction"].to_list(),
        name="good fraction",
        line={"color": "#08519c"},
        mode="lines",
        secondary_y=True,
    )
    figure.add_hline(
        y=config.target,
        line_dash="dash",
        line_color="#08519c",
        secondary_y=True,
        annotation_text=f"target {config.target:.1%}",
        annotation_position="bottom right",
    )
    figure.update_layout(barmode="stack")
    ui.mark_changes(figure, ui.changes(scope))
    figure.update_yaxes(title_text="requests / min", secondary_y=False)
    figure.update_yaxes(title_text="good fraction", tickformat=".0%", secondary_y=True)
    event = st.plotly_chart(
        ui.chart_layout(
            figure, f"Goodput vs throughput per {label} (bar height = throughput)", height=380
        ),
        key="goodput_chart",
        on_select="rerun",
        selection_mode=("points", "box"),
    )
    _bucket_link(event, scope, bucket, "Open the bad requests of the selected buckets")
    _burn_chart(conn, scope, config, bucket)
    st.subheader("Latest bad requests")
    bad = bad_requests(conn, scope, config, limit=100)
    if bad.is_empty():
        st.caption("Every request in this range met its SLOs.")
    else:
        _bad_table(bad, scope)


def _slo_table(conn: Any, scope: Scope, config: SLOConfig) -> None:
    misses = slo_misses(conn, scope, config)
    descriptions = {slo.name: slo.description for slo in config.slos}
    links = [ui.traces_link(scope, missed_slo=name) for name in misses["slo"].to_list()]
    st.dataframe(
        misses.select(
            "slo", "objective", "num_applicable", "num_missed", "miss_rate", "num_missed_only"
        ).with_columns(
            pl.col("miss_rate") * 100,
            pl.Series("about", [descriptions[n] for n in misses["slo"]], dtype=pl.String),
            pl.Series("traces", links, dtype=pl.String),
        ),
        hide_index=True,
        column_config={
            "slo": "SLO",
            "objective": "Objective",
            "num_applicable": st.column_config.NumberColumn(
                "Applies to", format="localized", help="Requests the SLO judged."
            ),
            "num_missed": st.column_config.NumberColumn("Missed", format="localized"),
            "miss_rate": st.column_config.NumberColumn("Miss rate", format="%.2f%%"),
            "num_missed_only": st.column_config.NumberColumn(
                "Missed only this",
                format="localized",
                help="Requests that would be good but for this SLO.",
            ),
            "about": "What it promises",
            "traces": st.column_config.LinkColumn("Traces", display_text="open misses"),
        },
    )


def _burn_chart(conn: Any, scope: Scope, config: SLOConfig, bucket: timedelta) -> None:
    burn = burn_rate_by_time(conn, scope, config, bucket)
    ends = burn["window_end"].to_list()
    figure = go.Figure()
    for window, color in (("1h", "#9ecae1"), ("6h", "#08519c")):
        figure.add_scatter(
            x=ends,
            y=burn[f"burn_rate_{window}"].to_list(),
            name=f"{window} window",
            mode="lines+markers",
            line={"color": color},
            customdata=list(zip(burn[f"bad_{window}"], burn[f"requests_{window}"], strict=True)),
            hovertemplate="%{y:.2f}× (%{customdata[0]} bad of %{customdata[1]})",
        )
    figure.add_hline(
        y=1,
        line_dash="dot",
        line_color="#7f7f7f",
        annotation_text="1×: budget spent exactly",
        annotation_position="top left",
    )
    peak = max([v for v in burn["burn_rate_1h"].to_list() if v is not None], default=0.0)
    for level, text, color in (
        (6.0, "6×: page (6 h)", "#ff7f0e"),
        (14.4, "14.4×: page (1 h)", "#d62728"),
    ):
        if peak >= level:
            figure.add_hline(
                y=level,
                line_dash="dash",
                line_color=color,
                annotation_text=text,
                annotation_position="top left",
            )
    ui.mark_changes(figure, ui.changes(scope))
    st.plotly_chart(
        ui.chart_layout(
            figure, f"Error-budget burn rate, at the end of each {ui.bucket_label(bucket)}"
        ),
        key="burn_chart",
    )
    st.caption(
        "Burn rate = share of bad requests ÷ error budget over the hour (or six hours) before "
        "each point. Hover for the counts: a window with few requests swings widely."
    )


def _bucket_link(event: Any, scope: Scope, bucket: timedelta, label: str) -> None:
    points = [p for p in ui.selected_points(event) if p.get("x")]
    if not points:
        ui.drill_down(
            "Open the bad requests in Traces",
            ui.traces_link(scope, missed_slo="any"),
            "Select points or a box on the chart to narrow to those buckets.",
        )
        return
    starts = [datetime.fromisoformat(str(p["x"])) for p in points]
    url = ui.traces_link(
        scope, missed_slo="any", **{"from": ui.iso(min(starts)), "to": ui.iso(max(starts) + bucket)}
    )
    ui.drill_down(label, url)


def _bad_table(bad: pl.DataFrame, scope: Scope) -> None:
    shown = bad.with_columns(
        pl.col("missed_slos").list.join(", "),
        pl.Series(
            "link",
            [
                ui.trace_link(scope, t, start)
                for t, start in bad.select("trace_id", "start_time").iter_rows()
            ],
        ),
    )
    st.dataframe(
        shown.select(
            "link",
            "start_time",
            "route",
            "missed_slos",
            "duration_ms",
            "worst_ttft_ms",
            "worst_tpot_ms",
            "status_code",
        ),
        hide_index=True,
        column_config={
            "link": st.column_config.LinkColumn("Trace", display_text=r"trace=([0-9a-f]{8})"),
            "start_time": st.column_config.DatetimeColumn(
                "Started (UTC)", format="YYYY-MM-DD HH:mm:ss"
            ),
            "route": "Route",
            "missed_slos": "Missed",
            "duration_ms": st.column_config.NumberColumn("Latency", format="%.0f ms"),
            "worst_ttft_ms": st.column_config.NumberColumn("Worst TTFT", format="%.0f ms"),
            "worst_tpot_ms": st.column_config.NumberColumn("Worst TPOT", format="%.1f ms"),
            "status_code": "Status",
        },
    )
