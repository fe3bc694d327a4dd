"""Traces: find the slow, failed, expensive, flagged or disliked requests and read them.

One page, four views chosen by the URL (see :mod:`app.trace_links`): the filtered list (with a
user's sessions on top when ``?user=`` is set), a trace (span tree, waterfall, span detail,
feedback, annotations), a session (the conversation turn by turn), and a random sample.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from typing import Any
from urllib.parse import urlencode

import duckdb
import polars as pl
import streamlit as st

from analytics.annotations import annotated_traces_jsonl, new_annotation, write_annotations
from analytics.goodput import bad_requests
from analytics.scope import Scope
from analytics.trace_detail import TraceDetail, read_session, read_trace
from analytics.traces import (
    FEEDBACK_SIGNALS,
    TraceFilter,
    count_traces,
    list_labels,
    list_operations,
    list_traces,
    sample_traces,
    sessions_by_user,
)
from app import components as ui
from app.session_view import render_session, render_user
from app.trace_links import (
    LIST_PARAMS,
    RANGES,
    SORT_LABELS,
    SORTS,
    VIEW_PARAMS,
    filter_from_params,
    iso_time,
    parse_time,
    trace_url,
)
from app.trace_view import (
    TREE_COLUMNS,
    render_annotations,
    render_feedback,
    render_span,
    tree_table,
    waterfall_figure,
)
from app.untrusted import md_escape

PAGE_SIZE = 50
SAMPLE_SIZE = 10
#: A "missed SLO" list reads at most this many requests from the goodput evaluation.
MAX_SLO_MISSES = 20_000
FEEDBACK_LABELS = {
    "thumbs_down": "👎 thumbs down",
    "thumbs_up": "👍 thumbs up",
    "edited": "✏️ answer edited",
    "commented": "💬 commented",
    "reported": "🚩 reported",
    "low_rating": "⭐ rating ≤ 2",
}
_NAV = "traces_nav"  # bumped on every navigation, so selections start fresh


# --------------------------------------------------------------------------- URL state


def _params() -> dict[str, list[str]]:
    return {key: st.query_params.get_all(key) for key in st.query_params}


def _one(key: str) -> str | None:
    values = st.query_params.get_all(key)
    return values[0] if values else None


def _link_params(scope: Scope) -> dict[str, str]:
    """Parameters every link from this page keeps: the project."""
    return {"project": scope.project}


def _navigate(**params: str | None) -> None:
    """Switch view: drop the view parameters, set ``params`` and rerun."""
    for key in VIEW_PARAMS:
        if key in st.query_params:
            del st.query_params[key]
    for key, value in params.items():
        if value is not None:
            st.query_params[key] = value
    st.session_state[_NAV] = st.session_state.get(_NAV, 0) + 1
    st.rerun()


def _nav_key(name: str) -> str:
    return f"{name}_{st.session_state.get(_NAV, 0)}"


def _seed_from_url(key: str, value: Any) -> None:
    """Give a widget the URL's value whenever the URL changed since this page last wrote it."""
    marker = f"_url_{key}"
    if key not in st.session_state or st.session_state.get(marker) != value:
        st.session_state[key] = value
        st.session_state[marker] = value


def _write_url(key: str, value: Any) -> None:
    """Mirror a widget's value into the URL (empty values remove the parameter)."""
    if value in (None, "", [], "any"):
        if key in st.query_params:
            del st.query_params[key]
    elif isinstance(value, list):
        if st.query_params.get_all(key) != value:
            st.query_params[key] = value
    elif _one(key) != str(value):
        st.query_params[key] = str(value)


def _window(scope: Scope) -> Scope:
    """The scope, with an exact ``from``/``to`` window from the URL when a link gives one."""
    start, end = parse_time(_one("from")), parse_time(_one("to"))
    if start is None and end is None:
        return scope
    start = start or scope.start
    end = end or scope.end
    if end <= start:
        return scope
    st.caption(
        f"Window from the link: {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC "
        "(it overrides the sidebar's time range)."
    )
    if st.button("Use the sidebar's time range", key="clear_window"):
        for key in ("from", "to"):
            del st.query_params[key]
        st.rerun()
    return dataclasses.replace(scope, start=start, end=end)


