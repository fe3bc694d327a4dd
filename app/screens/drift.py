"""Drift: do this range's user inputs (or outputs) read like the days before it, and what moved."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from analytics.columns import column_drift
from analytics.drift import DRIFT_METHODS, drift_by_day, embedding_drift, topic_shift
from analytics.scope import Scope
from app import components as ui

BASELINES = {"7": timedelta(days=7), "1": timedelta(days=1), "28": timedelta(days=28)}
FIELDS = {"input": "User inputs", "output": "Model outputs"}
SAMPLE_SIZE = 1000
COLUMN_SAMPLE_SIZE = 5000


def _verdict(conn: Any, reference: Scope, scope: Scope, field: str, method: str) -> None:
    result = embedding_drift(
        conn,
        reference,
        scope,
        field,
        method,
        sample_size=SAMPLE_SIZE,  # type: ignore[arg-type]
        progress=ui.embedding_progress(),
    )
    row = st.columns(5)
    row[0].metric("Drift", "yes" if result.drift_detected else "no")
    row[1].metric("Score", f"{result.score:.4g}", help=f"Evidently's {method} method.")
    calibrated = (
        f"3 × the reference's own score ({result.reference_self_score:.4g}: its first half "
        "against its second), never below the method's floor"
        if result.reference_self_score is not None
        else "Evidently's default for this method"
    )
    row[2].metric("Threshold", f"{result.threshold:.4g}", help=calibrated + ".")
    row[3].metric("Reference texts", f"{result.num_reference:,}")
    row[4].metric("Texts now", f"{result.num_current:,}")
    st.caption(
        f"A seeded sample of up to {SAMPLE_SIZE:,} texts per window, embedded with "
        f"{result.model} (cached in the lake: {result.num_embedded:,} embedded this time)."
    )


def _columns(conn: Any, reference: Scope, scope: Scope) -> None:
    try:
        drift = column_drift(conn, reference, scope, sample_size=COLUMN_SAMPLE_SIZE)
    except ValueError as exc:
        st.caption(f"{exc}.")
        return
    st.dataframe(
        drift.columns.with_columns(
            pl.col("drift_detected").replace_strict({True: "drift", False: "–"}, default="not tested")
        ).select("label", "drift_detected", "reference", "current", "method", "score",
                 "threshold", "num_reference", "num_current"),
        hide_index=True,
        column_config={
            "label": "Column",
            "drift_detected": "Drift",
            "reference": "Before",
            "current": "Now",
            "method": st.column_config.TextColumn("Test (Evidently)"),
            "score": st.column_config.NumberColumn("Score", format="%.3g"),
            "threshold": st.column_config.NumberColumn("Threshold", format="%.3g"),
            "num_reference": st.column_config.NumberColumn("Calls before", format="%d"),
            "num_current": st.column_config.NumberColumn("Calls now", format="%d"),
        },
    )  # fmt: skip
    st.caption(
        f"A seeded sample of up to {COLUMN_SAMPLE_SIZE:,} model calls per window. A p-value "
        "test is drift below its threshold, a distance at or above it. Language is "
        "identified from the user's input (und: too short to tell)."
    )
    labels = dict(drift.columns.select("column", "label").iter_rows())
    column = st.selectbox("Distribution of", list(labels), format_func=labels.__getitem__)
    kind = drift.columns.filter(pl.col("column") == column)["kind"].item()
    samples = drift.samples.select("window", column).drop_nulls()
    figure = go.Figure()
    if kind == "numerical":
        # the long tail would squeeze both histograms into one bar: cut at the 99th percentile
        top = float(samples[column].quantile(0.99) or 0)
        low = float(samples[column].min() or 0)  # type: ignore[arg-type]
        # the same 40 bins for both windows, so their bars compare
        bins = {"start": low, "end": top, "size": max((top - low) / 40, 1e-9)}
        for window, color in (("reference", "#9ecae1"), ("current", "#d62728")):
            values = samples.filter(pl.col("window") == window, pl.col(column) <= top)[column]
            figure.add_histogram(
                x=values.to_list(), name=window, histnorm="percent", opacity=0.6,
                marker_color=color, xbins=bins, autobinx=False,
            )  # fmt: skip
        figure.update_layout(barmode="overlay", xaxis_title=labels[column] + " (to p99)")
    else:
        shares = (
            samples.group_by("window", column).len()
            .with_columns(share=pl.col("len") / pl.col("len").sum().over("window") * 100)
        )  # fmt: skip
        top_values = (
            shares.group_by(column).agg(pl.col("share").max()).sort("share", descending=True)
            .head(12)[column].to_list()
        )  # fmt: skip
        for window, color in (("reference", "#9ecae1"), ("current", "#d62728")):
            part = shares.filter(pl.col("window") == window).select(column, "share")
            share = dict(part.iter_rows())
            figure.add_bar(
                x=top_values, y=[share.get(v, 0.0) for v in top_values], name=window,
                marker_color=color,
            )  # fmt: skip
        figure.update_layout(barmode="group", yaxis_title="% of calls")
    st.plotly_chart(ui.chart_layout(figure, f"{labels[column]}: before and now", 320))


def _daily(conn: Any, reference: Scope, scope: Scope, field: str) -> None:
    series = drift_by_day(conn, reference, scope, field, progress=ui.embedding_progress())  # type: ignore[arg-type]
    if series.is_empty():
        st.caption("No day in this range has 20 texts to compare.")
        return
    figure = go.Figure()
    figure.add_scatter(
        x=series["day"].to_list(),
        y=series["score"].to_list(),
        name="MMD against the reference",
        mode="lines+markers",
        marker={"color": ["#d62728" if d else "#1f77b4" for d in series["drift_detected"]]},
    )
    figure.add_scatter(
        x=series["day"].to_list(),
        y=series["threshold"].to_list(),
        name="threshold",
        mode="lines",
        line={"dash": "dot", "color": "#7f7f7f"},
    )
    ui.mark_changes(figure, ui.changes(scope))
    st.plotly_chart(ui.chart_layout(figure, "Daily drift score (red: drift)", 320))


def _topics(conn: Any, reference: Scope, scope: Scope, field: str) -> None:
    shift = topic_shift(
        conn,
        reference,
        scope,
        field,
        sample_size=SAMPLE_SIZE,  # type: ignore[arg-type]
        progress=ui.embedding_progress(),
    )
    left, right = st.columns([3, 2])
    with left:
        shown = shift.clusters.with_columns(
            pl.col("share_reference") * 100,
            pl.col("share_current") * 100,
            pl.col("change") * 100,
            pl.col("examples").list.join(" ‖ "),
        ).select("topic", "change", "share_reference", "share_current", "examples")
        st.dataframe(
            shown,
            hide_index=True,
            column_config={
                "topic": "Topic",
                "change": st.column_config.NumberColumn("Change (points)", format="%+.1f"),
                "share_reference": st.column_config.NumberColumn("Before", format="%.1f%%"),
                "share_current": st.column_config.NumberColumn("Now", format="%.1f%%"),
                "examples": st.column_config.TextColumn(
                    "Examples (nearest the centre)", width="large"
                ),
            },
        )
    with right:
        figure = go.Figure()
        for window, color in (("reference", "#9ecae1"), ("current", "#d62728")):
            points = shift.points.filter(pl.col("window") == window)
            figure.add_scattergl(
                x=points["x"].to_list(),
                y=points["y"].to_list(),
                mode="markers",
                name=window,
                marker={"size": 4, "color": color, "opacity": 0.6},
                # plotly reads tags in hover text: untrusted text gets none
                hovertext=[t[:120].replace("<", "‹").replace(">", "›") for t in points["text"]],
                hoverinfo="text",
            )
        st.plotly_chart(ui.chart_layout(figure, "Texts on a 2-D map (PCA)", 360))


def render(scope: Scope) -> None:
    """Draw the Drift page for a scope."""
    conn = ui.catalog()
    top = st.columns([1, 1, 1])
    with top[0]:
        field = ui.url_choice(
            st.segmented_control, "Texts", list(FIELDS), "drift_field", FIELDS.__getitem__
        )
    with top[1]:
        days = ui.url_choice(
            st.segmented_control,
            "Reference: the days before the range",
            list(BASELINES),
            "drift_baseline",
            lambda d: f"{d} day" + ("s" if d != "1" else ""),
        )
    with top[2]:
        method = ui.url_choice(st.selectbox, "Method", list(DRIFT_METHODS), "drift_method")
    reference = replace(scope, start=scope.start - BASELINES[days], end=scope.start)
    st.caption(
        f"Comparing {scope.start:%Y-%m-%d %H:%M} → {scope.end:%Y-%m-%d %H:%M} UTC with the "
        f"{days} day(s) before it."
    )
    try:
        with st.spinner("Embedding texts (each text once; cached in the lake after)…"):
            _verdict(conn, reference, scope, field, method)
    except ValueError as exc:
        st.info(f"{exc}. Pick a range with model calls before and in it.")
        return
    st.subheader("Columns", anchor=False)
    _columns(conn, reference, scope)
    st.subheader("Day by day", anchor=False)
    _daily(conn, reference, scope, field)
    st.subheader("What moved", anchor=False)
    _topics(conn, reference, scope, field)


st.title("Drift")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
