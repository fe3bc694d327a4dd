"""The Latency & goodput page's Prefill & decode and Throughput tabs."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from analytics.latency import prefill_decode_by_model, prefill_decode_points
from analytics.overview import choose_bucket
from analytics.scope import Scope
from analytics.throughput import concurrency_by_time, throughput_by_time, throughput_summary
from app import components as ui

__all__ = ["prefill_tab", "throughput_tab"]


def prefill_tab(conn: Any, scope: Scope) -> None:
    """TTFT against input tokens and duration against output tokens, with fits per model."""
    st.caption(
        "Each dot is a model call (a sample of up to 2,000); lines are least-squares fits per "
        "model. TTFT against input tokens is the **prefill** cost: a steep line means long "
        "prompts are what is slow, a high intercept means queueing or network. Duration against "
        "output tokens is **decode**: its slope is the time per output token."
    )
    fits = prefill_decode_by_model(conn, scope)
    points = prefill_decode_points(conn, scope)
    if points.is_empty():
        st.info("No model calls with token counts in this range.")
        return
    left, right = st.columns(2)
    left.plotly_chart(
        _scatter(
            points,
            fits,
            "input_tokens",
            "ttft_ms",
            "ttft_intercept_ms",
            "ttft_ms_per_1k_input_tokens",
            1000.0,
            "Prefill: TTFT vs input tokens",
        ),
        key="prefill",
    )
    right.plotly_chart(
        _scatter(
            points,
            fits,
            "output_tokens",
            "duration_ms",
            "duration_intercept_ms",
            "duration_ms_per_output_token",
            1.0,
            "Decode: duration vs output tokens",
        ),
        key="decode",
    )
    st.dataframe(
        fits.select(
            "model",
            "num_prefill_calls",
            "ttft_ms_per_1k_input_tokens",
            "ttft_r2",
            "num_decode_calls",
            "duration_ms_per_output_token",
            "duration_r2",
        ),
        hide_index=True,
        column_config={
            "model": "Model",
            "num_prefill_calls": st.column_config.NumberColumn(
                "Streamed calls", format="localized"
            ),
            "ttft_ms_per_1k_input_tokens": st.column_config.NumberColumn(
                "Prefill: TTFT ms per 1k input tokens", format="%.1f"
            ),
            "ttft_r2": st.column_config.NumberColumn(
                "Prefill R²",
                format="%.2f",
                help="Share of the TTFT variance that input length explains.",
            ),
            "num_decode_calls": st.column_config.NumberColumn("Calls", format="localized"),
            "duration_ms_per_output_token": st.column_config.NumberColumn(
                "Decode: ms per output token", format="%.1f"
            ),
            "duration_r2": st.column_config.NumberColumn(
                "Decode R²",
                format="%.2f",
                help="Share of the duration variance that output length explains.",
            ),
        },
    )
    st.caption(
        "A low prefill R² means input length is not what makes TTFT vary (queueing, provider "
        "load, caching are). Decode ms per output token is the time per output token."
    )


def _scatter(
    points: pl.DataFrame,
    fits: pl.DataFrame,
    x: str,
    y: str,
    intercept: str,
    slope: str,
    per: float,
    title: str,
) -> go.Figure:
    figure = go.Figure()
    for index, model in enumerate(sorted(points["model"].unique().to_list())):
        rows = points.filter(
            (pl.col("model") == model) & pl.col(x).is_not_null() & pl.col(y).is_not_null()
        )
        if rows.is_empty():
            continue
        color = _palette(index)
        figure.add_scatter(
            x=rows[x].to_list(),
            y=rows[y].to_list(),
            mode="markers",
            name=model,
            marker={"size": 5, "opacity": 0.5, "color": color},
            legendgroup=model,
        )
        fit = fits.filter(pl.col("model") == model)
        if fit.height and fit[slope][0] is not None:
            lo, hi = float(rows[x].min()), float(rows[x].max())  # type: ignore[arg-type]
            b, m = float(fit[intercept][0]), float(fit[slope][0]) / per
            figure.add_scatter(
                x=[lo, hi],
                y=[b + m * lo, b + m * hi],
                mode="lines",
                legendgroup=model,
                line={"color": color, "width": 3},
                showlegend=False,
                name=f"{model} fit",
            )
    figure.update_xaxes(title_text=x.replace("_", " "))
    figure.update_yaxes(title_text=y.replace("_ms", " (ms)").replace("_", " "))
    ui.chart_layout(figure, title, height=420)
    figure.update_layout(hovermode="closest")
    return figure


def _palette(index: int) -> str:
    colors = (
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    )
    return colors[index % len(colors)]


def throughput_tab(conn: Any, scope: Scope) -> None:
    """Requests per minute, tokens per second and concurrency."""
    summary = throughput_summary(conn, scope)
    row = st.columns(6)
    row[0].metric("Requests / min", _rate(summary.requests_per_min))
    row[1].metric("Model calls / min", _rate(summary.llm_calls_per_min))
    row[2].metric("Input tokens / s", _rate(summary.input_tokens_per_s))
    row[3].metric("Output tokens / s", _rate(summary.output_tokens_per_s))
    row[4].metric(
        "Mean concurrency",
        _rate(summary.mean_concurrency),
        help="Model calls in flight, averaged over time (total call time ÷ range length).",
    )
    row[5].metric(
        "Peak concurrency",
        ui.format_count(summary.peak_concurrency),
        help="Most model calls in flight at the same moment.",
    )
    bucket = choose_bucket(scope.start, scope.end)
    label = ui.bucket_label(bucket)
    series = throughput_by_time(conn, scope, bucket)
    times = series["bucket_start"].to_list()
    rates = go.Figure()
    rates.add_scatter(x=times, y=series["requests_per_min"].to_list(), name="requests / min")
    rates.add_scatter(x=times, y=series["llm_calls_per_min"].to_list(), name="model calls / min")
    tokens = go.Figure()
    tokens.add_scatter(x=times, y=series["input_tokens_per_s"].to_list(), name="input tokens / s")
    tokens.add_scatter(x=times, y=series["output_tokens_per_s"].to_list(), name="output tokens / s")
    events = ui.changes(scope)
    left, right = st.columns(2)
    left.plotly_chart(
        ui.chart_layout(ui.mark_changes(rates, events), f"Throughput per {label}"), key="rates"
    )
    right.plotly_chart(
        ui.chart_layout(ui.mark_changes(tokens, events), f"Tokens per second, per {label}"),
        key="tokens",
    )
    concurrency = concurrency_by_time(conn, scope, bucket)
    figure = go.Figure()
    figure.add_scatter(
        x=concurrency["bucket_start"].to_list(),
        y=concurrency["peak_concurrency"].to_list(),
        name="peak",
        line_shape="hv",
    )
    figure.add_scatter(
        x=concurrency["bucket_start"].to_list(),
        y=concurrency["mean_concurrency"].to_list(),
        name="mean",
    )
    st.plotly_chart(
        ui.chart_layout(ui.mark_changes(figure, events), f"Model calls in flight per {label}"),
        key="concurrency",
    )


def _rate(value: float | None) -> str:
    if value is None:
        return ui.EMPTY
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.01 else f"{value:.4f}"
