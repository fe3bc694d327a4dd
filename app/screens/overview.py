"""Overview: is the LLM app healthy? Volume, errors, latency, TTFT, tokens, cost, top models."""

from __future__ import annotations

from datetime import timedelta

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from analytics.overview import (
    OverviewSummary,
    choose_bucket,
    overview_summary,
    requests_by_time,
    top_models,
)
from analytics.scope import Scope
from app import components as ui
from app.untrusted import md_escape

ERROR_RATE_HELP = "Requests whose root span has status ERROR ÷ requests."
REQUESTS_HELP = "Traces whose root span started in the time range."
TRACES_HELP = "Traces with any span that started in the time range (with the filters applied)."
LATENCY_HELP = "End-to-end trace duration, percentile by linear interpolation."
TTFT_HELP = "Time to first token over the streamed model calls in the time range."
COST_HELP = (
    "The span's own cost where it carries one, else priced at read time from the price table."
)


def _kpi_tiles(summary: OverviewSummary) -> None:
    row = st.columns(4)
    row[0].metric("Requests", ui.format_count(summary.num_requests), help=REQUESTS_HELP)
    row[1].metric("Traces", ui.format_count(summary.num_traces), help=TRACES_HELP)
    row[2].metric("Users", ui.format_count(summary.num_users), help="Distinct user ids.")
    row[3].metric("Error rate", ui.format_percent(summary.error_rate), help=ERROR_RATE_HELP)

    timing = st.columns(6)
    timing[0].metric("Latency p50", ui.format_ms(summary.latency_p50_ms), help=LATENCY_HELP)
    timing[1].metric("Latency p95", ui.format_ms(summary.latency_p95_ms), help=LATENCY_HELP)
    timing[2].metric("Latency p99", ui.format_ms(summary.latency_p99_ms), help=LATENCY_HELP)
    timing[3].metric("TTFT p50", ui.format_ms(summary.ttft_p50_ms), help=TTFT_HELP)
    timing[4].metric("TTFT p95", ui.format_ms(summary.ttft_p95_ms), help=TTFT_HELP)
    timing[5].metric("TTFT p99", ui.format_ms(summary.ttft_p99_ms), help=TTFT_HELP)

    row = st.columns(4)
    row[0].metric("LLM calls", ui.format_count(summary.num_llm_calls))
    row[1].metric("Input tokens", ui.format_count(summary.input_tokens))
    row[2].metric("Output tokens", ui.format_count(summary.output_tokens))
    row[3].metric("Cost", ui.format_usd(summary.total_cost_usd), help=COST_HELP)
    if summary.num_unpriced_calls:
        st.caption(
            f"{ui.format_count(summary.num_unpriced_calls)} of "
            f"{ui.format_count(summary.num_llm_calls)} model calls report tokens but "
            "match no price (unknown model); they are left out of the cost."
        )


