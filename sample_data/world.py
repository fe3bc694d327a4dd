"""The simulated product: scenario days, models and their latency, routing, answer quality,
the users and the shape of traffic over time.

Scenario days are stated for the reference 14-day window; a window of D days puts scenario
day k at the fraction k / 14 of the window, so with D = 14 every change lands at midnight UTC
of that day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

DEFAULT_END = datetime(2026, 11, 27, tzinfo=UTC)
REFERENCE_DAYS = 14
INJECTION_SPIKE_DAY = 6  # prompt-injection attempts spike for this one day
GPT4O_VERSION_DAY = 9  # gpt-4o answers from a new response model with twice the TTFT
NEW_TOPIC_DAY = 10  # "vector export" questions appear
PROMPT_V2_DAY = 11  # rag-chat system prompt v2 (and service.version 1.9.0) ships

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S


@dataclass(frozen=True)
class Model:
    """A model endpoint: what is requested, who serves it, what answers, and how fast."""

    request: str
    provider: str
    response: str
    ttft_median_s: float
    tpot_s: float
    scope: str


_OPENAI = "opentelemetry.instrumentation.openai_v2"
_ANTHROPIC = "opentelemetry.instrumentation.anthropic"
MODELS: dict[str, Model] = {
    "gpt-4o": Model("gpt-4o", "openai", "gpt-4o-2024-08-06", 0.45, 0.024, _OPENAI),
    "gpt-4o-mini": Model("gpt-4o-mini", "openai", "gpt-4o-mini-2024-07-18", 0.30, 0.012, _OPENAI),
    "claude-3-5-sonnet": Model(
        "claude-3-5-sonnet", "anthropic", "claude-3-5-sonnet-20241022", 0.75, 0.032, _ANTHROPIC
    ),
    "claude-3-5-haiku": Model(
        "claude-3-5-haiku", "anthropic", "claude-3-5-haiku-20241022", 0.50, 0.016, _ANTHROPIC
    ),
    "gemini-1.5-flash": Model(
        "gemini-1.5-flash",
        "gcp.vertex_ai",
        "gemini-1.5-flash-002",
        0.35,
        0.010,
        "opentelemetry.instrumentation.vertexai",
    ),
}
#: gpt-4o from GPT4O_VERSION_DAY on: same request name, new version, twice the TTFT.
GPT4O_NEW = Model("gpt-4o", "openai", "gpt-4o-2024-11-20", 0.90, 0.024, _OPENAI)
EMBEDDING_MODEL = "text-embedding-3-small"
REWRITE_MODEL = "gemini-1.5-flash"  # query rewriting, emitted with deprecated attribute names

#: Share of new rag-chat questions per intent.
INTENTS: dict[str, float] = {
    "billing": 0.22,
    "tech_support": 0.26,
    "product_qa": 0.22,
    "smalltalk": 0.14,
    "account": 0.16,
}
#: Answer model per intent with its share of sessions (the gpt-4o / gpt-4o-mini A/B tests).
ROUTES: dict[str, tuple[tuple[str, float], ...]] = {
    "billing": (("claude-3-5-sonnet", 1.0),),
    "tech_support": (("gpt-4o", 0.5), ("gpt-4o-mini", 0.5)),
    "product_qa": (("gpt-4o", 0.7), ("claude-3-5-sonnet", 0.3)),
    "smalltalk": (("gpt-4o", 0.5), ("gpt-4o-mini", 0.5)),
    "account": (("gpt-4o", 0.5), ("gpt-4o-mini", 0.5)),
}
SUPPORT_BOT_MODELS: tuple[tuple[str, float], ...] = (
    ("claude-3-5-haiku", 0.65),
    ("gpt-4o-mini", 0.35),
)

#: Probability that an answer is bad, by (intent, model); scenario 7 lives here.
BAD_RATE: dict[tuple[str, str], float] = {
    ("billing", "claude-3-5-sonnet"): 0.11,
    ("tech_support", "gpt-4o"): 0.09,
    ("tech_support", "gpt-4o-mini"): 0.36,
    ("product_qa", "gpt-4o"): 0.11,
    ("product_qa", "claude-3-5-sonnet"): 0.11,
    ("smalltalk", "gpt-4o"): 0.07,
    ("smalltalk", "gpt-4o-mini"): 0.07,
    ("account", "gpt-4o"): 0.09,
    ("account", "gpt-4o-mini"): 0.09,
}
NEW_TOPIC_BAD_RATE = 0.40  # the knowledge base has no vector-export docs yet
PROMPT_V2_EXTRA_BAD = 0.18  # v2's "be concise" answers disappoint more often
PROMPT_V2_OUTPUT_SCALE = 0.6  # ... and are shorter
SUPPORT_BOT_BAD_RATE = 0.15
#: Output tokens per intent: (median, log-sd) of a log-normal.
OUTPUT_TOKENS: dict[str, tuple[float, float]] = {
    "billing": (230, 0.45),
    "tech_support": (360, 0.5),
    "product_qa": (260, 0.45),
    "smalltalk": (45, 0.5),
    "account": (150, 0.45),
    "vector_export": (240, 0.45),
}
SYSTEM_PROMPT_TOKENS = {"v1": 640, "v2": 820, "support-bot": 210, "rewrite": 60}
MAX_TOKENS = 800


def scenario_time_ns(start_ns: int, window_ns: int, day: float) -> int:
    """The instant of scenario day ``day`` in a window (days scaled to the reference 14)."""
    return start_ns + int(window_ns * day / REFERENCE_DAYS)


@dataclass
class Timeline:
    """The window and the traffic shape: maps a share of all traffic to an instant."""

    end_ns: int
    days: int
    start_ns: int = field(init=False)
    _grid: np.ndarray = field(init=False, repr=False)
    _cdf: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        window = self.days * NS_PER_DAY
        self.start_ns = self.end_ns - window
        # Sessions start before the last hour so every turn ends inside the window.
        minutes = max(self.days * 1440 - 60, 60)
        t = self.start_ns + np.arange(minutes + 1, dtype=np.float64) * 60 * NS_PER_S
        hour = ((t / NS_PER_S) % 86_400) / 3600
        weekday = (
            (t / NS_PER_DAY).astype(np.int64) + 3
        ) % 7  # 0 = Monday (1970-01-01 was a Thursday)
        rate = 0.2 + np.exp(-(((hour - 14.5) / 4.0) ** 2))
        rate *= np.where(weekday >= 5, 0.55, 1.0)
        rate *= 1.0 + 0.25 * (t - self.start_ns) / window  # slow growth
        spike_lo = scenario_time_ns(self.start_ns, window, INJECTION_SPIKE_DAY)
        spike_hi = scenario_time_ns(self.start_ns, window, INJECTION_SPIKE_DAY + 1)
        rate *= np.where((t >= spike_lo) & (t < spike_hi), 1.3, 1.0)  # attack traffic on top
        cdf = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2)])
        self._grid = t
        self._cdf = cdf / cdf[-1]

    def time_at(self, share: float) -> int:
        """The instant (unix ns) by which ``share`` of all sessions have started."""
        return int(np.interp(share, self._cdf, self._grid))

    def at_day(self, day: float) -> int:
        """The instant of scenario day ``day``."""
        return scenario_time_ns(self.start_ns, self.days * NS_PER_DAY, day)


@dataclass
class User:
    """A product user: id, when they first show up, and whether they gave up on it."""

    user_id: str
    joined_ns: int
    churned: bool = False


class Users:
    """A few hundred users with heavy-tailed (Zipf) activity, joining over the window."""

    def __init__(self, rng: random.Random, num_traces: int, timeline: Timeline) -> None:
        count = max(40, min(5000, num_traces // 8))
        span = timeline.end_ns - timeline.start_ns
        self.users: list[User] = []
        for _ in range(count):
            late = rng.random() >= 0.6
            joined = timeline.start_ns + (int(rng.random() * 0.8 * span) if late else 0)
            self.users.append(User(f"user_{rng.getrandbits(40):010x}", joined))
        weights = [1.0 / (rank + 1) ** 1.05 for rank in range(count)]
        total = 0.0
        self._cum: list[float] = []
        for w in weights:
            total += w
            self._cum.append(total)
        self.attackers = [
            User(f"user_{rng.getrandbits(40):010x}", timeline.start_ns) for _ in range(3)
        ]

    def pick(self, rng: random.Random, now_ns: int) -> User:
        """A user active at ``now_ns``, drawn by activity; retries past churned or unjoined users."""
        user = self.users[0]
        for _ in range(12):
            user = rng.choices(self.users, cum_weights=self._cum)[0]
            if user.joined_ns <= now_ns and not user.churned:
                return user
        return user


def answer_model(intent: str, bucket: float, now_ns: int, timeline: Timeline) -> Model:
    """The model that answers ``intent`` for a session in A/B ``bucket`` (0–1) at ``now_ns``."""
    acc = 0.0
    name = ROUTES[intent][-1][0]
    for candidate, share in ROUTES[intent]:
        acc += share
        if bucket < acc:
            name = candidate
            break
    if name == "gpt-4o" and now_ns >= timeline.at_day(GPT4O_VERSION_DAY):
        return GPT4O_NEW
    return MODELS[name]


def bad_probability(intent: str, model: str, prompt_version: str, new_topic: bool) -> float:
    """How likely a rag-chat answer is bad (drives thumbs, regenerations, abandonment)."""
    p = NEW_TOPIC_BAD_RATE if new_topic else BAD_RATE.get((intent, model), 0.11)
    if prompt_version == "v2":
        p += PROMPT_V2_EXTRA_BAD
    return min(p, 0.95)
