"""Shared pieces of the span trees of one request: resources, scopes, what the user sends
(``Turn``), what came of it (``Outcome``), and ``TraceContext``, which mints ids and writes spans.

Every duration is drawn first and a parent's end follows from its children, so children
always nest inside their parents; a streamed model call lasts TTFT + (output tokens − 1) × TPOT
plus a few milliseconds of transport.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any

from sample_data import world
from sample_data.spans import BatchBuilder, Event, Resource, Scope
from sample_data.texts import Question

_COMMON = (
    ("deployment.environment", "production"),
    ("telemetry.sdk.name", "opentelemetry"),
    ("telemetry.sdk.language", "python"),
    ("telemetry.sdk.version", "1.38.0"),
)
RAG_RESOURCES: dict[str, Resource] = {
    v: (
        ("service.name", "rag-chat"),
        ("service.version", sv),
        *_COMMON,
        ("cloud.region", "eu-west-1"),
    )
    for v, sv in (("v1", "1.8.0"), ("v2", "1.9.0"))
}
SUPPORT_RESOURCE: Resource = (
    ("service.name", "support-bot"),
    ("service.version", "0.7.3"),
    *_COMMON,
    ("openinference.project.name", "support-bot"),
)
HTTP_SCOPE: Scope = ("opentelemetry.instrumentation.fastapi", "0.59b0")
APP_SCOPE: Scope = ("rag_chat", "1.8.0")
OI_SCOPE: Scope = ("openinference.instrumentation.llama_index", "4.3.1")


@dataclass
class Turn:
    """What the user sends: who, in which session, what, when, and what came before."""

    user_id: str
    session_id: str
    question: Question
    start_ns: int
    bucket: float = 0.0  # A/B assignment of the session (0–1)
    history: list[tuple[str, str, int]] = field(default_factory=list)  # (question, answer, tokens)
    previous: Question | None = None


@dataclass
class Outcome:
    """What happened: ids, end, and the answer (if any) with its hidden quality."""

    trace_id: bytes
    end_ns: int
    answered: bool = False
    bad: bool = False
    error: bool = False
    answer: str = ""
    answer_tokens: int = 0
    answer_span_id: bytes | None = None


def ms(value: float) -> int:
    """Milliseconds to nanoseconds."""
    return int(value * 1_000_000)


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    """A log-normal draw given its median."""
    return median * math.exp(rng.gauss(0.0, sigma))


def jdump(value: Any) -> str:
    """Compact JSON, as instrumentations put structured content into string attributes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def text_message(role: str, content: str) -> dict[str, Any]:
    """A one-part text message in the OTel GenAI message schema."""
    return {"role": role, "parts": [{"type": "text", "content": content}]}


class TraceContext:
    """One trace under construction: ids, resource and the builder it writes into."""

    def __init__(self, b: BatchBuilder, rng: random.Random, resource: Resource) -> None:
        self.b, self.rng, self.resource = b, rng, resource
        self.trace_id = rng.getrandbits(128).to_bytes(16, "big")
        self.root_id = self.new_id()

    def new_id(self) -> bytes:
        """A fresh non-zero span id."""
        return (self.rng.getrandbits(64) | 1).to_bytes(8, "big")

    def span(
        self,
        scope: Scope,
        parent: bytes | None,
        name: str,
        kind: int,
        start: int,
        end: int,
        attrs: dict[str, Any],
        span_id: bytes | None = None,
        status: tuple[int, str] = (0, ""),
        events: tuple[Event, ...] = (),
    ) -> bytes:
        """Write one span of this trace; returns its id."""
        span_id = span_id or self.new_id()
        self.b.add_span(
            self.resource,
            scope,
            (self.trace_id, span_id, parent),
            name,
            kind,
            start,
            end,
            attrs,
            status,
            events,
        )
        return span_id


def model_timing(
    rng: random.Random, model: world.Model, input_tokens: int, output_tokens: int
) -> tuple[float, float]:
    """(TTFT, duration) in seconds for one call."""
    ttft = lognormal(rng, model.ttft_median_s, 0.35) * (1 + input_tokens / 10_000)
    if rng.random() < 0.03:
        ttft *= 3  # provider queueing
    tpot = lognormal(rng, model.tpot_s, 0.15)
    return ttft, ttft + max(output_tokens - 1, 0) * tpot + rng.uniform(0.002, 0.015)