# --------------------------------------------------------------------------- list


@st.cache_data(ttl=300, show_spinner=False)
def _choices(data_dir: str, scope: Scope) -> tuple[list[str], list[str]]:
    conn = ui.catalog()
    return list_operations(conn, scope), list_labels(conn, scope)


def _filter_widgets(scope: Scope) -> TraceFilter:
    """Draw the list filters (seeded from the URL, written back to it); return the filter."""
    wanted = filter_from_params(_params())
    operations, labels = _choices(str(ui.settings().data_dir), scope)
    top = st.columns([4, 1.3, 1.7, 1.2], vertical_alignment="bottom")
    _seed_from_url("tf_q", wanted.search or "")
    search = top[0].text_input(
        "Search prompts and outputs",
        key="tf_q",
        placeholder="text in any span's input or output (case-insensitive)",
    )
    _seed_from_url("tf_status", wanted.status)
    status = top[1].selectbox(
        "Status",
        ["any", "error", "ok"],
        key="tf_status",
        format_func={"any": "Any", "error": "Failed", "ok": "No error"}.__getitem__,
    )
    sort_wanted = _one("sort") if _one("sort") in SORTS else "start"
    _seed_from_url("tf_sort", sort_wanted)
    sort = top[2].selectbox("Sort", list(SORTS), key="tf_sort", format_func=SORT_LABELS.__getitem__)
    _seed_from_url("tf_asc", _one("order") == "asc")
    ascending = top[3].toggle(
        "Ascending", key="tf_asc", help="Oldest, fastest or cheapest first instead."
    )

    more = bool(
        wanted.operations
        or wanted.ranges
        or wanted.guardrail is not None
        or wanted.feedback
        or wanted.label
        or wanted.user_id
    )
    with st.expander("More filters", expanded=more, icon=":material/filter_list:"):
        row = st.columns(4)
        _seed_from_url("tf_feedback", [s for s in wanted.feedback if s in FEEDBACK_SIGNALS])
        feedback = row[0].multiselect(
            "Feedback",
            list(FEEDBACK_SIGNALS),
            key="tf_feedback",
            format_func=FEEDBACK_LABELS.__getitem__,
            placeholder="Any feedback or none",
        )
        guardrail_value = {True: "triggered", False: "clean", None: "any"}[wanted.guardrail]
        _seed_from_url("tf_guardrail", guardrail_value)
        guardrail = row[1].selectbox(
            "Guardrail",
            ["any", "triggered", "clean"],
            key="tf_guardrail",
            format_func={
                "any": "Any",
                "triggered": "A guardrail intervened",
                "clean": "No intervention",
            }.__getitem__,
        )
        _seed_from_url("tf_op", [o for o in wanted.operations if o in operations])
        chosen_ops = row[2].multiselect(
            "Has a span of operation", operations, key="tf_op", placeholder="Any operation"
        )
        label_options = ["", *labels]
        _seed_from_url("tf_label", wanted.label if wanted.label in labels else "")
        label = row[3].selectbox(
            "Annotation label",
            label_options,
            key="tf_label",
            format_func=lambda v: v or "Any",
        )
        ranges_row = st.columns(len(RANGES) + 1)
        _seed_from_url("tf_user", wanted.user_id or "")
        user = ranges_row[0].text_input("User id", key="tf_user")
        bounds = {r.column: r for r in wanted.ranges}
        values: dict[str, float | None] = {}
        for column, (name, (field, label_text)) in zip(ranges_row[1:], RANGES.items(), strict=True):
            current = bounds.get(field)
            with column:
                for side in ("min", "max"):
                    key = f"tf_{name}_{side}"
                    _seed_from_url(key, getattr(current, side) if current else None)
                    values[f"{name}_{side}"] = st.number_input(
                        f"{label_text} {'from' if side == 'min' else 'to'}",
                        key=key,
                        value=None,
                        min_value=0.0,
                        step=1.0 if name != "cost" else 0.001,
                        format="%.4f" if name == "cost" else "%.0f",
                    )
    chosen: dict[str, Any] = {
        "q": search.strip(),
        "status": status,
        "sort": None if sort == "start" else sort,
        "order": "asc" if ascending else None,
        "feedback": feedback,
        "guardrail": guardrail,
        "op": chosen_ops,
        "label": label,
        "user": user.strip(),
        **values,
    }
    previous = st.session_state.get("_tf_chosen")
    if previous is not None and previous != chosen and "page" in st.query_params:
        del st.query_params["page"]  # new filters start on the first page
    st.session_state["_tf_chosen"] = chosen
    for key, value in chosen.items():
        _write_url(key, value)
    # What the widgets show now is what the URL says: only a later URL change reseeds them.
    for widget in [k for k in st.session_state if isinstance(k, str) and k.startswith("tf_")]:
        st.session_state[f"_url_{widget}"] = st.session_state[widget]
    return filter_from_params(_params())


