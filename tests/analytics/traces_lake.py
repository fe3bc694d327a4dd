"""A small lake for the trace-explorer tests: varied traces with texts, guardrails, feedback,
annotations and edge cases, plus a pure-Python reference of the trace list built from the rows."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from analytics.annotations import new_annotation, write_annotations
from analytics.cost import install_prices
from ingest.guard import Guard
from store.catalog import open_catalog, query
from store.lake import Lake
from store.schema import FEEDBACK_SCHEMA, LLM_OPERATIONS, SPAN_SCHEMA
from tests.analytics.lake import T0, new_id, random_traces, span, write_lake

WINDOW = (T0 + timedelta(hours=6), T0 + timedelta(hours=40))
TOPICS = ("refund", "password reset", "invoice PDF", "100%_sure", "Ünïcode ☃")
#: Provider-native guardrail verdicts (result.type, result.value) and which mean "intervened".
GUARDRAIL_VALUES = (
    ("action", "NONE"),
    ("action", "GUARDRAIL_INTERVENED"),
    ("tripwire_triggered", "false"),
    ("tripwire_triggered", "true"),
    ("filter_match_state", "MATCH_FOUND"),
)
INTERVENED = {"GUARDRAIL_INTERVENED", "true", "MATCH_FOUND"}


def _decorate(rows: list[dict[str, Any]], rng: random.Random) -> None:
    """Give model calls texts, and some traces a guardrail span."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_trace[row["trace_id"]].append(row)
    for spans in by_trace.values():
        root = next(s for s in spans if s["parent_span_id"] is None)
        for s in spans:
            if s["operation"] == "chat":
                topic = rng.choice(TOPICS)
                s["input_text"] = f"How do I get a {topic}?\nContext: doc-{rng.randint(1, 9)}"
                s["output_text"] = rng.choice(["Sure, here is how.", f"About {topic}: step 1."])
        if rng.random() < 0.4:
            result_type, value = rng.choice(GUARDRAIL_VALUES)
            rows.append(
                span(
                    project=root["project"],
                    trace_id=root["trace_id"],
                    parent_span_id=root["span_id"],
                    name="apply_guardrail input",
                    start_time=root["start_time"] + timedelta(milliseconds=1),
                    duration_ms=3.0,
                    service_name=root["service_name"],
                    operation="guardrail",
                    attributes=[
                        ("gen_ai.operation.name", "apply_guardrail"),
                        ("gen_ai.guardrail.result.type", result_type),
                        ("gen_ai.guardrail.result.value", value),
                    ],
                )
            )


def build_rows(seed: int = 11) -> list[dict[str, Any]]:
    """The lake's spans: random traces around the window, edge cases, another project."""
    rng = random.Random(seed)
    rows = random_traces(seed=seed, num_traces=90, start=T0, span_hours=48)
    rows += random_traces(seed=seed + 1, num_traces=8, project="other")
    _decorate(rows, rng)
    # A trace whose root never arrived: not a request, never listed.
    orphan_trace = new_id(32)
    rows.append(
        span(
            trace_id=orphan_trace,
            parent_span_id=new_id(),
            start_time=T0 + timedelta(hours=20),
            operation="chat",
            input_text="orphan refund question",
            user_id="u1",
        )
    )
    # A root just before the window with a child inside it: not in the window.
    early = span(start_time=WINDOW[0] - timedelta(seconds=1), duration_ms=5000.0)
    rows.append(early)
    rows.append(
        span(
            trace_id=early["trace_id"],
            parent_span_id=early["span_id"],
            start_time=WINDOW[0] + timedelta(seconds=1),
            operation="chat",
            input_text="edge refund",
        )
    )
    return rows


def feedback_rows(rows: list[dict[str, Any]], seed: int = 3) -> list[dict[str, Any]]:
    """Feedback on about half of the traces of the default project."""
    rng = random.Random(seed)
    roots = [r for r in rows if r["parent_span_id"] is None and r["project"] == "default"]
    feedback = []
    for n, root in enumerate(roots):
        if rng.random() < 0.5:
            continue
        kind = rng.choice(["thumbs", "thumbs", "edit", "comment", "report", "rating"])
        value = {"thumbs": rng.choice([1.0, -1.0]), "rating": float(rng.randint(1, 5))}.get(kind)
        feedback.append(
            {
                "project": "default",
                "feedback_id": f"fb-{n}",
                "trace_id": root["trace_id"],
                "span_id": None,
                "time": root["end_time"] + timedelta(seconds=30),
                "kind": kind,
                "value": value,
                "text": "edited text" if kind == "edit" else None,
                "user_id": root["user_id"],
                "source": "explicit",
                "attributes": None,
            }
        )
    return feedback


