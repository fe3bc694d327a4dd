"""Drawing one trace: header, waterfall, span tree, span detail, feedback and annotations.

Everything that came from a span (names, prompts, outputs, attribute values, comments) is
untrusted: it reaches the page through ``st.text``, ``st.code``, ``st.json``, dataframe cells,
:func:`app.untrusted.md_escape` (labels) or :func:`app.untrusted.plot_text` (chart text).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from analytics.trace_detail import CATEGORIES, SpanDetail, TraceDetail
from app import components as ui
from app.chat import (
    input_messages,
    output_messages,
    render_messages,
    show_payload,
    tool_execution,
)
from app.untrusted import md_escape, plot_text
from ingest.messages import parse_json_value

#: One colour per span category (colour-blind-safe Okabe-Ito palette), errors in red outline.
CATEGORY_COLORS: dict[str, str] = {
    "llm": "#0072B2",
    "embedding": "#56B4E9",
    "retrieval": "#009E73",
    "tool": "#E69F00",
    "guardrail": "#CC79A7",
    "agent": "#7F7F7F",
    "other": "#BDBDBD",
}
CATEGORY_LABELS: dict[str, str] = {
    "llm": "LLM",
    "embedding": "Embedding",
    "retrieval": "Retrieval",
    "tool": "Tool",
    "guardrail": "Guardrail",
    "agent": "Agent / chain",
    "other": "Other",
}
ERROR_COLOR = "#D62728"
_SAVED = "annotation_saved"


#: Thickness of a span's bar, in rows.
BAR_WIDTH = 0.7


def waterfall_figure(trace: TraceDetail, selected: str | None = None) -> go.Figure:
    """A Gantt-style timeline: one bar per span in tree order, coloured by category."""
    rows = trace.tree.to_dicts()
    # Rows are positions (two spans may share a name); the tick text names them.
    ticks = [plot_text(r["name"] or "(unnamed)", 48) for r in rows]
    figure = go.Figure()
    for category in CATEGORIES:
        picked = [(i, r) for i, r in enumerate(rows) if r["category"] == category]
        if not picked:
            continue
        figure.add_bar(
            name=CATEGORY_LABELS[category],
            orientation="h",
            y=[i for i, _ in picked],
            x=[max(r["duration_ms"] or 0.0, 0.0) for _, r in picked],
            base=[r["offset_ms"] for _, r in picked],
            # Explicit, or Plotly sizes a category's bars by the gap between its rows.
            width=[BAR_WIDTH] * len(picked),
            marker={
                "color": CATEGORY_COLORS[category],
                "line": {
                    "color": [
                        ERROR_COLOR
                        if r["status_code"] == "ERROR"
                        else ("#000000" if r["span_id"] == selected else CATEGORY_COLORS[category])
                        for _, r in picked
                    ],
                    "width": [
                        3 if r["status_code"] == "ERROR" or r["span_id"] == selected else 0
                        for _, r in picked
                    ],
                },
            },
            customdata=[
                [
                    r["span_id"],
                    plot_text(r["name"] or ""),
                    ui.format_ms(r["duration_ms"]),
                    ui.format_ms(r["offset_ms"]),
                    "error" if r["status_code"] == "ERROR" else (r["status_code"] or ""),
                    plot_text(r["model"] or ""),
                ]
                for _, r in picked
            ],
            hovertemplate=(
                "%{customdata[1]}<br>starts at %{customdata[3]}, lasts %{customdata[2]}"
                "<br>%{customdata[4]} %{customdata[5]}<extra></extra>"
            ),
        )
    errors = [(i, r) for i, r in enumerate(rows) if r["status_code"] == "ERROR"]
    if errors:
        figure.add_scatter(
            name="Error",
            mode="markers",
            y=[i for i, _ in errors],
            x=[r["offset_ms"] + max(r["duration_ms"] or 0.0, 0.0) for _, r in errors],
            marker={"symbol": "x", "size": 11, "color": ERROR_COLOR},
            hoverinfo="skip",
        )
    figure.update_layout(
        barmode="overlay",
        height=max(240, 30 * len(rows) + 110),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0},
        bargap=0.25,
        xaxis={"title": "ms since the trace started", "rangemode": "tozero"},
        yaxis={
            "autorange": "reversed",
            "tickmode": "array",
            "tickvals": list(range(len(rows))),
            "ticktext": ticks,
            "tickfont": {"size": 11},
        },
        clickmode="event+select",
    )
    return figure


def tree_table(trace: TraceDetail) -> pl.DataFrame:
    """The span tree as a table: indented name, category, timing, model, tokens, cost."""
    tree = trace.tree
    return tree.select(
        pl.struct("depth", "name")
        .map_elements(
            lambda r: "\u2003" * r["depth"] + ("└ " if r["depth"] else "") + (r["name"] or ""),
            return_dtype=pl.String,
        )
        .alias("span"),
        pl.col("category").replace_strict(CATEGORY_LABELS, default="Other").alias("kind"),
        pl.col("offset_ms"),
        pl.col("duration_ms"),
        pl.when(pl.col("status_code") == "ERROR")
        .then(pl.lit("❌ error"))
        .when(pl.col("status_code") == "OK")
        .then(pl.lit("ok"))
        .otherwise(pl.lit(""))
        .alias("status"),
        pl.col("model").fill_null(""),
        pl.col("input_tokens"),
        pl.col("output_tokens"),
        pl.col("ttft_ms"),
        pl.col("cost_usd"),
        pl.col("service_name"),
        pl.col("span_id"),
    )


TREE_COLUMNS: dict[str, Any] = {
    "span": st.column_config.TextColumn("Span", width="large"),
    "kind": "Kind",
    "offset_ms": st.column_config.NumberColumn("Starts at", format="%.0f ms"),
    "duration_ms": st.column_config.NumberColumn("Duration", format="%.0f ms"),
    "status": "Status",
    "model": "Model",
    "input_tokens": st.column_config.NumberColumn("In tokens", format="localized"),
    "output_tokens": st.column_config.NumberColumn("Out tokens", format="localized"),
    "ttft_ms": st.column_config.NumberColumn("TTFT", format="%.0f ms"),
    "cost_usd": st.column_config.NumberColumn("Cost", format="$%.5f"),
    "service_name": "Service",
    "span_id": "Span id",
}


def _metric_row(items: list[tuple[str, str]]) -> None:
    columns = st.columns(len(items))
    for column, (label, value) in zip(columns, items, strict=True):
        column.metric(label, value)


def render_span(span: SpanDetail, trace: TraceDetail) -> None:
    """Everything about one span: timing, model and parameters, chat, tools, events, attributes."""
    title = f"{span.name or '(unnamed span)'}"
    st.subheader(md_escape(title, 120), anchor=False)
    facts = [
        ("kind", f"{span.category} · {span.kind or '?'}"),
        ("service", span.service_name or "—"),
        ("span id", span.span_id),
    ]
    if span.operation:
        facts.append(("operation", span.operation))
    st.caption(" · ".join(f"{k}: {md_escape(v, 80)}" for k, v in facts))
    if span.status_code == "ERROR":
        st.error("This span failed.", icon=":material/error:")
        if span.status_message:
            st.text(span.status_message)
    items = [("Duration", ui.format_ms(span.duration_ms))]
    if span.ttft_ms is not None:
        items.append(("TTFT", ui.format_ms(span.ttft_ms)))
    if span.tpot_ms is not None:
        items.append(("TPOT", ui.format_ms(span.tpot_ms)))
    if span.input_tokens is not None or span.output_tokens is not None:
        items += [
            ("Input tokens", ui.format_count(span.input_tokens)),
            ("Output tokens", ui.format_count(span.output_tokens)),
        ]
    if span.cache_read_tokens:
        items.append(("Cached input", ui.format_count(span.cache_read_tokens)))
    if span.reasoning_tokens:
        items.append(("Reasoning tokens", ui.format_count(span.reasoning_tokens)))
    if span.cost_usd is not None:
        items.append(("Cost", ui.format_usd(span.cost_usd)))
    _metric_row(items)

    if span.model or span.provider:
        model = {
            "provider": span.provider,
            "request model": span.request_model,
            "response model": span.response_model,
            "finish reasons": ", ".join(span.finish_reasons) or None,
            "system prompt hash": span.system_prompt_hash,
        }
        params = {k: v for k, v in span.request_parameters().items()}
        st.markdown("**Model and parameters**")
        st.dataframe(
            pl.DataFrame(
                {
                    "setting": list(model) + list(params),
                    "value": [None if v is None else str(v) for v in model.values()]
                    + [str(v) for v in params.values()],
                }
            ).filter(pl.col("value").is_not_null()),
            hide_index=True,
            width="stretch",
        )

    inputs = input_messages(span)
    outputs = output_messages(span)
    tool = tool_execution(span)
    tabs = st.tabs(["Prompt & output", "Tool call", "Events", "Attributes"])
    with tabs[0]:
        if inputs or outputs:
            st.markdown("**Prompt**")
            render_messages(inputs)
            st.markdown("**Output**")
            render_messages(outputs)
        else:
            st.caption("This span records no prompt or output.")
        retrieval = span.attributes.get("gen_ai.retrieval.documents")
        if retrieval:
            st.markdown("**Retrieved documents**")
            show_payload(retrieval)
    with tabs[1]:
        if tool is None:
            st.caption("This span ran no tool.")
        else:
            st.caption(
                md_escape(
                    f"Tool {tool.name or '?'}" + (f" · call {tool.call_id}" if tool.call_id else "")
                )
            )
            if tool.description:
                st.text(tool.description)
            st.markdown("**Arguments**")
            show_payload(tool.arguments, empty="(no arguments recorded)")
            st.markdown("**Result**")
            show_payload(tool.result, empty="(no result recorded)")
    with tabs[2]:
        if not span.events:
            st.caption("No events.")
        for event in span.events:
            when = "" if event.time is None else f"{event.time:%H:%M:%S.%f} · "
            st.caption(md_escape(f"{when}{event.name or '(unnamed)'}"))
            if event.attributes:
                st.json(_json_attributes(event.attributes), expanded=True)
    with tabs[3]:
        _attributes(span)


def _json_attributes(attributes: dict[str, str]) -> dict[str, Any]:
    """Attribute values with JSON text decoded, for a readable tree."""
    out: dict[str, Any] = {}
    for key, value in sorted(attributes.items()):
        parsed = parse_json_value(value)
        out[key] = parsed if isinstance(parsed, dict | list) else value
    return out


def _attributes(span: SpanDetail) -> None:
    needle = st.text_input(
        "Search attributes",
        key=f"attr_search_{span.span_id}",
        placeholder="key or value contains…",
    )
    groups = {
        "attributes": span.attributes,
        "resource attributes": span.resource_attributes,
    }
    for title, attributes in groups.items():
        shown = {
            k: v
            for k, v in attributes.items()
            if not needle or needle.lower() in k.lower() or needle.lower() in str(v).lower()
        }
        st.markdown(f"**{title}** ({len(shown)} of {len(attributes)})")
        st.json(_json_attributes(shown), expanded=2)
    if span.links:
        st.markdown("**links**")
        st.json(json.loads(json.dumps(list(span.links), default=str)), expanded=False)


def render_feedback(feedback: pl.DataFrame) -> None:
    """The trace's explicit feedback: thumbs, ratings, comments, edits, copy/share/report."""
    if feedback.is_empty():
        st.caption("No user feedback on this trace.")
        return
    for row in feedback.iter_rows(named=True):
        kind = row["kind"]
        value = row["value"]
        if kind == "thumbs":
            head = "👍 thumbs up" if (value or 0) > 0 else "👎 thumbs down"
        elif kind == "rating":
            head = f"⭐ rating {value:g}" if value is not None else "⭐ rating"
        else:
            head = {"comment": "💬 comment", "edit": "✏️ edited answer"}.get(kind, kind)
        who = f" · {row['user_id']}" if row.get("user_id") else ""
        when = f"{row['time']:%Y-%m-%d %H:%M:%S}" if row.get("time") else ""
        st.caption(md_escape(f"{head} · {when}{who}", 160))
        if row.get("text"):
            st.text(row["text"])