def _slo_filter(conn: duckdb.DuckDBPyConnection, scope: Scope, filters: TraceFilter) -> TraceFilter:
    """Narrow to requests that missed an SLO when the URL asks (``missed_slo=<name|any>``)."""
    wanted = _one("missed_slo")
    if not wanted:
        return filters
    bad = bad_requests(conn, scope, ui.slo_config(), limit=MAX_SLO_MISSES)
    if wanted != "any":
        bad = bad.filter(pl.col("missed_slos").list.contains(wanted))
    note = "any SLO" if wanted == "any" else f"the SLO {wanted}"
    st.caption(md_escape(f"Showing requests that missed {note} (from the goodput evaluation)."))
    if st.button("Show all requests", key="clear_slo"):
        del st.query_params["missed_slo"]
        st.rerun()
    return dataclasses.replace(filters, trace_ids=tuple(bad["trace_id"].to_list()))


def _hidden_filter_captions(filters: TraceFilter) -> None:
    """Say so when the URL narrows the list to one guardrail's results or one system prompt (no
    widget shows either)."""
    if filters.system_prompt is not None:
        st.caption(md_escape(f"Showing requests with system prompt {filters.system_prompt}."))
        if st.button("Any system prompt", key="clear_prompt"):
            del st.query_params["prompt"]
            st.rerun()
    parts = [
        f"{what} {value}"
        for what, value in (
            ("guardrail", filters.guardrail_name),
            ("stage", filters.guardrail_stage),
            ("category", filters.guardrail_category),
        )
        if value is not None
    ]
    if not parts:
        return
    st.caption(md_escape(f"Showing requests with a triggered result of {', '.join(parts)}."))
    if st.button("Show all requests", key="clear_guardrail_result"):
        for key in ("gr", "gr_stage", "gr_category"):
            if key in st.query_params:
                del st.query_params[key]
        st.rerun()


def _feedback_cell(row: dict[str, Any]) -> str:
    parts = []
    if row["thumbs_up"]:
        parts.append(f"👍{row['thumbs_up'] if row['thumbs_up'] > 1 else ''}")
    if row["thumbs_down"]:
        parts.append(f"👎{row['thumbs_down'] if row['thumbs_down'] > 1 else ''}")
    if row["num_edits"]:
        parts.append("✏️")
    if row["num_comments"]:
        parts.append("💬")
    if row["num_reports"]:
        parts.append("🚩")
    return " ".join(parts)


def _table(rows: pl.DataFrame, scope: Scope) -> pl.DataFrame:
    """The list rows as a person scans them."""
    keep = _link_params(scope)
    return rows.select(
        pl.struct("trace_id", "start_time")
        .map_elements(
            lambda r: trace_url(r["trace_id"], r["start_time"], **keep), return_dtype=pl.String
        )
        .alias("open"),
        "start_time",
        "name",
        "user_id",
        "duration_ms",
        "ttft_ms",
        "total_tokens",
        "total_cost_usd",
        pl.when(pl.col("has_error"))
        .then(pl.lit("❌ failed"))
        .when(pl.col("guardrail_triggered"))
        .then(pl.lit("🛡 guardrail"))
        .otherwise(pl.lit("ok"))
        .alias("status"),
        pl.struct("thumbs_up", "thumbs_down", "num_edits", "num_comments", "num_reports")
        .map_elements(_feedback_cell, return_dtype=pl.String)
        .alias("feedback"),
        pl.col("input_preview").str.slice(0, 160),
        pl.col("models").list.join(", "),
        pl.col("labels").list.join(", "),
    )