def make_lake(data_dir: Path) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """Write spans, feedback and annotations; returns (data_dir, span rows, feedback rows)."""
    rows = build_rows()
    write_lake(data_dir, rows)
    # the guardrail results ingest would have read from those spans
    spans = pa.Table.from_pylist(rows, schema=SPAN_SCHEMA)
    Lake(data_dir).write("guardrails", Guard(detectors=False).apply(spans).guardrails)
    feedback = feedback_rows(rows)
    Lake(data_dir).write("feedback", pa.Table.from_pylist(feedback, schema=FEEDBACK_SCHEMA))
    roots = [r for r in rows if r["parent_span_id"] is None and r["project"] == "default"]
    notes = [
        new_annotation("default", r["trace_id"], label, author="rev", time=r["end_time"])
        for r, label in zip(
            roots[::7], ["hallucination", "good", "hallucination"] * 10, strict=False
        )
    ]
    write_annotations(data_dir, notes)
    return data_dir, rows, feedback


def call_costs(data_dir: Path) -> dict[str, float | None]:
    """Per model-call span, the cost the catalog's ``llm_calls`` view computes (tested there)."""
    conn = open_catalog(data_dir)
    install_prices(conn)
    table = query(conn, "SELECT span_id, total_cost_usd FROM llm_calls")
    costs = table["total_cost_usd"].to_pylist()
    return dict(zip(table["span_id"].to_pylist(), costs, strict=True))


@dataclass(frozen=True)
class RefTrace:
    """What the trace list should say about one request, computed from the rows."""

    trace_id: str
    start_time: datetime
    service_name: str
    name: str
    duration_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    total_cost_usd: float | None
    has_error: bool
    guardrail_triggered: bool
    users: frozenset[str]
    sessions: frozenset[str]
    operations: frozenset[str]
    models: tuple[str, ...]
    texts: tuple[str, ...]
    feedback: frozenset[str]
    labels: frozenset[str]

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def _signals(records: list[dict[str, Any]]) -> frozenset[str]:
    found = set()
    for f in records:
        kind, value = f["kind"], f["value"]
        if kind == "thumbs":
            found.add("thumbs_up" if value > 0 else "thumbs_down")
        elif kind == "rating" and value <= 2:
            found.add("low_rating")
        elif kind in ("edit", "comment", "report"):
            found.add({"edit": "edited", "comment": "commented", "report": "reported"}[kind])
    return frozenset(found)


def reference_traces(
    rows: list[dict[str, Any]],
    feedback: list[dict[str, Any]],
    costs: dict[str, float | None],
    labels: dict[str, set[str]],
    project: str = "default",
) -> list[RefTrace]:
    """Every request (trace with a root) of a project, as the list defines its columns."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["project"] == project:
            by_trace[row["trace_id"]].append(row)
    fb: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in feedback:
        fb[f["trace_id"]].append(f)
    out = []
    for trace_id, spans in by_trace.items():
        roots = sorted(
            (s for s in spans if not s["parent_span_id"]),
            key=lambda s: (s["start_time"], s["span_id"]),
        )
        if not roots:
            continue
        root = roots[0]
        calls = sorted(
            (s for s in spans if s["operation"] in LLM_OPERATIONS),
            key=lambda s: s["start_time"],
        )
        streamed = [c for c in calls if c["ttft_ms"] is not None]
        priced = [costs.get(c["span_id"]) for c in calls]
        cost = (
            sum(p for p in priced if p is not None) if any(p is not None for p in priced) else None
        )
        out.append(
            RefTrace(
                trace_id=trace_id,
                start_time=root["start_time"],
                service_name=root["service_name"],
                name=root["name"],
                duration_ms=root["duration_ms"],
                ttft_ms=streamed[0]["ttft_ms"] if streamed else None,
                input_tokens=sum(c["input_tokens"] or 0 for c in calls),
                output_tokens=sum(c["output_tokens"] or 0 for c in calls),
                total_cost_usd=0.0 if not calls else cost,
                has_error=any(s["status_code"] == "ERROR" for s in spans),
                guardrail_triggered=any(
                    s["operation"] == "guardrail"
                    and dict(s["attributes"] or []).get("gen_ai.guardrail.result.value")
                    in INTERVENED
                    for s in spans
                ),
                users=frozenset(s["user_id"] for s in spans if s["user_id"]),
                sessions=frozenset(s["session_id"] for s in spans if s["session_id"]),
                operations=frozenset(s["operation"] for s in spans if s["operation"]),
                models=tuple(
                    sorted({c["response_model"] or c["request_model"] for c in calls} - {None})
                ),
                texts=tuple(t for s in spans for t in (s["input_text"], s["output_text"]) if t),
                feedback=_signals(fb[trace_id]),
                labels=frozenset(labels.get(trace_id, set())),
            )
        )
    return out