def render_annotations(
    trace: TraceDetail,
    span_id: str | None,
    save: Callable[[str, float | None, str, str, str | None], str | None],
) -> None:
    """The trace's annotations and a form to add one (to the trace or the selected span)."""
    if st.session_state.pop(_SAVED, False):
        st.success("Saved.", icon=":material/check:")
    notes = trace.annotations
    if notes.is_empty():
        st.caption("No annotations yet.")
    else:
        shown = notes.select("time", "label", "score", "comment", "author", "span_id")
        st.dataframe(
            shown,
            hide_index=True,
            width="stretch",
            column_config={
                "time": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
                "label": "Label",
                "score": st.column_config.NumberColumn("Score", format="%.2f"),
                "comment": st.column_config.TextColumn("Comment", width="large"),
                "author": "Author",
                "span_id": "Span (empty: whole trace)",
            },
        )
    with st.form("annotate", clear_on_submit=True, border=True):
        st.markdown("**Add an annotation**")
        left, middle, right = st.columns([2, 1, 2])
        label = left.text_input("Label", placeholder="e.g. hallucination, good answer")
        score = middle.number_input("Score (optional)", value=None, step=0.1, format="%.2f")
        author = right.text_input("Author", key="annotation_author_field")
        comment = st.text_area("Comment (optional)", height=80)
        target = st.radio(
            "About",
            ["trace", "span"] if span_id else ["trace"],
            horizontal=True,
            format_func=lambda v: "the whole trace" if v == "trace" else "the selected span",
        )
        if st.form_submit_button("Save annotation", type="primary"):
            error = save(label, score, comment, author, span_id if target == "span" else None)
            if error:
                st.error(error)
            else:
                st.session_state[_SAVED] = True
                st.rerun()  # read the trace again, with the new annotation