TABLE_COLUMNS: dict[str, Any] = {
    "open": st.column_config.LinkColumn("Open", display_text="open ↗", width="small"),
    "start_time": st.column_config.DatetimeColumn("Start (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "name": "Route",
    "user_id": "User",
    "input_preview": st.column_config.TextColumn("Input", width="large"),
    "models": "Models",
    "duration_ms": st.column_config.NumberColumn("Latency", format="%.0f ms"),
    "ttft_ms": st.column_config.NumberColumn("TTFT", format="%.0f ms"),
    "total_tokens": st.column_config.NumberColumn("Tokens", format="localized"),
    "total_cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
    "status": "Status",
    "feedback": "Feedback",
    "labels": "Labels",
}


def _show_rows(rows: pl.DataFrame, scope: Scope, key: str) -> None:
    """The list table; selecting a row opens its trace in this tab."""
    event = st.dataframe(
        _table(rows, scope),
        hide_index=True,
        width="stretch",
        height=(rows.height + 1) * 35 + 3,  # every row of the page, no inner scrolling
        column_config=TABLE_COLUMNS,
        on_select="rerun",
        selection_mode="single-row",
        key=_nav_key(key),
    )
    picked = event.selection.rows if event is not None else []
    if picked:
        row = rows.row(picked[0], named=True)
        _navigate(trace=row["trace_id"], t=iso_time(row["start_time"]))
    st.caption("Select a row to open its trace here, or use “open ↗” for a new tab.")


def _evals_link() -> str:
    """The Evals page's dataset form, with the sidebar and this list's filters."""
    own = {k: st.query_params.get_all(k) for k in LIST_PARAMS if k not in ("sort", "order", "page")}
    shared = {k: st.query_params.get_all(k) for k in ui.FILTER_PARAMS}
    params = {k: v for k, v in shared.items() if v}
    params["tab"] = ["Datasets"]
    params["filter"] = [urlencode({k: v for k, v in own.items() if v}, doseq=True)]
    return f"/evals?{urlencode(params, doseq=True)}"


def _list_view(conn: duckdb.DuckDBPyConnection, scope: Scope) -> None:
    user = _one("user")
    if user:
        st.subheader(md_escape(f"User {user}", 120), anchor=False)
        render_user(user, sessions_by_user(conn, scope, user), _link_params(scope))
        st.subheader("Their requests", anchor=False)
    filters = _slo_filter(conn, scope, _filter_widgets(scope))
    _hidden_filter_captions(filters)
    sample = _one("sample")
    if sample is not None:
        _sample_view(conn, scope, filters, sample)
        return
    sort = SORTS[_one("sort") if _one("sort") in SORTS else "start"]
    page_count_known = _one("page") or "1"
    page = max(int(page_count_known) if page_count_known.isdigit() else 1, 1)
    result = list_traces(
        conn,
        scope,
        filters,
        sort=sort,
        descending=_one("order") != "asc",
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
        count=False,  # the page shows first; the count (a full pass) fills the header after
    )
    header = st.columns([3, 1.2])
    summary = header[0].empty()
    if header[1].button(
        f"Read {SAMPLE_SIZE} random traces",
        icon=":material/casino:",
        help="A fresh random draw from the requests that match the filters: the habit of "
        "reading production logs.",
        disabled=result.rows.is_empty(),
    ):
        _navigate(sample=str(secrets.randbelow(10**9)))
    if result.rows.height:
        _show_rows(result.rows, scope, "trace_list")
    num_total = count_traces(conn, scope, filters)
    pages = max(math.ceil(num_total / PAGE_SIZE), 1)
    if num_total == 0:
        summary.info("No requests match. Widen the time range or clear some filters.")
    elif result.rows.is_empty():
        summary.info(f"Page {page:,} is past the last page ({pages:,}).")
    else:
        first = result.offset + 1
        last = result.offset + result.rows.height
        summary.markdown(
            f"**{ui.format_count(num_total)} requests** · showing {first:,}–{last:,}, "
            f"page {page:,} of {pages:,}"
        )
    nav = st.columns([1, 1, 2, 2])
    if nav[0].button("← Newer" if sort == "start_time" else "← Previous", disabled=page <= 1):
        st.query_params["page"] = str(page - 1)
        st.rerun()
    if nav[1].button("Older →" if sort == "start_time" else "Next →", disabled=page >= pages):
        st.query_params["page"] = str(page + 1)
        st.rerun()
    with nav[2].popover("Export annotated traces", icon=":material/download:"):
        st.caption("Every annotated request in the time range, one JSON object per line.")
        if st.button("Prepare the export", key="prepare_export"):
            text = "\n".join(annotated_traces_jsonl(conn, scope, filters.label))
            st.download_button(
                "Download JSONL",
                data=text.encode("utf-8"),
                file_name="annotated-traces.jsonl",
                mime="application/jsonl",
            )
    if num_total:
        nav[3].markdown(
            f"[Save as an eval dataset →]({_evals_link()})",
            help="Open the Evals page's dataset form with these filters: each request's "
            "answer becomes a case, what production answered its reference.",
        )


def _sample_view(
    conn: duckdb.DuckDBPyConnection, scope: Scope, filters: TraceFilter, seed_text: str
) -> None:
    seed = int(seed_text) if seed_text.isdigit() else 0
    rows = sample_traces(conn, scope, filters, num=SAMPLE_SIZE, seed=seed)
    st.markdown(f"**{rows.height} random requests** (seed {seed}) from those that match.")
    buttons = st.columns([1, 1, 4])
    if buttons[0].button("Draw again", icon=":material/casino:"):
        _navigate(sample=str(secrets.randbelow(10**9)))
    if buttons[1].button("Back to the list"):
        _navigate()
    _show_rows(rows, scope, "trace_sample")


# --------------------------------------------------------------------------- trace


def _save_annotation(trace: TraceDetail) -> Any:
    def save(
        label: str, score: float | None, comment: str, author: str, span_id: str | None
    ) -> str | None:
        try:
            note = new_annotation(
                trace.project,
                trace.trace_id,
                label,
                span_id=span_id,
                score=score,
                comment=comment,
                author=author,
            )
        except ValueError as exc:
            return str(exc)
        write_annotations(ui.tables(), [note])
        return None

    return save


def _default_span(trace: TraceDetail) -> str:
    """The span to show first: the last model call (the answer), else the root."""
    calls = trace.tree.filter(pl.col("category") == "llm")
    return str(calls["span_id"][-1]) if calls.height else trace.root.span_id


def _select_span(trace: TraceDetail) -> str:
    """The span selector (seeded from ``?span=``), the waterfall and the tree; returns the id."""
    ids = trace.tree["span_id"].to_list()
    wanted = _one("span")
    key = _nav_key("trace_span")
    if key not in st.session_state:
        st.session_state[key] = wanted if wanted in ids else _default_span(trace)
    names = {
        r["span_id"]: "\u2003" * r["depth"] + (r["name"] or "(unnamed)")
        for r in trace.tree.iter_rows(named=True)
    }
    figure = waterfall_figure(trace, st.session_state[key])
    event = st.plotly_chart(
        figure,
        key=_nav_key("waterfall"),
        on_select="rerun",
        selection_mode="points",
        config={"displayModeBar": False},
    )
    clicked = [p.get("customdata") for p in ui.selected_points(event) if p.get("customdata")]
    table_event = st.dataframe(
        tree_table(trace),
        hide_index=True,
        width="stretch",
        column_config=TREE_COLUMNS,
        on_select="rerun",
        selection_mode="single-row",
        key=_nav_key("span_tree"),
    )
    rows = table_event.selection.rows if table_event is not None else []
    picked = ids[rows[0]] if rows else (clicked[0][0] if clicked else None)
    if picked and picked != st.session_state.get(f"_picked_{key}"):
        st.session_state[f"_picked_{key}"] = picked
        st.session_state[key] = picked
    span_id: str = st.selectbox(
        "Span",
        ids,
        key=key,
        format_func=lambda i: names.get(i, i),
        help="Or click a bar in the timeline, or a row in the tree.",
    )
    if _one("span") != span_id:
        st.query_params["span"] = span_id
    return span_id


def _trace_view(conn: duckdb.DuckDBPyConnection, scope: Scope, trace_id: str) -> None:
    if st.button("← Back to the list", key="back_to_list"):
        _navigate()
    hint = parse_time(_one("t"))
    trace = read_trace(conn, scope.project, trace_id, hint)
    if trace is None:
        st.warning(
            md_escape(f"No trace {trace_id} in project {scope.project}.", 300)
            + " It may not have arrived yet, or belong to another project."
        )
        return
    if hint is None or abs((hint - trace.start_time).total_seconds()) > 1:
        st.query_params["t"] = iso_time(trace.start_time)
    root = trace.root
    st.title(md_escape(root.name or "Trace", 120), anchor=False)
    st.caption(
        md_escape(
            f"trace {trace.trace_id} · {trace.start_time:%Y-%m-%d %H:%M:%S} UTC · "
            f"{root.service_name or 'unknown service'}",
            300,
        )
    )
    calls = trace.tree.filter(pl.col("category").is_in(["llm", "embedding"]))
    tokens = int(
        calls["input_tokens"].fill_null(0).sum() + calls["output_tokens"].fill_null(0).sum()
    )
    errors = int((trace.tree["status_code"] == "ERROR").sum())
    metrics = st.columns(6)
    metrics[0].metric("Duration", ui.format_ms(trace.duration_ms))
    metrics[1].metric("Spans", ui.format_count(trace.tree.height))
    metrics[2].metric("Model calls", ui.format_count(calls.height))
    metrics[3].metric("Tokens", ui.format_count(tokens))
    metrics[4].metric("Cost", ui.format_usd(float(calls["cost_usd"].fill_null(0).sum())))
    metrics[5].metric("Failed spans", ui.format_count(errors))
    people = st.columns([1, 1, 4])
    user = next((s.user_id for s in trace.spans if s.user_id), None)
    session = next((s.session_id for s in trace.spans if s.session_id), None)
    if session and people[0].button("Conversation", icon=":material/forum:", key="to_session"):
        _navigate(session=session, t=iso_time(trace.start_time))
    if user and people[1].button("User", icon=":material/person:", key="to_user"):
        for key in LIST_PARAMS:
            if key in st.query_params:
                del st.query_params[key]
        _navigate(user=user)
    if user or session:
        people[2].caption(md_escape(f"user {user or '—'} · session {session or '—'}", 200))

    span_id = _select_span(trace)
    span = trace.span(span_id)
    if span is not None:
        with st.container(border=True):
            render_span(span, trace)
    left, right = st.columns(2)
    with left:
        st.subheader("User feedback", anchor=False)
        render_feedback(trace.feedback)
    with right:
        st.subheader("Annotations", anchor=False)
        render_annotations(trace, span_id, _save_annotation(trace))


# --------------------------------------------------------------------------- page


def render(conn: duckdb.DuckDBPyConnection, scope: Scope) -> None:
    """Draw the view the URL asks for."""
    scope = _window(scope)
    trace_id = _one("trace") or _one("trace_id")
    session_id = _one("session")
    if trace_id:
        _trace_view(conn, scope, trace_id)
    elif session_id:
        if st.button("← Back to the list", key="back_from_session"):
            _navigate()
        st.title("Conversation", anchor=False)
        st.caption(md_escape(f"session {session_id}", 200))
        session = read_session(conn, scope.project, session_id, parse_time(_one("t")))
        if session is None:
            st.warning(md_escape(f"No session {session_id} in project {scope.project}.", 300))
            return
        render_session(
            session,
            lambda turn: _navigate(trace=turn["trace_id"], t=iso_time(turn["start_time"])),
        )
    else:
        st.title("Traces", anchor=False)
        _list_view(conn, scope)


# Also set here: a deep link opened first after the server starts runs this page directly.
st.set_page_config(page_title="Traces · Flywheel", layout="wide")
_conn = ui.catalog()
_scope = ui.sidebar_filters(_conn)
if _scope is None:
    st.title("Traces", anchor=False)
    ui.show_empty_lake()
else:
    render(_conn, _scope)
