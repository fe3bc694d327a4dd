"""Feedback & business: what users tell us (and show us), what predicts a thumbs-down, and how
quality moves with the business."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from analytics.business import (
    BUSINESS_COLUMNS,
    QUALITY_COLUMNS,
    business_metrics,
    quality_business_correlation,
    retention_cohorts,
    session_stats,
    user_activity,
)
from analytics.feedback import (
    FEEDBACK_SEGMENTS,
    feedback_by_segment,
    feedback_by_time,
    feedback_summary,
    thumbs_down_drivers,
)
from analytics.implicit import IMPLICIT_SIGNALS, implicit_rates, implicit_turns
from analytics.overview import choose_bucket
from analytics.scope import Scope
from app import components as ui
from app.trace_links import session_url

TABS = {
    "Feedback": "feedback",
    "Implicit signals": "implicit",
    "Business": "business",
    "Correlation": "correlation",
}
SEGMENT_LABELS = {
    "model": "Model",
    "route": "Route",
    "prompt": "System prompt",
    "provider": "Provider",
}
LAGS = {"0": "same day", "1": "next day", "7": "a week later"}
EXAMPLES = 10


def _feedback_tab(conn: Any, scope: Scope) -> None:
    summary = feedback_summary(conn, scope)
    tiles = st.columns(6)
    tiles[0].metric("Requests", ui.format_count(summary.num_requests))
    tiles[1].metric(
        "With feedback",
        ui.format_percent(summary.feedback_rate),
        help="Requests with any explicit feedback (a vote, rating, comment, edit, copy, share "
        "or report), late feedback included.",
    )
    tiles[2].metric("Thumbs up", ui.format_count(summary.thumbs_up))
    tiles[3].metric("Thumbs down", ui.format_count(summary.thumbs_down))
    interval = summary.thumbs_down_interval
    tiles[4].metric(
        "Thumbs-down rate",
        ui.format_percent(summary.thumbs_down_rate),
        help=None
        if interval is None
        else f"Down votes ÷ votes; 95% interval {interval[0]:.1%} – {interval[1]:.1%} (Wilson).",
    )
    tiles[5].metric(
        "Edits · reports", f"{summary.num_edits:,} · {summary.num_reports:,}",
        help=f"Ratings: {summary.num_ratings:,}"
        + (f" (mean {summary.mean_rating:.2f})" if summary.mean_rating is not None else "")
        + f"; comments {summary.num_comments:,}; copies {summary.num_copies:,}; "
        f"shares {summary.num_shares:,}.",
    )  # fmt: skip
    if summary.thumbs_up + summary.thumbs_down == 0:
        st.info("No votes on the requests of this range yet.")
        return
    # votes are sparse: few, wide buckets keep each rate's interval readable
    bucket = choose_bucket(scope.start, scope.end, max_buckets=20)
    series = feedback_by_time(conn, scope, bucket)
    times = series["bucket_start"].to_list()
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_bar(x=times, y=series["thumbs_up"].to_list(), name="thumbs up",
                   marker_color="#2ca02c")  # fmt: skip
    figure.add_bar(x=times, y=series["thumbs_down"].to_list(), name="thumbs down",
                   marker_color="#d62728")  # fmt: skip
    figure.add_scatter(
        x=times, y=series["thumbs_down_rate"].to_list(), name="thumbs-down rate",
        mode="lines+markers", line={"color": "#7f0000"}, secondary_y=True,
        error_y={"type": "data", "symmetric": False,
                 "array": (series["rate_high"] - series["thumbs_down_rate"]).to_list(),
                 "arrayminus": (series["thumbs_down_rate"] - series["rate_low"]).to_list(),
                 "thickness": 1, "color": "#c49c94"},
    )  # fmt: skip
    figure.update_layout(barmode="stack")
    figure.update_yaxes(title_text="votes", secondary_y=False)
    figure.update_yaxes(
        title_text="thumbs-down rate", tickformat=".0%", range=[0, 1], secondary_y=True
    )
    ui.mark_changes(figure, ui.changes(scope))
    st.plotly_chart(
        ui.chart_layout(figure, f"Votes per {ui.bucket_label(bucket)} (rate with 95% interval)")
    )
    _segments(conn, scope)
    _drivers(conn, scope)


def _segments(conn: Any, scope: Scope) -> None:
    st.subheader("Thumbs-down rate by segment", anchor=False)
    by = ui.url_choice(
        st.segmented_control, "Segment", list(FEEDBACK_SEGMENTS), "fb_by",
        SEGMENT_LABELS.__getitem__,
    )  # fmt: skip
    segments = feedback_by_segment(conn, scope, by)  # type: ignore[arg-type]
    links = [
        ui.group_link(scope, by, value, feedback="thumbs_down") for value in segments["segment"]
    ]
    percent = ("thumbs_down_rate", "rate_low", "rate_high", "diff_vs_rest", "diff_low", "diff_high")
    st.dataframe(
        segments.with_columns(
            *(pl.col(c) * 100 for c in percent), pl.Series("traces", links, dtype=pl.String)
        ),
        hide_index=True,
        column_config={
            "segment": SEGMENT_LABELS[by],
            "votes": st.column_config.NumberColumn("Votes", format="localized"),
            "thumbs_down": st.column_config.NumberColumn("Down", format="localized"),
            "thumbs_down_rate": st.column_config.NumberColumn("Down rate", format="%.1f%%"),
            "rate_low": st.column_config.NumberColumn("95% low", format="%.1f%%"),
            "rate_high": st.column_config.NumberColumn("95% high", format="%.1f%%"),
            "diff_vs_rest": st.column_config.NumberColumn(
                "vs the rest (points)",
                format="%+.1f",
                help="This segment's rate minus the other votes' rate.",
            ),
            "diff_low": st.column_config.NumberColumn("95% low", format="%+.1f"),
            "diff_high": st.column_config.NumberColumn("95% high", format="%+.1f"),
            "traces": st.column_config.LinkColumn("Thumbs-down traces", display_text="open →"),
        },
    )
    st.caption(
        "A difference whose 95% interval (Newcombe) excludes 0 is one the votes support; one "
        "that includes 0 may be chance."
    )


def _drivers(conn: Any, scope: Scope) -> None:
    st.subheader("What predicts a thumbs-down", anchor=False)
    try:
        model = thumbs_down_drivers(conn, scope)
    except ValueError as exc:
        st.caption(f"{exc}.")
        return
    effects = model.effects
    figure = go.Figure()
    figure.add_scatter(
        x=effects["odds_ratio"].to_list(), y=effects["feature"].to_list(), mode="markers",
        marker={"color": ["#d62728" if s else "#7f7f7f" for s in effects["supported"]],
                "size": 9},
        error_x={"type": "data", "symmetric": False,
                 "array": (effects["high"] - effects["odds_ratio"]).to_list(),
                 "arrayminus": (effects["odds_ratio"] - effects["low"]).to_list()},
        name="odds ratio",
    )  # fmt: skip
    figure.add_vline(x=1, line_dash="dot", line_color="#7f7f7f")
    figure.update_xaxes(type="log", title_text="odds ratio of a thumbs-down (log scale)")
    figure.update_yaxes(autorange="reversed")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(
            ui.chart_layout(figure, "Effects (red: the 95% interval excludes 1)",
                            120 + 28 * effects.height)
        )  # fmt: skip
    with right:
        auc = "–" if model.roc_auc is None else f"{model.roc_auc:.2f}"
        st.metric("Held-out ROC AUC", auc, help="0.5 is a coin toss; 1.0 predicts every vote.")
        st.caption(
            f"A logistic regression on {model.num_train:,} votes, checked on {model.num_test:,} "
            f"held out ({model.down_rate:.0%} down). Numbers are per standard deviation (log of "
            "TTFT, latency and tokens); a category is against the most common one. These are "
            "associations, not causes: a slow model may also be the one given hard questions."
        )


# Cached for a minute per lake and scope (the arguments are the cache key): both read every
# session of the range, and a tab switch should not pay for it again.
@st.cache_data(ttl=60, show_spinner=False)
def _turns(data_dir: str, price_file: str | None, scope: Scope) -> pl.DataFrame:
    return implicit_turns(ui.catalog(), scope)


@st.cache_data(ttl=60, show_spinner=False)
def _correlation(data_dir: str, price_file: str | None, scope: Scope, lag: int) -> pl.DataFrame:
    return quality_business_correlation(ui.catalog(), scope, lags=(lag,))


def _implicit_tab(conn: Any, scope: Scope) -> None:
    with st.spinner("Reading sessions (follow-ups are embedded once, then cached)…"):
        turns = _turns(*ui.cache_key(), scope)
    if turns.is_empty():
        st.info("No sessions in this range: implicit signals need a session id on requests.")
        return
    overall = implicit_rates(turns).row(0, named=True)
    tiles = st.columns(len(IMPLICIT_SIGNALS) + 1)
    for tile, (signal, label) in zip(tiles, IMPLICIT_SIGNALS.items(), strict=False):
        tile.metric(label, ui.format_percent(overall[f"{signal}_rate"]),
                    help=f"{overall[signal]:,} turns.")  # fmt: skip
    tiles[-1].metric("Turns per session", f"{overall['mean_session_turns']:.2f}")
    st.caption(
        f"{overall['turns']:,} turns of {overall['sessions']:,} sessions (a seeded sample of up "
        "to 2,000 sessions). Rules and thresholds: analytics/implicit.py. Abandonment counts "
        "only sessions that ended inside the range."
    )
    bucket = choose_bucket(scope.start, scope.end, max_buckets=20)
    by_time = implicit_rates(
        turns.with_columns(pl.col("start_time").dt.truncate(bucket).alias("bucket")), "bucket"
    )
    figure = go.Figure()
    for signal, label in IMPLICIT_SIGNALS.items():
        figure.add_scatter(x=by_time["bucket"].to_list(), y=by_time[f"{signal}_rate"].to_list(),
                           name=label, mode="lines+markers")  # fmt: skip
    figure.update_yaxes(tickformat=".0%")
    ui.mark_changes(figure, ui.changes(scope))
    st.plotly_chart(ui.chart_layout(figure, f"Implicit signals per {ui.bucket_label(bucket)}"))
    by_route = implicit_rates(turns, "route")
    st.dataframe(
        by_route.select("route", "turns", "sessions",
                        *(pl.col(f"{s}_rate") * 100 for s in IMPLICIT_SIGNALS)),
        hide_index=True,
        column_config={"route": "Route", "turns": "Turns", "sessions": "Sessions"}
        | {f"{s}_rate": st.column_config.NumberColumn(label, format="%.1f%%")
           for s, label in IMPLICIT_SIGNALS.items()},
    )  # fmt: skip
    signal = ui.url_choice(
        st.segmented_control, "Examples of", list(IMPLICIT_SIGNALS), "signal",
        IMPLICIT_SIGNALS.__getitem__,
    )  # fmt: skip
    examples = turns.filter(pl.col(signal).fill_null(False)).sort("start_time", descending=True)
    if examples.is_empty():
        st.caption("No turn in this range shows it.")
        return
    examples = examples.head(EXAMPLES)
    project = {"project": scope.project}
    st.dataframe(
        examples.select(
            "start_time", "route", "input_text", "next_input",
            pl.Series("conversation", [
                session_url(s, t, **project)
                for s, t in examples.select("session_id", "start_time").iter_rows()
            ], dtype=pl.String),
        ),
        hide_index=True,
        column_config={
            "start_time": st.column_config.DatetimeColumn("Turn", format="YYYY-MM-DD HH:mm:ss"),
            "route": "Route",
            "input_text": st.column_config.TextColumn("User asked", width="medium"),
            "next_input": st.column_config.TextColumn("Then", width="medium"),
            "conversation": st.column_config.LinkColumn("Conversation", display_text="open →"),
        },
    )  # fmt: skip


def _business_tab(conn: Any, scope: Scope) -> None:
    activity = user_activity(conn, scope)
    sessions = session_stats(conn, scope)
    days = activity["day"].to_list()
    tiles = st.columns(4)
    tiles[0].metric("Users (last day)", ui.format_count(activity["dau"][-1]))
    tiles[1].metric("WAU (last day)", ui.format_count(activity["wau"][-1]))
    tiles[2].metric("New users", ui.format_count(activity["new_users"].sum()))
    mean = sessions["mean_session_s"].mean()
    tiles[3].metric("Mean session", "–" if mean is None else f"{float(mean) / 60:.1f} min")  # type: ignore[arg-type]
    figure = go.Figure()
    figure.add_bar(x=days, y=activity["returning_users"].to_list(), name="returning",
                   marker_color="#1f77b4")  # fmt: skip
    figure.add_bar(x=days, y=activity["new_users"].to_list(), name="new", marker_color="#9ecae1")
    figure.add_scatter(x=days, y=activity["wau"].to_list(), name="WAU", mode="lines",
                       line={"color": "#7f7f7f", "dash": "dot"})  # fmt: skip
    figure.update_layout(barmode="stack")
    ui.mark_changes(figure, ui.changes(scope))
    st.plotly_chart(ui.chart_layout(figure, "Daily active users (new and returning) and WAU"))
    left, right = st.columns(2)
    with left:
        cohorts = retention_cohorts(conn, scope)
        shown = cohorts.select(
            "cohort",
            "users",
            *(
                pl.col(f"d{n}_retention")
                .map_elements(lambda r: f"{r:.0%}", return_dtype=pl.String)
                .fill_null("not yet")
                for n in (1, 7)
            ),
        )
        st.dataframe(
            shown,
            hide_index=True,
            column_config={
                "cohort": st.column_config.DateColumn("First seen"),
                "users": "New users",
                "d1_retention": "Day-1 retention",
                "d7_retention": "Day-7 retention",
            },
        )
        st.caption("Share of each day's new users active again exactly 1 and 7 days later.")
    with right:
        figure = go.Figure()
        figure.add_scatter(x=sessions["day"].to_list(), y=(sessions["mean_session_s"] / 60).to_list(),
                           name="mean minutes", mode="lines+markers")  # fmt: skip
        figure.add_scatter(x=sessions["day"].to_list(), y=sessions["mean_session_turns"].to_list(),
                           name="mean turns", mode="lines+markers", yaxis="y2")  # fmt: skip
        figure.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "turns"},
                             yaxis={"title": "minutes"})  # fmt: skip
        st.plotly_chart(ui.chart_layout(figure, "Sessions: duration and turns per day"))
    imported = business_metrics(conn, scope)
    if imported.is_empty():
        st.caption(
            "Import the product's own daily metrics (revenue, sign-ups…) with `flywheel "
            "import-metrics FILE` (CSV or Parquet: date, metric, value) to see them here and "
            "in the correlations."
        )
        return
    figure = go.Figure()
    for metric in imported["metric"].unique().sort().to_list():
        rows = imported.filter(pl.col("metric") == metric)
        figure.add_scatter(x=rows["day"].to_list(), y=rows["value"].to_list(), name=metric,
                           mode="lines+markers")  # fmt: skip
    ui.mark_changes(figure, ui.changes(scope))
    st.plotly_chart(ui.chart_layout(figure, "Imported daily metrics"))


def _correlation_tab(conn: Any, scope: Scope) -> None:
    lag = ui.url_choice(st.segmented_control, "Business metric measured", list(LAGS), "lag",
                        LAGS.__getitem__)  # fmt: skip
    with st.spinner("Computing daily quality and business metrics…"):
        table = _correlation(*ui.cache_key(), scope, int(lag))
    if table.is_empty():
        st.info(
            "Correlations need at least 7 days with both a quality and a business value: pick "
            "a longer range (30 days or more reads better)."
        )
        return
    labels = QUALITY_COLUMNS | BUSINESS_COLUMNS
    heat = table.pivot(on="business", index="quality", values="rho")
    business = [c for c in heat.columns if c != "quality"]
    figure = go.Figure(
        go.Heatmap(
            z=heat.select(business).to_numpy(), x=[labels.get(b, b) for b in business],
            y=[labels.get(q, q) for q in heat["quality"]], zmin=-1, zmax=1,
            colorscale="RdBu", reversescale=True, colorbar={"title": "ρ"},
        )
    )  # fmt: skip
    st.plotly_chart(
        ui.chart_layout(figure, f"Spearman's ρ: quality on day d, business {LAGS[lag]}", 380)
    )
    st.dataframe(
        table.with_columns(
            pl.col("quality").replace_strict(labels, default=pl.col("quality")),
            pl.col("business").replace_strict(labels, default=pl.col("business")),
        ).drop("lag_days"),
        hide_index=True,
        column_config={
            "quality": "Quality (day d)", "business": f"Business ({LAGS[lag]})", "days": "Days",
            "rho": st.column_config.NumberColumn("ρ", format="%+.2f"),
            "low": st.column_config.NumberColumn("95% low", format="%+.2f"),
            "high": st.column_config.NumberColumn("95% high", format="%+.2f"),
            "p_value": st.column_config.NumberColumn("p", format="%.3g"),
            "supported": st.column_config.CheckboxColumn("Interval excludes 0"),
        },
    )  # fmt: skip
    st.caption(
        "Correlation, not cause: two daily series can move together because a third thing "
        "(a launch, a weekday) moves both. With this many pairs, about 1 in 20 intervals "
        "excludes 0 by chance alone."
    )


def render(scope: Scope) -> None:
    """Draw the Feedback & business page for a scope."""
    conn = ui.catalog()
    tabs = st.tabs(list(TABS), key="tab", bind="query-params")
    draws = (_feedback_tab, _implicit_tab, _business_tab, _correlation_tab)
    for index, (tab, draw) in enumerate(zip(tabs, draws, strict=True)):
        # a tab draws only when open (the first one also before the browser says which is)
        opened = tab.open is not False if index == 0 else tab.open
        with tab:
            if opened:
                draw(conn, scope)


st.title("Feedback & business")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
