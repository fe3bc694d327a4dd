"""Cost: what the model calls cost, where the money goes, and what next month will cost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from analytics.cost import (
    COST_DIMENSIONS,
    CostProjection,
    CostSummary,
    cost_by_dimension,
    cost_by_time,
    cost_projection,
    cost_summary,
    most_expensive_traces,
    prices_in_use,
    unpriced_models,
)
from analytics.overview import choose_bucket
from analytics.scope import Scope
from app import components as ui

COST_HELP = (
    "Priced when read from the versioned price table (analytics/prices.toml, plus "
    "FLYWHEEL_PRICE_FILE), unless a span carries its own cost."
)
DIMENSION_LABELS = {
    "model": "Model",
    "provider": "Provider",
    "service": "Service",
    "route": "Route",
    "operation": "Operation",
    "user": "User",
    "session": "Session",
    "day": "Day",
}
SPLIT = {
    "input_cost_usd": ("input (uncached)", "#4292c6"),
    "cache_read_cost_usd": ("cached input", "#9ecae1"),
    "cache_write_cost_usd": ("cache write", "#c6dbef"),
    "output_cost_usd": ("output", "#ff7f0e"),
    "reported_cost_usd": ("reported by the span", "#7f7f7f"),
}
MAX_STACKED = 8


def _tiles(summary: CostSummary, projection: CostProjection) -> None:
    row = st.columns(5)
    row[0].metric("Cost", ui.format_usd(summary.cost_usd), help=COST_HELP)
    row[1].metric(
        "Cost / request",
        ui.format_usd(summary.cost_per_request_usd),
        help="Cost ÷ requests with a model call. Per request: p50 "
        f"{ui.format_usd(summary.cost_per_request_p50_usd)}, p95 "
        f"{ui.format_usd(summary.cost_per_request_p95_usd)}.",
    )
    row[2].metric(
        "Projected / month",
        ui.format_usd(projection.projected_monthly_usd),
        help=f"The spend rate of the last {projection.recent_days:.1f} days of the range "
        f"({ui.format_usd(projection.daily_cost_usd)} a day) × 30 days.",
    )
    row[3].metric("Model calls", ui.format_count(summary.num_llm_calls))
    row[4].metric(
        "Unpriced calls",
        ui.format_count(summary.num_unpriced_calls),
        help="Calls that report tokens but whose model has no price: listed below, not "
        "counted as free.",
    )
    row = st.columns(5)
    row[0].metric(
        "Input tokens",
        ui.format_count(summary.uncached_input_tokens),
        help="Uncached input tokens (input − cache read − cache write).",
    )
    row[1].metric("Cached input tokens", ui.format_count(summary.cache_read_tokens))
    row[2].metric("Output tokens", ui.format_count(summary.output_tokens))
    saved = summary.cache_read_tokens
    row[3].metric(
        "Cache hit share",
        ui.format_percent(saved / summary.input_tokens if summary.input_tokens else None),
        help="Cached input tokens ÷ all input tokens.",
    )
    row[4].metric(
        "Requests",
        ui.format_count(summary.num_requests),
        help="Traces with at least one model call in the range.",
    )


def _over_time(conn: Any, scope: Scope) -> None:
    bucket = choose_bucket(scope.start, scope.end, max_buckets=60)
    series = cost_by_time(conn, scope, bucket, by="model")
    figure = go.Figure()
    totals = (
        series.filter(pl.col("cost_usd") > 0)
        .group_by("model")
        .agg(pl.col("cost_usd").sum())
        .sort("cost_usd", "model", descending=[True, False], nulls_last=True)
    )
    top = totals["model"].head(MAX_STACKED).to_list()
    rest = totals["model"].slice(MAX_STACKED).to_list()
    groups: list[tuple[str, pl.Expr]] = [
        (m or "(no model)", pl.col("model").is_null() if m is None else pl.col("model") == m)
        for m in top
    ]
    if rest:
        groups.append(("other models", pl.col("model").is_in([m for m in rest if m is not None])))
    for name, predicate in groups:  # the costliest at the bottom of each stack
        rows = (
            series.filter(predicate)
            .group_by("bucket_start")
            .agg(pl.col("cost_usd").sum())
            .sort("bucket_start")
        )
        ends = [ui.iso(t + bucket) for t in rows["bucket_start"]]
        figure.add_bar(
            x=rows["bucket_start"].to_list(),
            y=rows["cost_usd"].to_list(),
            name=name,
            customdata=[[end, name] for end in ends],
            hovertemplate="$%{y:,.4f}",
        )
    figure.update_layout(barmode="stack")
    figure.update_yaxes(title_text="USD", tickprefix="$")
    ui.mark_changes(figure, ui.changes(scope))
    event = st.plotly_chart(
        ui.chart_layout(figure, f"Cost per {ui.bucket_label(bucket)}, stacked by model", 380),
        key="cost_chart",
        on_select="rerun",
        selection_mode=("points", "box"),
    )
    points = [p for p in ui.selected_points(event) if p.get("customdata")]
    if points:
        starts = [datetime.fromisoformat(str(p["x"])) for p in points]
        models = sorted({str(p["customdata"][1]) for p in points} - {"other models", "(no model)"})
        extra: dict[str, Any] = {
            "from": ui.iso(min(starts)),
            "to": ui.iso(max(starts) + bucket),
            "sort": "cost",
        }
        if models:
            extra["model"] = models
        ui.drill_down(
            f"Open the {len(points)} selected bar(s) in Traces", ui.traces_link(scope, **extra)
        )
    else:
        ui.drill_down(
            "Open these traces in Traces, costliest first",
            ui.traces_link(scope, sort="cost"),
            "Select bars (click, or drag a box) to open just those buckets and models.",
        )


def _split_chart(by_model: pl.DataFrame) -> None:
    rows = by_model.head(MAX_STACKED)
    labels = [str(m) if m is not None else "(no model)" for m in rows["model"]]
    figure = go.Figure()
    for column, (name, color) in SPLIT.items():
        if rows[column].sum() == 0:
            continue
        figure.add_bar(
            y=labels,
            x=rows[column].to_list(),
            name=name,
            orientation="h",
            marker_color=color,
            hovertemplate="$%{x:,.4f}",
        )
    figure.update_layout(barmode="stack", yaxis={"autorange": "reversed"})
    figure.update_xaxes(title_text="USD", tickprefix="$")
    ui.chart_layout(figure, "Cost by model, split by token type", max(260, 48 * len(labels) + 110))
    figure.update_layout(hovermode="y unified")
    st.plotly_chart(figure, key="split_chart")


def _breakdown(conn: Any, scope: Scope) -> None:
    by = ui.url_choice(
        st.selectbox, "Cost by", list(COST_DIMENSIONS), "cost_by", DIMENSION_LABELS.__getitem__
    )
    table = cost_by_dimension(conn, scope, by, limit=200)  # type: ignore[arg-type]
    if table.is_empty():
        st.caption("No model calls in this range.")
        return
    links = [ui.group_link(scope, by, value, sort="cost") for value in table[by]]
    shown = table.with_columns(
        pl.col(by).cast(pl.String).fill_null("(none)"),
        pl.col("cost_share") * 100,
        pl.Series("traces", links, dtype=pl.String),
    ).select(
        by,
        "cost_usd",
        "cost_share",
        "num_llm_calls",
        "num_requests",
        "cost_per_request_usd",
        "uncached_input_tokens",
        "cache_read_tokens",
        "output_tokens",
        "num_unpriced_calls",
        "traces",
    )
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            by: DIMENSION_LABELS[by],
            "cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
            "cost_share": st.column_config.ProgressColumn(
                "Share", format="%.1f%%", min_value=0, max_value=100
            ),
            "num_llm_calls": st.column_config.NumberColumn("Calls", format="localized"),
            "num_requests": st.column_config.NumberColumn("Requests", format="localized"),
            "cost_per_request_usd": st.column_config.NumberColumn("Per request", format="$%.5f"),
            "uncached_input_tokens": st.column_config.NumberColumn("Input", format="localized"),
            "cache_read_tokens": st.column_config.NumberColumn("Cached", format="localized"),
            "output_tokens": st.column_config.NumberColumn("Output", format="localized"),
            "num_unpriced_calls": st.column_config.NumberColumn("Unpriced calls"),
            "traces": st.column_config.LinkColumn("Traces", display_text="open"),
        },
    )
    if table.height == 200:
        st.caption("The 200 costliest shown.")


def _expensive(conn: Any, scope: Scope) -> None:
    st.subheader("Most expensive traces")
    traces = most_expensive_traces(conn, scope, limit=20)
    if traces.is_empty():
        st.caption("No priced model calls in this range.")
        return
    shown = traces.with_columns(
        pl.Series(
            "link",
            [
                ui.trace_link(scope, t, start)
                for t, start in traces.select("trace_id", "start_time").iter_rows()
            ],
        ),
        pl.col("models").list.join(", "),
    )
    st.dataframe(
        shown.select(
            "link",
            "start_time",
            "route",
            "user_id",
            "cost_usd",
            "num_llm_calls",
            "input_tokens",
            "cache_read_tokens",
            "output_tokens",
            "models",
        ),
        hide_index=True,
        column_config={
            "link": st.column_config.LinkColumn("Trace", display_text=r"trace=([0-9a-f]{8})"),
            "start_time": st.column_config.DatetimeColumn(
                "Started (UTC)", format="YYYY-MM-DD HH:mm"
            ),
            "route": "Route",
            "user_id": "User",
            "cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
            "num_llm_calls": "Calls",
            "input_tokens": st.column_config.NumberColumn("Input", format="localized"),
            "cache_read_tokens": st.column_config.NumberColumn("Cached", format="localized"),
            "output_tokens": st.column_config.NumberColumn("Output", format="localized"),
            "models": "Models",
        },
    )


def _unpriced(conn: Any, scope: Scope, summary: CostSummary) -> None:
    if not summary.num_unpriced_calls:
        return
    missing = unpriced_models(conn, scope)
    names = ", ".join(f"`{m}`" if m else "(calls naming no model)" for m in missing["model"])
    st.warning(
        f"{ui.format_count(summary.num_unpriced_calls)} model calls report tokens but have no "
        f"price: {names}. They are left out of every cost on this page, not counted as free. "
        "Add their prices to a price file and point `FLYWHEEL_PRICE_FILE` at it.",
        icon=":material/money_off:",
    )
    st.dataframe(
        missing,
        hide_index=True,
        column_config={
            "num_calls": st.column_config.NumberColumn("Calls", format="localized"),
            "input_tokens": st.column_config.NumberColumn("Input tokens", format="localized"),
            "output_tokens": st.column_config.NumberColumn("Output tokens", format="localized"),
        },
    )


def _prices(conn: Any, scope: Scope) -> None:
    with st.expander("Prices in use (USD per million tokens)"):
        st.caption(
            "Cost is computed when read, so correcting a price corrects history. Model names "
            "map to a price by their longest matching prefix (`gpt-4o-2024-08-06` → `gpt-4o`)."
        )
        st.dataframe(
            prices_in_use(conn, scope),
            hide_index=True,
            column_config={
                "effective_from": st.column_config.DateColumn("From"),
                "num_llm_calls": st.column_config.NumberColumn("Calls", format="localized"),
                "input_usd_per_mtok": st.column_config.NumberColumn("Input", format="$%.3f"),
                "cache_read_usd_per_mtok": st.column_config.NumberColumn("Cached", format="$%.4f"),
                "cache_write_usd_per_mtok": st.column_config.NumberColumn(
                    "Cache write", format="$%.3f"
                ),
                "output_usd_per_mtok": st.column_config.NumberColumn("Output", format="$%.3f"),
            },
        )


def render(scope: Scope) -> None:
    """Draw the Cost page for a scope."""
    conn = ui.catalog()
    summary = cost_summary(conn, scope)
    projection = cost_projection(conn, scope)
    _tiles(summary, projection)
    if summary.num_llm_calls == 0:
        st.info("No model calls in this time range. Widen the range or clear the filters.")
        return
    _unpriced(conn, scope, summary)
    _over_time(conn, scope)
    left, right = st.columns([1, 1])
    with left:
        by_model = cost_by_dimension(conn, scope, "model")
        _split_chart(by_model)
    with right:
        _breakdown(conn, scope)
    _expensive(conn, scope)
    _prices(conn, scope)


st.title("Cost")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
