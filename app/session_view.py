"""Drawing a session (a conversation, turn by turn) and a user (their sessions over time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from analytics.trace_detail import REGENERATE_WITHIN, SessionDetail
from app import components as ui
from app.trace_links import session_url
from app.trace_view import render_feedback
from app.untrusted import md_escape


def render_session(session: SessionDetail, open_trace: Callable[[dict[str, Any]], None]) -> None:
    """The conversation in order: each turn's message and answer, feedback and signals."""
    turns = session.turns
    first, last = turns["start_time"].min(), turns["start_time"].max()
    columns = st.columns(5)
    columns[0].metric("Turns", ui.format_count(turns.height))
    columns[1].metric("Errors", ui.format_count(int(turns["has_error"].sum())))
    columns[2].metric("Regenerated", ui.format_count(int(turns["regenerated"].sum())))
    columns[3].metric("Thumbs down", ui.format_count(int(turns["thumbs_down"].sum())))
    columns[4].metric("Cost", ui.format_usd(float(turns["total_cost_usd"].fill_null(0).sum())))
    users = ", ".join(session.user_ids) or "unknown"
    st.caption(md_escape(f"{first:%Y-%m-%d %H:%M:%S} → {last:%H:%M:%S} UTC · user {users}", 300))
    for turn in turns.iter_rows(named=True):
        _turn(turn, session.feedback.filter(pl.col("trace_id") == turn["trace_id"]), open_trace)


def _turn(
    turn: dict[str, Any], feedback: pl.DataFrame, open_trace: Callable[[dict[str, Any]], None]
) -> None:
    with st.container(border=True):
        models = ", ".join(turn["models"] or []) or "no model call"
        head = (
            f"Turn {turn['turn']} · {turn['start_time']:%H:%M:%S} · {turn['name'] or '?'} · "
            f"{ui.format_ms(turn['duration_ms'])} · {models} · {ui.format_usd(turn['total_cost_usd'])}"
        )
        left, right = st.columns([5, 1])
        left.caption(md_escape(head, 300))
        if right.button("Open trace", key=f"open_turn_{turn['trace_id']}"):
            open_trace(turn)
        signals = []
        if turn["has_error"]:
            signals.append("❌ a span failed")
        if turn["guardrail_triggered"]:
            signals.append("🛡 a guardrail intervened")
        if turn["regenerated"]:
            seconds = int(REGENERATE_WITHIN.total_seconds())
            signals.append(f"🔁 regenerated: the user sent this message again within {seconds} s")
        if signals:
            st.caption(" · ".join(signals))
        with st.chat_message("user", avatar=":material/person:"):
            st.text(turn["input_preview"] or "(no input recorded)")
        with st.chat_message("assistant", avatar=":material/smart_toy:"):
            st.text(turn["output_preview"] or "(no output recorded)")
        if not feedback.is_empty():
            render_feedback(feedback)


def render_user(user_id: str, sessions: pl.DataFrame, link_params: dict[str, str]) -> None:
    """A user's sessions over time: a timeline and a table linking to each conversation."""
    if sessions.is_empty():
        st.info("This user has no requests in the selected time range.")
        return
    columns = st.columns(4)
    columns[0].metric("Sessions", ui.format_count(sessions["session_id"].drop_nulls().len()))
    columns[1].metric("Requests", ui.format_count(int(sessions["num_traces"].sum())))
    columns[2].metric("Thumbs down", ui.format_count(int(sessions["thumbs_down"].sum())))
    columns[3].metric("Cost", ui.format_usd(float(sessions["total_cost_usd"].sum())))
    colors = [
        "#D62728" if down else ("#2CA02C" if up else "#1F77B4")
        for up, down in zip(sessions["thumbs_up"], sessions["thumbs_down"], strict=True)
    ]
    figure = go.Figure(
        go.Scatter(
            x=sessions["start_time"].to_list(),
            y=sessions["num_traces"].to_list(),
            mode="markers",
            marker={"size": 12, "color": colors},
            hovertemplate="%{x}<br>%{y} requests<extra></extra>",
        )
    )
    first, last = sessions["start_time"].min(), sessions["start_time"].max()
    pad = max((last - first) * 0.05, timedelta(hours=12))
    figure.update_layout(
        title="Sessions over time (red: a thumbs down, green: a thumbs up)",
        height=260,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"range": [first - pad, last + pad]},
        yaxis={"title": "requests in the session", "rangemode": "tozero"},
    )
    st.plotly_chart(figure, key="user_sessions_chart")
    shown = sessions.with_columns(
        pl.struct("session_id", "start_time")
        .map_elements(
            lambda r: (
                session_url(r["session_id"], r["start_time"], **link_params)
                if r["session_id"]
                else None
            ),
            return_dtype=pl.String,
        )
        .alias("open")
    )
    st.dataframe(
        shown.select(
            "open",
            "start_time",
            "session_id",
            "num_traces",
            "num_errors",
            "thumbs_up",
            "thumbs_down",
            "total_cost_usd",
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "open": st.column_config.LinkColumn("Open", display_text="conversation"),
            "start_time": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm"),
            "session_id": "Session",
            "num_traces": "Requests",
            "num_errors": "With errors",
            "thumbs_up": "👍",
            "thumbs_down": "👎",
            "total_cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
        },
    )
