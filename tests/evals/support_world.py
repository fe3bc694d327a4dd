"""A small lake of support traces with planted inputs, answers and votes (OTel GenAI spans and
thumbs feedback, through the real ingest path), for the eval dataset and CLI tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from analytics.cost import install_prices
from analytics.scope import Scope
from evals.cases import Message, case_id_of
from ingest.loader import ingest_paths
from store.catalog import open_catalog
from store.writer import LakeWriter

# --- a small lake of support traces ------------------------------------------------------------

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
SYSTEM = "You are the support assistant of Acme."
SCOPE = Scope("default", T0 - timedelta(hours=1), T0 + timedelta(hours=3))


@dataclass
class Planted:
    """One request as planted: its answer call's input, output and facts."""

    key: str
    trace_id: str
    call_span_id: str | None
    start: datetime
    route: str
    messages: list[Message]
    output: str | None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    status: str = "UNSET"
    user_id: str | None = None
    votes: list[tuple[str, int]] = field(default_factory=list)  # (user, +1/-1), oldest first

    @property
    def call_start(self) -> datetime:
        return self.start + timedelta(milliseconds=10)

    @property
    def case_id(self) -> str:
        return case_id_of(self.messages)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _parts(messages: list[Message]) -> str:
    return json.dumps(
        [
            {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
            for m in messages
        ]
    )


def _chat_span(
    trace_id: str,
    span_id: str,
    parent: str,
    start: datetime,
    end: datetime,
    messages: list[Message],
    output: str | None,
    model: str | None,
    tokens: tuple[int | None, int | None],
    status: str = "UNSET",
    user_id: str | None = None,
) -> dict[str, Any]:
    system = [m["content"] for m in messages if m["role"] == "system"]
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}
    if any(m["role"] != "system" for m in messages):
        attributes["gen_ai.input.messages"] = _parts([m for m in messages if m["role"] != "system"])
    if model:
        attributes["gen_ai.request.model"] = attributes["gen_ai.response.model"] = model
    if tokens[0] is not None:
        attributes["gen_ai.usage.input_tokens"] = tokens[0]
    if tokens[1] is not None:
        attributes["gen_ai.usage.output_tokens"] = tokens[1]
    if system:
        attributes["gen_ai.system_instructions"] = json.dumps(
            [{"type": "text", "content": system[0]}]
        )
    if output is not None:
        attributes["gen_ai.output.messages"] = _parts([{"role": "assistant", "content": output}])
    if user_id:
        attributes["user.id"] = user_id
    return {
        "type": "span",
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": f"chat {model}",
        "kind": "CLIENT",
        "service_name": "support",
        "start_time": _ns(start),
        "end_time": _ns(end),
        "status_code": status,
        "attributes": attributes,
    }


def user_message(text: str) -> Message:
    return {"role": "user", "content": text}


def system_message(text: str = SYSTEM) -> Message:
    return {"role": "system", "content": text}


def planted_requests() -> list[Planted]:
    """The requests of project ``default``, oldest first (ids are fixed hex numbers)."""
    refund = [system_message(), user_message("How do I get a refund for order 1?")]
    rows = [
        Planted("refund-old", "", None, T0, "POST /refund", refund, "Refunds take 5 days (v1).",
                "gpt-4o-mini", 12, 7),
        Planted("parcel-error", "", None, T0 + timedelta(minutes=10), "POST /chat",
                [system_message(), user_message("Where is my parcel 2?")], None, "gpt-4o-mini", 9, None,
                status="ERROR", votes=[("u1", -1)]),
        Planted("refund-new", "", None, T0 + timedelta(minutes=20), "POST /refund", refund,
                "Refunds take 3 days (v2).", "gpt-4o", 20, 9, user_id="u7", votes=[("u2", 1)]),
        Planted("no-call", "", None, T0 + timedelta(minutes=30), "GET /health", [], None),
        Planted("no-user", "", None, T0 + timedelta(minutes=40), "POST /chat", [system_message()],
                "Hello?", "gpt-4o-mini", 5, 1),
        Planted("multi-turn", "", None, T0 + timedelta(minutes=50), "POST /chat",
                [system_message(), user_message("Hi there"), {"role": "assistant", "content": "How can I help?"},
                 user_message("Order 3 never arrived")], "Sorry, order 3 ships today.", "gpt-4o-mini",
                30, 6, votes=[("u3", 1), ("u4", -1)]),
        Planted("two-calls", "", None, T0 + timedelta(minutes=60), "POST /chat",
                [system_message(), user_message("Cancel my plan 4")], "Plan 4 is cancelled.", "gpt-4o-mini",
                14, 4, votes=[("u5", -1), ("u5", 1)]),
    ]  # fmt: skip
    for number, row in enumerate(rows, start=1):
        row.trace_id = f"{number:032x}"
        if row.key != "no-call":
            row.call_span_id = f"{number:08x}{2:08x}"
    return rows


