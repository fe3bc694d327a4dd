"""Targets: what a replay calls for each case.

* :class:`OpenAITarget` calls any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM,
  Ollama, LiteLLM, …) with the ``openai`` client: base URL, model, the key read from an
  environment variable, an optional system-prompt override (replay with a new prompt) and an
  optional user-message template. Each attempt waits for the shared :class:`RateLimiter`; 429,
  5xx, timeouts and refused connections are retried with exponential backoff (honouring a server's
  ``Retry-After``, capped at ``max_backoff_s``); a failure after the last retry, or any other error, becomes the
  case's ``Completion.error`` and the run goes on.
* :class:`RecordedTarget` answers with outputs already stored: the dataset's references (what
  production answered) or an earlier run's outputs, so they can be scored again.

The client's own retries are off (``max_retries=0``): they would hide how many attempts a case
took and what each failure was.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai

from evals.cases import Case, ChatTarget, Completion, Message, Target

__all__ = [
    "ChatTarget",
    "OpenAITarget",
    "RateLimiter",
    "RecordedCall",
    "RecordedTarget",
    "RecordingTarget",
    "Target",
    "TargetConfig",
    "apply_prompt",
    "take_recorded_calls",
]


class RateLimiter:
    """At most ``per_second`` acquisitions per second across threads (None: no limit).

    Calls are spaced evenly (a token bucket of size one), so a burst of workers does not
    hit a provider's per-second limit at once.
    """

    def __init__(self, per_second: float | None) -> None:
        if per_second is not None and per_second <= 0:
            raise ValueError(f"rate limit must be positive, got {per_second}")
        self.interval_s = 0.0 if per_second is None else 1.0 / per_second
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Wait for the next free slot."""
        if not self.interval_s:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval_s
        if slot > now:
            time.sleep(slot - now)


def apply_prompt(
    messages: Sequence[Message], system_prompt: str | None, user_template: str | None
) -> list[dict[str, str]]:
    """The messages with the system prompt replaced (or put first when there was none) and
    the last user message passed through ``user_template`` (``{input}`` is its text).

    >>> apply_prompt([{"role": "user", "content": "hi"}], "Be brief.", "Q: {input}")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Q: hi'}]
    """
    out = [dict(m) for m in messages]
    if system_prompt is not None:
        out = [m for m in out if m["role"] not in ("system", "developer")]
        out.insert(0, {"role": "system", "content": system_prompt})
    if user_template is not None:
        for message in reversed(out):
            if message["role"] == "user":
                message["content"] = user_template.replace("{input}", message["content"])
                break
    return out


