"""Opportunities: where the product could be faster and cheaper — an exact cache, a semantic
cache (with the risk of serving a wrong answer at each threshold), and routing intents to a
cheaper model that already does as well."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from analytics.cache import TIME_SENSITIVE, USER_SPECIFIC, CacheRules, exact_cache_opportunity
from analytics.routing import routing_opportunity
from analytics.scope import Scope, list_routes
from analytics.semantic_cache import semantic_cache_opportunity
from app import components as ui
from app.report import duration_text

TABS = {"Exact cache": "exact", "Semantic cache": "semantic", "Routing": "routing"}
TTLS = {"60": "1 hour", "5": "5 minutes", "1440": "1 day"}


def _rules(scope: Scope) -> CacheRules:
    minutes = ui.url_choice(
        st.sidebar.selectbox, "Cache time to live", list(TTLS), "ttl", format_func=TTLS.get,
        help="How long a stored answer is served: from the end of the call that stored it "
        "(a hit does not refresh it).",
    )  # fmt: skip
    per_user = st.sidebar.toggle(
        "A cache per user",
        key="per_user",
        help="Key the cache by user too: requests about the user's own data can then be "
        "cached. Off: they are excluded.",
    )
    with st.sidebar.expander("Never cache"):
        routes = st.multiselect("Routes", list_routes(ui.catalog(), scope.project), key="no_routes")
        time_pattern = st.text_input(
            "Time-sensitive inputs", TIME_SENSITIVE, key="time_pattern",
            help="A regular expression (RE2); empty: none excluded.",
        )  # fmt: skip
        user_pattern = st.text_input(
            "User-specific inputs", USER_SPECIFIC, key="user_pattern",
            help="A regular expression (RE2); empty: none excluded.",
        )  # fmt: skip
    try:
        return CacheRules(
            ttl=timedelta(minutes=int(minutes)), per_user=per_user, exclude_routes=tuple(routes),
            time_sensitive=time_pattern, user_specific=user_pattern,
        )  # fmt: skip
    except ValueError as exc:
        st.sidebar.error(f"{exc}: the default is used.")
        return CacheRules(ttl=timedelta(minutes=int(minutes)), per_user=per_user)


# Cached a minute: moving the examples slider or switching tabs must not redo the analysis.
@st.cache_data(ttl=60, show_spinner="Simulating an exact cache…")
def _exact(data_dir: str, price_file: str | None, scope: Scope, rules: CacheRules) -> Any:
    return exact_cache_opportunity(ui.catalog(), scope, rules)


@st.cache_data(ttl=60, show_spinner="Simulating a semantic cache at each threshold…")
def _semantic(
    data_dir: str, price_file: str | None, scope: Scope, rules: CacheRules, _progress: Any
) -> Any:
    return semantic_cache_opportunity(ui.catalog(), scope, rules, progress=_progress)


@st.cache_data(ttl=60, show_spinner="Finding intents…")
def _routing(
    data_dir: str,
    price_file: str | None,
    scope: Scope,
    intents: int,
    margin: float,
    _progress: Any,
) -> Any:
    return routing_opportunity(
        ui.catalog(), scope, num_intents=intents, margin=margin, progress=_progress
    )


def _exact_tab(conn: Any, scope: Scope, rules: CacheRules) -> None:
    exact = _exact(*ui.cache_key(), scope, rules)
    tiles = st.columns(4)
    tiles[0].metric(
        "Hit rate", ui.format_percent(exact.hit_rate),
        help="Calls that repeat an identical earlier request (same model, system prompt, "
        "messages and parameters) that had finished less than the time to live before.",
    )  # fmt: skip
    tiles[1].metric("Calls answered from cache", f"{exact.num_hits:,} of {exact.num_calls:,}")
    tiles[2].metric(
        "Saved", ui.format_usd(exact.saved_cost_usd),
        help=f"{ui.format_usd(exact.monthly_saving_usd)} a month at this range's rate.",
    )  # fmt: skip
    tiles[3].metric("Model time saved", ui.format_ms(exact.saved_latency_ms))
    excluded = ", ".join(f"{n:,} {why.replace('_', '-')}" for why, n in exact.num_excluded.items())
    st.caption(
        f"Excluded (never cached): {excluded or 'none'} — time-sensitive inputs ask about "
        "now (today, latest, status…), user-specific ones about the user's own account, "
        "invoices or data. Failed calls are never stored."
    )
    if exact.repeats.is_empty():
        st.info("No request repeats exactly in this range.")
        return
    st.subheader("Most repeated requests")
    st.dataframe(
        exact.repeats, hide_index=True,
        column_config={
            "input_text": st.column_config.TextColumn("Input (last user message)", width="large"),
            "model": "Model", "num_calls": "Calls", "num_hits": "Cache hits",
            "saved_cost_usd": st.column_config.NumberColumn("Saved (USD)", format="$%.4f"),
        },
    )  # fmt: skip


def _threshold_chart(by_threshold: pl.DataFrame, recommended: float | None) -> go.Figure:
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(
        go.Scatter(x=by_threshold["threshold"], y=by_threshold["hit_rate"], name="Hit rate",
                   mode="lines+markers"), secondary_y=False,
    )  # fmt: skip
    figure.add_trace(
        go.Scatter(
            x=by_threshold["threshold"], y=by_threshold["disagreement_rate"],
            name="Hits serving a disagreeing answer", mode="lines+markers",
            error_y={"type": "data", "symmetric": False,
                     "array": (by_threshold["disagreement_high"] - by_threshold["disagreement_rate"]).to_list(),
                     "arrayminus": (by_threshold["disagreement_rate"] - by_threshold["disagreement_low"]).to_list()},
        ),
        secondary_y=True,
    )  # fmt: skip
    if recommended is not None:
        figure.add_vline(x=recommended, line_dash="dash", annotation_text="recommended")
    figure.update_yaxes(title_text="hit rate", tickformat=".0%", secondary_y=False)
    figure.update_yaxes(title_text="disagreeing", tickformat=".0%", secondary_y=True)
    figure.update_xaxes(title_text="similarity threshold")
    return ui.chart_layout(figure, "Hit rate and risk by threshold", 360)


def _semantic_tab(conn: Any, scope: Scope, rules: CacheRules) -> None:
    semantic = _semantic(*ui.cache_key(), scope, rules, ui.embedding_progress("inputs and answers"))
    if semantic.recommended is not None:
        st.success(semantic.trade_off)
    else:
        st.warning(semantic.trade_off)
    st.plotly_chart(_threshold_chart(semantic.by_threshold, semantic.recommended))
    st.dataframe(
        semantic.by_threshold.with_columns(pl.col("saved_latency_ms") / 1000), hide_index=True,
        column_config={
            "threshold": st.column_config.NumberColumn("Threshold", format="%.2f"),
            "num_hits": "Hits", "hit_rate": st.column_config.NumberColumn("Hit rate", format="percent"),
            "saved_cost_usd": st.column_config.NumberColumn("Saved (USD)", format="$%.4f"),
            "saved_latency_ms": st.column_config.NumberColumn("Model time saved (s)", format="%.0f"),
            "monthly_saving_usd": st.column_config.NumberColumn("A month (USD)", format="$%.2f"),
            "num_disagreeing": "Disagreeing hits",
            "disagreement_rate": st.column_config.NumberColumn("Disagreeing", format="percent"),
            "disagreement_low": st.column_config.NumberColumn("95% low", format="percent"),
            "disagreement_high": st.column_config.NumberColumn("95% high", format="percent"),
        },
    )  # fmt: skip
    st.caption(
        f"{semantic.num_compared:,} calls simulated, each compared with the live entries of its "
        f"model and system prompt (answers stored by calls that missed, served for "
        f"{duration_text(rules.ttl)} from when they ended). A hit "
        f"disagrees when the answer it would serve is far from the one given (embedding "
        f"similarity below {semantic.answer_agreement}) or the two got opposite votes. "
        + " ".join(f"Note: {n}." for n in semantic.notes)
    )
    thresholds = semantic.by_threshold["threshold"].to_list()
    picked = st.select_slider(
        "Examples just above the threshold", thresholds,
        value=semantic.recommended or thresholds[len(thresholds) // 2],
        format_func=lambda t: f"{t:.2f}",
    )  # fmt: skip
    examples = semantic.examples.filter(pl.col("threshold") == picked)
    if examples.is_empty():
        st.caption("No hit in this band.")
    for row in examples.to_dicts():
        with st.container(border=True):
            verdict = "answers disagree" if row["disagrees"] else "answers agree"
            st.markdown(
                f"**Similarity {row['similarity']:.3f}** · {verdict} "
                f"(answer similarity {row['answer_similarity']:.2f}) · "
                f"[this request]({ui.trace_link(scope, row['trace_id'], row['start_time'])}) · "
                f"[the cached one]({ui.trace_link(scope, row['cached_trace_id'])})"
            )
            left, right = st.columns(2)
            left.caption("Asked")
            left.text(row["input_text"])
            left.caption("Answered")
            left.text(row["output_text"] or "")
            right.caption("Cached request")
            right.text(row["cached_input"])
            right.caption("Would have served")
            right.text(row["cached_output"] or "")


def _first_line(texts: list[str], size: int = 70) -> str:
    text = " ".join((texts[0] if texts else "").split())
    return text if len(text) <= size else text[: size - 1] + "…"


INTENTS = ["8", "3", "4", "5", "6", "10", "12", "16", "20"]
MARGINS = {"0.05": "5 points", "0.02": "2 points", "0.1": "10 points", "0.15": "15 points"}


def _routing_tab(conn: Any, scope: Scope) -> None:
    left, right, _ = st.columns([1, 1, 2])
    intents = ui.url_choice(
        left.selectbox, "Intents", INTENTS, "intents",
        help="How many k-means topics the inputs are split into.",
    )  # fmt: skip
    margin = ui.url_choice(
        right.selectbox, "Margin", list(MARGINS), "margin", format_func=MARGINS.get,
        help="How much worse a cheaper model may be (thumbs-down rate, eval score) and still "
        "count as doing as well. 2 points needs about 1,700 votes on each model.",
    )  # fmt: skip
    try:
        routing = _routing(
            *ui.cache_key(), scope, int(intents), float(margin), ui.embedding_progress("inputs")
        )
    except ValueError as exc:
        st.info(f"Not enough traffic in this range: {exc}.")
        return
    recommendations = routing.recommendations
    total = recommendations["monthly_saving_usd"].sum() if recommendations.height else 0.0
    tiles = st.columns(3)
    tiles[0].metric("Intents", routing.intents.height,
                    help=f"k-means topics of {routing.num_sampled:,} sampled inputs.")  # fmt: skip
    tiles[1].metric("Intents to route", recommendations.height)
    tiles[2].metric("Saving a month", ui.format_usd(total))
    examples = {r["intent"]: _first_line(r["examples"]) for r in routing.intents.to_dicts()}
    if recommendations.height:
        st.subheader("Route these to a cheaper model")
        st.dataframe(
            recommendations.with_columns(
                pl.col("intent").replace_strict(examples, return_dtype=pl.String).alias("examples")
            ).select("intent", "examples", "from_model", "to_model", "monthly_saving_usd",
                     "down_difference", "down_low", "down_high", "eval_difference"),
            hide_index=True, column_config=_CANDIDATE_COLUMNS,
        )  # fmt: skip
    else:
        st.info("No intent has a cheaper model that does as well, on the votes and eval scores "
                "there are.")  # fmt: skip
    st.caption(
        f"A cheaper model does as well when its thumbs-down rate is at most {routing.margin:.0%} "
        "worse than the intent's most expensive model (the 95% interval's upper end) and, "
        "where an eval run scored production's answers, its eval score at most "
        f"{routing.margin} lower. Savings: the price difference per call × that model's calls, "
        "over 30 days."
    )
    st.subheader("Intents")
    st.dataframe(
        routing.intents.select("intent", "share", "num_calls", "examples"), hide_index=True,
        column_config={
            "intent": "Intent", "share": st.column_config.NumberColumn("Share", format="percent"),
            "num_calls": "Calls (sample)",
            "examples": st.column_config.ListColumn("Inputs nearest its centre", width="large"),
        },
    )  # fmt: skip
    st.subheader("Their models")
    st.dataframe(
        routing.by_model.with_columns(
            pl.col("intent").replace_strict(examples, return_dtype=pl.String).alias("examples")
        ).select("intent", "examples", "model", "num_calls", "share_of_intent", "mean_cost_usd",
                 "median_latency_ms", "votes", "thumbs_down_rate", "eval_score"),
        hide_index=True,
        column_config={
            "intent": "Intent", "examples": st.column_config.TextColumn("Inputs like", width="large"),
            "model": "Model", "num_calls": "Calls (sample)",
            "share_of_intent": st.column_config.NumberColumn("Share", format="percent"),
            "mean_cost_usd": st.column_config.NumberColumn("Cost / call", format="$%.5f"),
            "median_latency_ms": st.column_config.NumberColumn("Median latency (ms)", format="%.0f"),
            "votes": "Votes",
            "thumbs_down_rate": st.column_config.NumberColumn("Thumbs-down", format="percent"),
            "eval_score": st.column_config.NumberColumn("Eval score", format="%.2f"),
        },
    )  # fmt: skip
    with st.expander(f"Every comparison ({routing.candidates.height})"):
        st.dataframe(routing.candidates, hide_index=True, column_config=_CANDIDATE_COLUMNS)


_CANDIDATE_COLUMNS: dict[str, Any] = {
    "intent": "Intent",
    "examples": st.column_config.TextColumn("Inputs like", width="large"),
    "from_model": "From", "to_model": "To",
    "monthly_saving_usd": st.column_config.NumberColumn("Saving a month", format="$%.2f"),
    "down_difference": st.column_config.NumberColumn("Thumbs-down difference", format="percent"),
    "down_low": st.column_config.NumberColumn("95% low", format="percent"),
    "down_high": st.column_config.NumberColumn("95% high", format="percent"),
    "eval_difference": st.column_config.NumberColumn("Eval score difference", format="%+.3f"),
    "reason": st.column_config.TextColumn("Verdict", width="large"),
}  # fmt: skip


def render(scope: Scope) -> None:
    """Draw the Opportunities page for a scope."""
    conn = ui.catalog()
    rules = _rules(scope)
    tabs = st.tabs(list(TABS), key="tab", bind="query-params")
    for index, (tab, kind) in enumerate(zip(tabs, TABS.values(), strict=True)):
        opened = tab.open is not False if index == 0 else tab.open
        with tab:
            if not opened:
                continue
            if kind == "exact":
                _exact_tab(conn, scope, rules)
            elif kind == "semantic":
                _semantic_tab(conn, scope, rules)
            else:
                _routing_tab(conn, scope)


st.title("Opportunities")
_scope = ui.sidebar_filters(ui.catalog())
if _scope is None:
    ui.show_empty_lake()
else:
    render(_scope)
