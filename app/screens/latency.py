"""Latency & goodput: how fast requests are, where the time goes, and how many meet the SLOs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from analytics.goodput import (
    GoodputSummary,
    goodput_summary,
)
from analytics.latency import (
    MEASURES,
    MIN_SAMPLES,
    LatencyPercentiles,
    latency_by_dimension,
    latency_by_time,
    latency_histogram,
    latency_percentiles,
)
from analytics.overview import choose_bucket
from analytics.scope import Scope
from analytics.slos import SLOConfig
from app import components as ui
from app.goodput_view import goodput_tab
from app.throughput_view import prefill_tab, throughput_tab

TABS = ("Latency", "Prefill & decode", "Throughput", "Goodput")
MEASURE_LABELS = {name: label for name, (_, _, label) in MEASURES.items()}
#: The SLO metric that bounds each latency measure (for the SLO line on its chart).
SLO_METRIC = {"request": "latency_ms", "ttft": "ttft_ms", "tpot": "tpot_ms"}
SPLITS = {
    "": "Percentiles",
    "model": "p95 by model",
    "route": "p95 by route",
    "service": "p95 by service",
    "provider": "p95 by provider",
}
DIMENSION_LABELS = {
    "model": "Model",
    "provider": "Provider",
    "service": "Service",
    "route": "Route",
    "operation": "Operation",
    "day": "Day",
}
PERCENTILE_COLORS = {
    "p50_ms": "#9ecae1",
    "p90_ms": "#4292c6",
    "p95_ms": "#08519c",
    "p99_ms": "#d62728",
}
MAX_LINES = 8
#: How a null group reads: a request that called no model, a call of a trace without a root.
NO_GROUP = {"model": "(no model call)", "provider": "(no model call)", "route": "(no root span)"}
PERCENTILE_HELP = "Linear interpolation between closest ranks (numpy's default), n in brackets."


def _tiles(
    request: LatencyPercentiles,
    ttft: LatencyPercentiles,
    tpot: LatencyPercentiles,
    goodput: GoodputSummary,
) -> None:
    row = st.columns(6)
    row[0].metric(
        "Requests", ui.format_count(request.n), help="Traces whose root started in range."
    )
    row[1].metric("Latency p50", ui.format_ms(request.p50), help=PERCENTILE_HELP)
    row[2].metric("Latency p95", ui.format_ms(request.p95), help=PERCENTILE_HELP)
    row[3].metric("Latency p99", ui.format_ms(request.p99), help=PERCENTILE_HELP)
    row[4].metric(
        "TTFT p95",
        ui.format_ms(ttft.p95),
        help=f"Time to first token of streamed model calls ({ui.format_count(ttft.n)} calls).",
    )
    row[5].metric(
        "TPOT p95",
        ui.format_ms(tpot.p95),
        help="(duration − TTFT) ÷ (output tokens − 1), streamed calls with ≥ 2 output tokens "
        f"({ui.format_count(tpot.n)} calls).",
    )
    row = st.columns(6)
    row[0].metric(
        "Good requests",
        ui.format_percent(goodput.good_fraction),
        help=f"Requests that met every SLO that applies to them; target {goodput.target:.1%}.",
    )
    row[1].metric("Goodput", _per_min(goodput.goodput_per_min), help="Good requests per minute.")
    row[2].metric("Throughput", _per_min(goodput.requests_per_min), help="Requests per minute.")
    row[3].metric(
        "Burn rate 1 h",
        _burn(goodput.burn_rate_1h),
        help=f"Over the last hour of the range ({goodput.num_bad_1h} bad of "
        f"{goodput.num_requests_1h} requests): bad share ÷ error budget. 1 spends the budget "
        "exactly; 14.4 is the usual page-now threshold.",
    )
    row[4].metric(
        "Burn rate 6 h",
        _burn(goodput.burn_rate_6h),
        help=f"Over the last six hours ({goodput.num_bad_6h} bad of {goodput.num_requests_6h} "
        "requests); 6 is the usual page-now threshold.",
    )
    row[5].metric("TTFT p50", ui.format_ms(ttft.p50), help=PERCENTILE_HELP)


def _per_min(rate: float | None) -> str:
    if rate is None:
        return ui.EMPTY
    return f"{rate:,.1f}/min" if rate >= 1 else f"{rate:.2f}/min"


def _burn(rate: float | None) -> str:
    return ui.EMPTY if rate is None else f"{rate:.2f}×"


def _slo_lines(figure: Any, config: SLOConfig, measure: str, row: int | None = None) -> None:
    metric = SLO_METRIC.get(measure)
    for slo in config.slos:
        if slo.metric == metric and slo.max_ms is not None:
            where = (
                f" ({', '.join([*slo.routes, *slo.models])})" if slo.routes or slo.models else ""
            )
            kwargs: dict[str, Any] = {"row": row, "col": 1} if row else {}
            figure.add_hline(
                y=slo.max_ms,
                line_dash="dash",
                line_color="#2ca02c",
                annotation_text=f"SLO {slo.name}{where}: {ui.format_ms(slo.max_ms)}",
                annotation_position="top left",
                **kwargs,
            )


def _percentiles_chart(
    series: pl.DataFrame, measure: str, bucket: timedelta, config: SLOConfig
) -> go.Figure:
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.05
    )
    enough = series.filter(pl.col("enough_samples"))
    ends = [(t + bucket).isoformat() for t in series["bucket_start"]]
    for column, color in PERCENTILE_COLORS.items():
        # A bucket with too few samples is left out of the line (a gap), not drawn as noise.
        values = [
            v if ok else None
            for v, ok in zip(series[column], series["enough_samples"], strict=True)
        ]
        figure.add_scatter(
            x=series["bucket_start"].to_list(),
            y=values,
            name=column.removesuffix("_ms"),
            mode="lines+markers",
            line={"color": color},
            customdata=[[end, "", n] for end, n in zip(ends, series["n"], strict=True)],
            hovertemplate="%{y:,.0f} ms (n=%{customdata[2]})",
            row=1,
            col=1,
        )
    colors = ["#4292c6" if ok else "#bdbdbd" for ok in series["enough_samples"]]
    figure.add_bar(
        x=series["bucket_start"].to_list(),
        y=series["n"].to_list(),
        name="samples",
        marker_color=colors,
        customdata=[[end, "", n] for end, n in zip(ends, series["n"], strict=True)],
        hovertemplate="n=%{y}",
        row=2,
        col=1,
        showlegend=False,
    )
    _slo_lines(figure, config, measure, row=1)
    figure.update_yaxes(title_text="ms", row=1, col=1)
    figure.update_yaxes(title_text="n", row=2, col=1)
    title = f"{MEASURE_LABELS[measure]} per {ui.bucket_label(bucket)}"
    if enough.height < series.filter(pl.col("n") > 0).height:
        title += f" — grey buckets have fewer than {MIN_SAMPLES} samples and are not drawn"
    return ui.chart_layout(figure, title, height=420)


def _split_chart(
    series: pl.DataFrame, measure: str, by: str, bucket: timedelta, config: SLOConfig
) -> go.Figure:
    figure = go.Figure()
    top = series.group_by(by).agg(pl.col("n").sum()).sort("n", descending=True).head(MAX_LINES)[by]
    for group in top.to_list():
        rows = series.filter(pl.col(by).is_null() if group is None else pl.col(by) == group)
        values = [
            v if ok else None for v, ok in zip(rows["p95_ms"], rows["enough_samples"], strict=True)
        ]
        ends = [(t + bucket).isoformat() for t in rows["bucket_start"]]
        figure.add_scatter(
            x=rows["bucket_start"].to_list(),
            y=values,
            name=str(group),
            mode="lines+markers",
            customdata=[[e, group or "", n] for e, n in zip(ends, rows["n"], strict=True)],
            hovertemplate="%{y:,.0f} ms (n=%{customdata[2]})",
        )
    _slo_lines(figure, config, measure)
    figure.update_yaxes(title_text="ms")
    title = f"p95 {MEASURE_LABELS[measure].lower()} by {by} per {ui.bucket_label(bucket)}"
    return ui.chart_layout(figure, f"{title} (buckets under {MIN_SAMPLES} samples left out)", 420)


def _selection_link(event: Any, scope: Scope, split: str, sort: str) -> None:
    points = ui.selected_points(event)
    windows = [p.get("customdata") for p in points if p.get("customdata")]
    if not windows:
        ui.drill_down(
            "Open these requests in Traces",
            ui.traces_link(scope, sort=sort),
            "Select points or a box on the chart to open just those time buckets.",
        )
        return
    starts = [datetime.fromisoformat(str(p["x"])) for p in points if p.get("customdata")]
    ends = [datetime.fromisoformat(str(w[0])) for w in windows]
    extra: dict[str, Any] = {"from": ui.iso(min(starts)), "to": ui.iso(max(ends)), "sort": sort}
    groups = sorted({str(w[1]) for w in windows if w[1]})
    if split and groups:
        extra[split] = groups
    ui.drill_down(
        f"Open the {len(windows)} selected bucket(s) in Traces", ui.traces_link(scope, **extra)
    )


def _latency_tab(conn: Any, scope: Scope, config: SLOConfig) -> None:
    left, right = st.columns([2, 1])
    with left:
        measure = ui.url_choice(
            st.segmented_control,
            "Measure",
            list(MEASURE_LABELS),
            key="measure",
            format_func=MEASURE_LABELS.__getitem__,
            required=True,
        )
    with right:
        split = ui.url_choice(st.selectbox, "Lines", list(SPLITS), "split", SPLITS.__getitem__)
    # A split divides the samples between groups: wider buckets keep each line drawable.
    bucket = choose_bucket(scope.start, scope.end, max_buckets=20 if split else 60)
    if split and not (measure == "request" and split == "operation"):
        series = latency_by_time(conn, scope, measure, bucket, by=split)  # type: ignore[arg-type]
        figure = _split_chart(series, measure, split, bucket, config)
    else:
        series = latency_by_time(conn, scope, measure, bucket)  # type: ignore[arg-type]
        figure = _percentiles_chart(series, measure, bucket, config)
    event = st.plotly_chart(
        ui.mark_changes(figure, ui.changes(scope)),
        key="latency_chart",
        on_select="rerun",
        selection_mode=("points", "box"),
    )
    _selection_link(event, scope, split, "ttft" if measure == "ttft" else "duration")

    histogram = latency_histogram(conn, scope, measure)  # type: ignore[arg-type]
    _histogram(histogram, measure)
    dimensions = [d for d in DIMENSION_LABELS if not (measure == "request" and d == "operation")]
    left, _ = st.columns([1, 2])
    with left:
        by = ui.url_choice(
            st.selectbox, "Percentiles by", dimensions, "by", DIMENSION_LABELS.__getitem__
        )
    table = latency_by_dimension(conn, scope, measure, by)  # type: ignore[arg-type]
    _percentile_table(table, by, scope)


def _histogram(histogram: pl.DataFrame, measure: str) -> None:
    if histogram.is_empty():
        st.caption(f"No {MEASURE_LABELS[measure].lower()} values in this range.")
        return
    labels = [
        f"≥ {ui.format_ms(lo)} (tail)" if tail else f"{ui.format_ms(lo)}–{ui.format_ms(hi)}"
        for lo, hi, tail in zip(
            histogram["bin_start_ms"], histogram["bin_end_ms"], histogram["is_tail"], strict=True
        )
    ]
    colors = ["#d62728" if tail else "#4292c6" for tail in histogram["is_tail"]]
    figure = go.Figure(go.Bar(x=labels, y=histogram["count"].to_list(), marker_color=colors))
    figure.update_xaxes(showticklabels=False, title_text="ms, 0 → p99; the red bar is the top 1%")
    ui.chart_layout(figure, f"Distribution of {MEASURE_LABELS[measure].lower()}", height=300)
    figure.update_layout(hovermode="closest")
    st.plotly_chart(figure, key="histogram")


def _percentile_table(table: pl.DataFrame, by: str, scope: Scope) -> None:
    if table.is_empty():
        st.caption("No values in this range.")
        return
    links = [ui.group_link(scope, by, value) for value in table[by].to_list()]
    shown = table.with_columns(
        pl.col(by).cast(pl.String).fill_null(NO_GROUP.get(by, "(none)")),
        pl.when(pl.col("enough_samples"))
        .then(pl.lit(""))
        .otherwise(pl.lit("few samples"))
        .alias("note"),
        pl.Series("traces", links),
    ).drop("enough_samples")
    ms = {
        column: st.column_config.NumberColumn(column.removesuffix("_ms"), format="%.0f ms")
        for column in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "max_ms")
    }
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            by: DIMENSION_LABELS[by],
            "n": st.column_config.NumberColumn("n", format="localized"),
            **ms,
            "note": st.column_config.TextColumn(
                "", help=f"Fewer than {MIN_SAMPLES} values: the tail percentiles are noise."
            ),
            "traces": st.column_config.LinkColumn("Traces", display_text="open"),
        },
    )


def render(scope: Scope) -> None:
    """Draw the Latency & goodput page for a scope."""
    conn = ui.catalog()
    config = ui.slo_config()
    request = latency_percentiles(conn, scope, "duration_ms", "scoped_traces")
    ttft = latency_percentiles(conn, scope, "ttft_ms", "scoped_llm_calls")
    tpot = latency_percentiles(conn, scope, "tpot_ms", "scoped_llm_calls")
    goodput = goodput_summary(conn, scope, config)
    _tiles(request, ttft, tpot, goodput)
    if request.n == 0 and ttft.n == 0:
        st.info("No requests in this time range. Widen the range or clear the filters.")
        return
    tabs = st.tabs(list(TABS), key="tab", bind="query-params")
    with tabs[0]:
        if tabs[0].open is not False:
            _latency_tab(conn, scope, config)
    with tabs[1]:
        if tabs[1].open:
            prefill_tab(conn, scope)
    with tabs[2]:
        if tabs[2].open:
            throughput_tab(conn, scope)
    with tabs[3]:
        if tabs[3].open:
            goodput_tab(conn, scope, config)


st.title("Latency & goodput")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