@dataclass(frozen=True)
class TargetConfig:
    """How to reach an OpenAI-compatible endpoint and how to call it."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    system_prompt: str | None = None
    user_template: str | None = None
    temperature: float | None = 0.0
    max_tokens: int | None = None
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 20.0

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"retries cannot be negative, got {self.max_retries}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff times cannot be negative")
        if self.user_template is not None and "{input}" not in self.user_template:
            raise ValueError("the user template must contain {input}")


_RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)


def _retry_after_s(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    header = None if response is None else response.headers.get("retry-after")
    try:
        return None if header is None else max(0.0, float(header))
    except ValueError:
        return None


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIStatusError):
        message = getattr(exc, "message", "") or ""
        return f"HTTP {exc.status_code}: {message}"[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


class OpenAITarget:
    """An OpenAI-compatible chat-completions endpoint."""

    def __init__(
        self,
        config: TargetConfig,
        limiter: RateLimiter | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.limiter = limiter or RateLimiter(None)
        self._sleep = sleep
        # Local servers (vLLM, Ollama) take any key; the client insists on one.
        key = os.environ.get(config.api_key_env) or "not-set"
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=key,
            timeout=config.timeout_s,
            max_retries=0,
        )

    def describe(self) -> dict[str, Any]:
        """Kind, endpoint, model and the overrides in force."""
        c = self.config
        return {
            "kind": "openai",
            "base_url": c.base_url,
            "model": c.model,
            "api_key_env": c.api_key_env,
            "system_prompt": c.system_prompt,
            "user_template": c.user_template,
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
        }

    def complete(self, case: Case) -> Completion:
        """Answer a case: its messages with the prompt overrides applied."""
        return self.chat(
            apply_prompt(case.messages, self.config.system_prompt, self.config.user_template)
        )

    def chat(self, messages: Sequence[Message]) -> Completion:
        """Call the endpoint, retrying 429/5xx/timeouts with backoff; never raises."""
        c = self.config
        kwargs: dict[str, Any] = {"model": c.model, "messages": [dict(m) for m in messages]}
        if c.temperature is not None:
            kwargs["temperature"] = c.temperature
        if c.max_tokens is not None:
            kwargs["max_tokens"] = c.max_tokens
        attempt = 0
        while True:
            attempt += 1
            self.limiter.acquire()
            started = time.perf_counter()
            try:
                response = self._client.chat.completions.create(**kwargs)
            except _RETRYABLE as exc:
                if attempt > c.max_retries:
                    return Completion(None, error=_describe_error(exc), num_attempts=attempt)
                # A server's Retry-After wins (capped: a run should not stall on one case);
                # otherwise exponential backoff with jitter, so workers do not retry in step.
                asked = _retry_after_s(exc)
                backoff = min(c.max_backoff_s, c.backoff_s * 2 ** (attempt - 1))
                wait = asked if asked is not None else backoff * (0.5 + random.random() / 2)
                self._sleep(min(wait, c.max_backoff_s))
                continue
            except openai.OpenAIError as exc:
                return Completion(None, error=_describe_error(exc), num_attempts=attempt)
            latency_ms = (time.perf_counter() - started) * 1000.0
            return _completion(response, latency_ms, attempt, c.model)


def _completion(response: Any, latency_ms: float, attempts: int, model: str) -> Completion:
    choices = getattr(response, "choices", None) or []
    if not choices:
        return Completion(None, error="the response has no choices", num_attempts=attempts)
    content = choices[0].message.content
    usage = getattr(response, "usage", None)
    return Completion(
        output=content if content is not None else "",
        latency_ms=latency_ms,
        model=getattr(response, "model", None) or model,
        input_tokens=getattr(usage, "prompt_tokens", None),
        output_tokens=getattr(usage, "completion_tokens", None),
        num_attempts=attempts,
    )


class RecordedTarget:
    """Answers with stored outputs (keyed by case id): re-scores them without calling anything.

    ``outputs`` maps a case id to its stored completion; a case without one gets an error.
    ``source`` says where they came from (``reference`` or a run id).
    """

    def __init__(self, outputs: Mapping[str, Completion], source: str) -> None:
        self.outputs = dict(outputs)
        self.source = source

    def describe(self) -> dict[str, Any]:
        """Kind and where the outputs came from."""
        return {"kind": "recorded", "source": self.source}

    def complete(self, case: Case) -> Completion:
        """The stored output of this case."""
        stored = self.outputs.get(case.case_id)
        if stored is None:
            return Completion(None, error=f"no recorded output for case {case.case_id}")
        return stored


@dataclass(frozen=True)
class RecordedCall:
    """One call a :class:`RecordingTarget` made: what it asked, when, and the answer."""

    role: str
    messages: tuple[Message, ...]
    started: datetime
    completion: Completion
    target: dict[str, Any]


_recorded = threading.local()


def take_recorded_calls() -> list[RecordedCall]:
    """The calls recording targets made on this thread since the last take (and forget them)."""
    calls: list[RecordedCall] = getattr(_recorded, "calls", [])
    _recorded.calls = []
    return calls


class RecordingTarget:
    """A chat target whose every call is kept for the thread that made it, so the replay can
    trace calls made inside an evaluator (an LLM judge) with the case they scored."""

    def __init__(self, target: ChatTarget, role: str) -> None:
        self.target, self.role = target, role

    def describe(self) -> dict[str, Any]:
        """The wrapped target's description."""
        return self.target.describe()

    def complete(self, case: Case) -> Completion:
        """Answer a case (not recorded: the replay traces the case's own call)."""
        return self.target.complete(case)

    def chat(self, messages: Sequence[Message]) -> Completion:
        """Call the wrapped target and keep the call for :func:`take_recorded_calls`."""
        started = datetime.now(UTC)
        completion = self.target.chat(messages)
        call = RecordedCall(self.role, tuple(messages), started, completion, self.describe())
        if not hasattr(_recorded, "calls"):
            _recorded.calls = []
        _recorded.calls.append(call)
        return completion