def _time_series(series: pl.DataFrame, bucket_label: str, scope: Scope) -> None:
    times = series["bucket_start"].to_list()
    volume = go.Figure()
    volume.add_bar(x=times, y=series["requests"].to_list(), name="Requests")
    volume.add_bar(x=times, y=series["errors"].to_list(), name="Errors", marker_color="#d62728")
    volume.update_layout(
        title=f"Requests and errors per {bucket_label}",
        barmode="overlay",
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    latency = make_subplots()
    latency.add_scatter(
        x=times, y=series["latency_p95_ms"].to_list(), name="Latency p95", mode="lines+markers"
    )
    latency.add_scatter(
        x=times, y=series["ttft_p95_ms"].to_list(), name="TTFT p95", mode="lines+markers"
    )
    latency.update_layout(
        title=f"p95 latency and TTFT per {bucket_label} (ms)",
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    events = ui.changes(scope)
    left, right = st.columns(2)
    left.plotly_chart(ui.mark_changes(volume, events))
    right.plotly_chart(ui.mark_changes(latency, events))
    if events:
        st.caption(
            "▲ What changed: "
            + "; ".join(md_escape(f"{e.time:%b %d %H:%M} {e.label}") for e in events[:5])
            + (f"; and {len(events) - 5} more" if len(events) > 5 else "")
            + " — [before and after →](/alerts)"
        )


def _top_models(models: pl.DataFrame, scope: Scope) -> None:
    st.subheader("Top models")
    if models.is_empty():
        st.caption("No model calls in this range.")
        return
    links = [ui.group_link(scope, "model", model) for model in models["model"].to_list()]
    shown = models.with_columns(
        pl.col("model").fill_null("(unknown)"), pl.Series("traces", links, dtype=pl.String)
    )
    st.dataframe(
        shown.select(
            "traces",
            "model",
            "provider",
            "calls",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "latency_p95_ms",
            pl.col("error_rate") * 100,
        ),
        hide_index=True,
        column_config={
            "traces": st.column_config.LinkColumn(
                "Traces", display_text="open", help="The requests that called this model"
            ),
            "model": "Model",
            "provider": "Provider",
            "calls": st.column_config.NumberColumn("Calls", format="localized"),
            "input_tokens": st.column_config.NumberColumn("Input tokens", format="localized"),
            "output_tokens": st.column_config.NumberColumn("Output tokens", format="localized"),
            "cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
            "latency_p95_ms": st.column_config.NumberColumn("p95 latency", format="%.0f ms"),
            "error_rate": st.column_config.NumberColumn("Error rate", format="%.2f%%"),
        },
    )
    measure = st.radio(
        "Bar chart of", ["Calls", "Tokens", "Cost"], horizontal=True, key="overview_bar_measure"
    )
    column = {"Calls": "calls", "Tokens": "total_tokens", "Cost": "cost_usd"}[measure]
    labels = [
        f"{model} ({provider})" if provider else model
        for model, provider in zip(shown["model"], shown["provider"], strict=True)
    ]
    bars = go.Figure(
        go.Bar(x=shown[column].to_list(), y=labels, orientation="h", name=measure),
    )
    bars.update_layout(
        height=max(200, 40 * len(labels) + 60),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis={"autorange": "reversed"},
    )
    st.plotly_chart(bars)


def _active_alerts(scope: Scope) -> None:
    """Firing alert rules come first: on-call opens this page."""
    firing = [r for r in ui.active_alerts(scope) if r.fired]
    for result in sorted(firing, key=lambda r: r.rule.severity != "page"):
        st.error(
            md_escape(f"Alert [{result.rule.severity}] {result.summary}")
            + f" [Evidence →]({ui.evidence_link(scope, result)}) · [All alerts →](/alerts)",
            icon=":material/notifications_active:",
        )


def render(scope: Scope) -> None:
    """Draw the Overview for a scope."""
    conn = ui.catalog()
    # Firing alerts go first on the page but are evaluated last, so the numbers show first.
    alerts = st.container()
    summary = overview_summary(conn, scope)
    _kpi_tiles(summary)
    st.caption(
        f"Error rate: {ERROR_RATE_HELP} Requests: {REQUESTS_HELP} "
        "Percentiles use linear interpolation."
    )
    if summary.num_requests == 0 and summary.num_llm_calls == 0:
        st.info("No requests in this time range. Widen the range or clear the filters.")
        return
    left, right, _ = st.columns([1, 1, 3])
    left.link_button("Open in Traces", ui.traces_link(scope))
    right.link_button("Failed ones in Traces", ui.traces_link(scope, status="error"))
    bucket = choose_bucket(scope.start, scope.end)
    _time_series(requests_by_time(conn, scope, bucket), _bucket_label(bucket), scope)
    _top_models(top_models(conn, scope, limit=10), scope)
    with alerts:
        _active_alerts(scope)


def _bucket_label(bucket: timedelta) -> str:
    minutes = int(bucket.total_seconds() // 60)
    for unit, size in (("week", 7 * 24 * 60), ("day", 24 * 60), ("hour", 60), ("minute", 1)):
        if minutes >= size and minutes % size == 0:
            count = minutes // size
            return unit if count == 1 else f"{count} {unit}s"
    return str(bucket)


st.title("Overview")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
