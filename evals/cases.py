"""What an eval works on: a case (chat input and reference), a completion (what a target
answered, with its cost in time and tokens) and a score (an evaluator's verdict).

These are the interfaces between the parts: datasets make cases, targets turn a case into a
completion, evaluators turn (case, completion) into scores, the replay stores them and the
comparison reads them back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "Case",
    "ChatTarget",
    "Completion",
    "Message",
    "Score",
    "Target",
    "case_id_of",
    "messages_from_json",
    "messages_to_json",
    "no_output_score",
]

#: A chat message as the OpenAI chat-completions API takes it: ``{"role": …, "content": …}``.
Message = Mapping[str, str]
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def messages_to_json(messages: Sequence[Message]) -> str:
    """The canonical JSON text of a message list (role and content only, in order)."""
    return json.dumps(
        [{"role": m["role"], "content": m["content"]} for m in messages],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def messages_from_json(text: str, where: str = "messages") -> tuple[Message, ...]:
    """Parse and check a message list (ValueError naming ``where`` and the bad message)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg} at character {exc.pos})") from None
    return check_messages(raw, where)


def check_messages(raw: Any, where: str = "messages") -> tuple[Message, ...]:
    """A message list from decoded JSON: a non-empty list of objects with a known ``role`` and a
    text ``content`` (ValueError otherwise, naming ``where`` and the index)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}: expected a non-empty list of messages")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"{where}[{i}]: expected an object with role and content")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise ValueError(f"{where}[{i}].role: expected one of {sorted(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"{where}[{i}].content: expected text, got {type(content).__name__}")
        messages.append({"role": role, "content": content})
    return tuple(messages)


def case_id_of(messages: Sequence[Message]) -> str:
    """The id of a case: a hash of its messages (system prompt included), so a dataset holds
    each distinct input once.

    >>> case_id_of([{"role": "user", "content": "hi"}])
    'c-b03d228fdf33e7c8'
    """
    digest = hashlib.sha256(messages_to_json(messages).encode("utf-8")).hexdigest()
    return "c-" + digest[:16]


@dataclass(frozen=True)
class Case:
    """One eval case: the chat input, the expected output (``reference``; for a case taken from
    production, what production answered) and what is known about where it came from."""

    case_id: str
    messages: tuple[Message, ...]
    reference: str | None = None
    split: str = "test"
    metadata: Mapping[str, str] = field(default_factory=dict)
    source_trace_id: str | None = None
    source_span_id: str | None = None
    source_time: datetime | None = None

    @property
    def user_input(self) -> str:
        """The last user message (what a person reads as the question)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return ""

    @property
    def system_prompt(self) -> str | None:
        """The first system (or developer) message, if any."""
        for message in self.messages:
            if message["role"] in ("system", "developer"):
                return message["content"]
        return None


@dataclass(frozen=True)
class Completion:
    """What a target answered for one case, or why it could not.

    ``error`` is set when the call failed after its retries (``output`` is then None);
    ``latency_ms`` is the wall time of the successful attempt; ``num_attempts`` counts every
    call made (retries included).
    """

    output: str | None
    error: str | None = None
    latency_ms: float | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    num_attempts: int = 1

    @property
    def ok(self) -> bool:
        """The target answered."""
        return self.error is None and self.output is not None


@dataclass(frozen=True)
class Score:
    """An evaluator's verdict on one completion: ``value`` in [0, 1] (1 is best), or None when
    it could not score (the reason in ``detail``)."""

    value: float | None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.value is not None and not 0.0 <= self.value <= 1.0:
            raise ValueError(f"a score is in [0, 1], got {self.value}")


def no_output_score(completion: Completion) -> Score:
    """What every built-in evaluator gives a call that failed: no score, and why."""
    return Score(None, f"no output: {completion.error or 'the target returned nothing'}")


class Target(Protocol):
    """Turns a case into a completion; never raises for a failed call (it is the result)."""

    def describe(self) -> dict[str, Any]:
        """What this target is, for the run's record (no secrets)."""
        ...

    def complete(self, case: Case) -> Completion:
        """Answer one case."""
        ...


class ChatTarget(Target, Protocol):
    """A target that can also answer an arbitrary conversation (what an LLM judge needs)."""

    def chat(self, messages: Sequence[Message]) -> Completion:
        """Answer a list of chat messages."""
        ...
