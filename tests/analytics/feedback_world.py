"""A seeded chat product with known feedback effects, landed through the real ingest path.

Four weeks from :data:`START`, three routes, two models, a system prompt that changes on
:data:`PROMPT_CHANGE_DAY`. Each session is 1-5 turns (traces): a root span named for its route
with ``user.id`` and ``session.id``, and one streamed chat call with its user input, answer,
system prompt, tokens and TTFT. Seeded effects, each known to the tests:

* **TTFT → thumbs-down.** A thumbs vote is down with probability
  ``sigmoid(BASE_LOGIT + TTFT_LOGIT × z + PROMPT_LOGIT × [prompt v2])``, z the standardised
  log TTFT.
* **The prompt change.** v2 from :data:`PROMPT_CHANGE_DAY` adds :data:`PROMPT_LOGIT`.
* **Regenerations cluster in one route.** After an answer on :data:`REGEN_ROUTE` the user
  re-sends the same message with probability :data:`REGEN_RATE`; elsewhere
  :data:`REGEN_RATE_ELSEWHERE`.
* **No effect:** input tokens and the model (two models, same behaviour) change nothing.

Feedback (thumbs on :data:`THUMBS_RATE` of answers, edits, ratings, copies) is written as
feedback records, some of them days late.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.loader import ingest_paths
from store.writer import LakeWriter

START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 28
PROMPT_CHANGE_DAY = 14
ROUTES = ("POST /chat", "POST /code", "POST /search")
REGEN_ROUTE = "POST /code"
REGEN_RATE = 0.25
REGEN_RATE_ELSEWHERE = 0.03
MODELS = ("model-a", "model-b")
PROMPTS = {"v1": "You are a helpful assistant.", "v2": "You are a helpful assistant. Be brief."}
BASE_LOGIT = -1.6
TTFT_LOGIT = 0.9
PROMPT_LOGIT = 0.9
THUMBS_RATE = 0.35
TTFT_MEDIAN_MS = 700.0
TTFT_SIGMA = 0.6
_NS = 1_000_000_000

QUESTIONS = (
    "How do I rotate the API key of project {n}?",
    "Why does build {n} fail on the lint step?",
    "Search the docs for retry policy number {n}",
    "What is the price of plan {n} per seat?",
    "Explain error code E{n} from the uploader",
)


@dataclass
class Turn:
    """What the generator decided for one turn, for the tests to compare with."""

    trace_id: str
    span_id: str
    session_id: str
    user_id: str
    route: str
    model: str
    prompt: str
    start: datetime
    input_text: str
    output_text: str
    ttft_ms: float
    input_tokens: int
    regenerated: bool = False
    thumbs: int | None = None
    edit: str | None = None


@dataclass
class World:
    """The turns and feedback records written."""

    turns: list[Turn] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(n * 4):0{n}x}"


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * _NS + t.microsecond * 1000


def _spans(turn: Turn, duration_ms: float, output_tokens: int) -> list[dict[str, Any]]:
    root_id = turn.span_id[:-1] + ("0" if turn.span_id[-1] != "0" else "1")
    start = _ns(turn.start)
    call_start = start + 5_000_000
    call_end = call_start + int(duration_ms * 1e6)
    messages = [{"role": "user", "parts": [{"type": "text", "content": turn.input_text}]}]
    output = [{"role": "assistant", "parts": [{"type": "text", "content": turn.output_text}]}]
    root = {
        "type": "span", "trace_id": turn.trace_id, "span_id": root_id, "parent_span_id": None,
        "name": turn.route, "kind": "SERVER", "service_name": "assistant",
        "start_time": start, "end_time": call_end + 2_000_000, "status_code": "UNSET",
        "attributes": {"user.id": turn.user_id, "session.id": turn.session_id},
    }  # fmt: skip
    call = {
        "type": "span", "trace_id": turn.trace_id, "span_id": turn.span_id,
        "parent_span_id": root_id, "name": f"chat {turn.model}", "kind": "CLIENT",
        "service_name": "assistant", "start_time": call_start, "end_time": call_end,
        "status_code": "UNSET",
        "attributes": {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "acme",
            "gen_ai.request.model": turn.model, "gen_ai.response.model": turn.model,
            "gen_ai.usage.input_tokens": turn.input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "gen_ai.response.time_to_first_chunk": turn.ttft_ms / 1000,
            "gen_ai.system_instructions": json.dumps(
                [{"type": "text", "content": PROMPTS[turn.prompt]}]
            ),
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.output.messages": json.dumps(output),
            "gen_ai.response.finish_reasons": ["stop"],
            "session.id": turn.session_id, "user.id": turn.user_id,
        },
    }  # fmt: skip
    return [root, call]


def generate(seed: int = 11, num_sessions: int = 2400) -> tuple[World, list[dict[str, Any]]]:
    """The world's turns and feedback, and every line (spans and feedback) to ingest."""
    rng = random.Random(seed)
    world = World()
    lines: list[dict[str, Any]] = []
    users = [f"user-{i:04d}" for i in range(num_sessions // 4)]
    for s in range(num_sessions):
        session_id = f"sess-{s:05d}"
        user = rng.choice(users)
        route = rng.choice(ROUTES)
        model = rng.choice(MODELS)
        t = START + timedelta(seconds=rng.uniform(0, DAYS * 86_400 - 3600))
        prompt = "v2" if (t - START).days >= PROMPT_CHANGE_DAY else "v1"
        question = rng.choice(QUESTIONS).format(n=rng.randint(1, 10_000))
        turns_left = rng.randint(1, 5)
        while turns_left > 0:
            ttft = TTFT_MEDIAN_MS * math.exp(rng.gauss(0, TTFT_SIGMA))
            output_tokens = rng.randint(30, 300)
            duration = ttft + output_tokens * 15.0
            turn = Turn(
                trace_id=_hex(rng, 32), span_id=_hex(rng, 16), session_id=session_id,
                user_id=user, route=route, model=model, prompt=prompt, start=t,
                input_text=question, output_text=f"Answer {_hex(rng, 8)} to: {question}",
                ttft_ms=ttft, input_tokens=rng.randint(200, 4000),
            )  # fmt: skip
            world.turns.append(turn)
            lines.extend(_spans(turn, duration, output_tokens))
            answered = turn.start + timedelta(milliseconds=duration)
            if rng.random() < THUMBS_RATE:
                z = (math.log(ttft) - math.log(TTFT_MEDIAN_MS)) / TTFT_SIGMA
                logit = BASE_LOGIT + TTFT_LOGIT * z + (PROMPT_LOGIT if prompt == "v2" else 0.0)
                turn.thumbs = -1 if rng.random() < 1 / (1 + math.exp(-logit)) else 1
                # a tenth of the votes arrive days later
                late = timedelta(days=rng.randint(1, 3)) if rng.random() < 0.1 else timedelta()
                world.feedback.append({
                    "type": "feedback", "trace_id": turn.trace_id, "span_id": turn.span_id,
                    "time": _ns(answered + timedelta(seconds=rng.uniform(2, 60)) + late),
                    "kind": "thumbs", "value": turn.thumbs, "user_id": user,
                })  # fmt: skip
            if rng.random() < 0.03:
                turn.edit = f"Edited answer: {question} — do it in two steps."
                world.feedback.append({
                    "type": "feedback", "trace_id": turn.trace_id, "span_id": turn.span_id,
                    "time": _ns(answered + timedelta(seconds=30)), "kind": "edit",
                    "text": turn.edit, "user_id": user,
                })  # fmt: skip
            regen_rate = REGEN_RATE if route == REGEN_ROUTE else REGEN_RATE_ELSEWHERE
            if rng.random() < regen_rate:
                turn.regenerated = True
                t = answered + timedelta(seconds=rng.uniform(4, 30))
                continue  # the same question again, not counted as a new turn
            turns_left -= 1
            t = answered + timedelta(seconds=rng.uniform(20, 240))
            question = rng.choice(QUESTIONS).format(n=rng.randint(1, 10_000))
    lines.extend(world.feedback)
    return world, lines


def ingest_world(data_dir: Path, seed: int = 11, num_sessions: int = 2400) -> World:
    """Generate the world and ingest it into ``data_dir`` through the file loader."""
    world, lines = generate(seed, num_sessions)
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"{data_dir.name}-world.jsonl.gz"
    source.write_bytes(gzip.compress("\n".join(json.dumps(x) for x in lines).encode()))
    with LakeWriter(data_dir) as writer:
        [report] = ingest_paths([source], writer)
    assert not report.errors, report.errors[:3]
    return world