def world_lines(requests: list[Planted]) -> list[dict[str, Any]]:
    """Spans and feedback to ingest for ``requests`` (plus one request in another project)."""
    lines: list[dict[str, Any]] = []
    for number, p in enumerate(requests, start=1):
        root = f"{number:08x}{1:08x}"
        end = p.start + timedelta(seconds=2)
        lines.append(
            {
                "type": "span",
                "trace_id": p.trace_id,
                "span_id": root,
                "name": p.route,
                "kind": "SERVER",
                "service_name": "support",
                "start_time": _ns(p.start),
                "end_time": _ns(end),
                "status_code": "UNSET",
            }
        )
        if p.key == "no-call":  # a tool call, no model call
            lines.append(
                {
                    "type": "span",
                    "trace_id": p.trace_id,
                    "span_id": f"{number:08x}{3:08x}",
                    "parent_span_id": root,
                    "name": "execute_tool ping",
                    "kind": "INTERNAL",
                    "service_name": "support",
                    "start_time": _ns(p.call_start),
                    "end_time": _ns(p.call_start + timedelta(milliseconds=5)),
                    "attributes": {"gen_ai.operation.name": "execute_tool"},
                }
            )
            continue
        assert p.call_span_id is not None
        if p.key == "two-calls":  # an earlier rewrite call: not the answer
            lines.append(
                _chat_span(
                    p.trace_id,
                    f"{number:08x}{4:08x}",
                    root,
                    p.start + timedelta(milliseconds=1),
                    p.start + timedelta(milliseconds=5),
                    [user_message("rewrite: cancel plan 4")],
                    "Cancel plan 4.",
                    "gpt-4o-mini",
                    (3, 3),
                )
            )
        lines.append(
            _chat_span(
                p.trace_id,
                p.call_span_id,
                root,
                p.call_start,
                p.start + timedelta(seconds=1),
                p.messages,
                p.output,
                p.model,
                (p.input_tokens, p.output_tokens),
                p.status,
                p.user_id,
            )
        )
        for i, (user, value) in enumerate(p.votes):
            lines.append(
                {
                    "type": "feedback",
                    "trace_id": p.trace_id,
                    "span_id": p.call_span_id,
                    "time": _ns(p.start + timedelta(seconds=30 + i)),
                    "kind": "thumbs",
                    "value": value,
                    "user_id": user,
                }
            )
    # the same refund question in another project: never in project default's datasets
    other = _chat_span(
        f"{99:032x}",
        f"{99:08x}{2:08x}",
        f"{99:08x}{1:08x}",
        T0 + timedelta(minutes=5),
        T0 + timedelta(minutes=5, seconds=1),
        requests[0].messages,
        "Other project.",
        "gpt-4o",
        (1, 1),
    )
    other["project"] = "other"
    other_root = {
        "type": "span",
        "project": "other",
        "trace_id": f"{99:032x}",
        "span_id": f"{99:08x}{1:08x}",
        "name": "POST /refund",
        "kind": "SERVER",
        "service_name": "support",
        "start_time": _ns(T0 + timedelta(minutes=5)),
        "end_time": _ns(T0 + timedelta(minutes=5, seconds=2)),
    }
    return [*lines, other_root, other]


def write_support_world(data_dir: Path) -> list[Planted]:
    """Ingest the planted requests into ``data_dir``; returns them (oldest first)."""
    requests = planted_requests()
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"{data_dir.name}-world.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in world_lines(requests)) + "\n")
    with LakeWriter(data_dir) as writer:
        [report] = ingest_paths([source], writer)
    assert not report.errors, report.errors[:3]
    return requests


def open_lake(data_dir: Path) -> duckdb.DuckDBPyConnection:
    conn = open_catalog(data_dir)
    install_prices(conn)
    return conn
