"""Lakes with planted model calls for the cache and routing opportunity tests, landed through
the real ingest path (flat JSONL spans and feedback records).

Each planted :class:`Call` is one trace: a root span (named for its route, with ``user.id``)
and a ``chat`` span carrying the model, system prompt, input and output messages, tokens and
times. Costs are computed here by hand from ``analytics/prices.toml`` (:data:`PRICES`), not by
the code under test.

* :func:`cache_world`: the same sixteen unrelated questions, some asked again word for word,
  every one asked again in other words, in two services (:data:`SAME`: the paraphrase gets the
  same answer; :data:`DIFFER`: it gets another question's answer), plus excluded inputs; and in
  :data:`RULES`, one small scenario per cache rule, each in its own :func:`slot` window.
* :func:`routing_world`: three intents, each served by gpt-4o and gpt-4o-mini with planted
  thumbs-down rates.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from analytics.embeddings import embed_texts
from tests.analytics.guardrails_lake import ingest_lines

NS = 1_000_000_000
#: Dollars per million tokens (input, output), read off analytics/prices.toml for 2026.
PRICES = {"gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60)}
SYSTEM = "You are the Acme help desk assistant. Answer briefly."
OTHER_SYSTEM = "You are a terse assistant. Answer in one line."

#: The cache world's first day (the shares services) and the rules' day after it.
DAY = datetime(2026, 3, 2, tzinfo=UTC)
RULES_DAY = DAY + timedelta(days=1)
SAME, DIFFER, RULES = "same-answers", "other-answers", "rules"

#: (question, the same question in other words, its answer). No two questions are alike.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("How do I reset a forgotten password in the mobile app?",
     "How can a forgotten password be changed in the phone app?",
     "Open Settings, tap Sign-in and choose Reset password; a link arrives by e-mail."),
    ("What is the boiling point of water at high altitude?",
     "At what temperature does water boil in the mountains?",
     "Lower than 100 °C: about 90 °C at 3,000 metres, because the air pressure is lower."),
    ("Recommend a good recipe for vegetarian lasagna.",
     "Can you suggest a meatless lasagna recipe?",
     "Layer pasta sheets with ricotta, spinach, roasted courgette and tomato sauce; bake 45 min."),
    ("Explain how photosynthesis works in plants.",
     "Describe the process of photosynthesis in plants.",
     "Chlorophyll captures light to turn carbon dioxide and water into glucose and oxygen."),
    ("Who painted the Mona Lisa?",
     "Who was the artist of the Mona Lisa?",
     "Leonardo da Vinci painted it in the early sixteenth century."),
    ("How many players are on a football team?",
     "How many people play on one soccer team?",
     "Eleven on the pitch for each side, one of them the goalkeeper."),
    ("Translate 'good morning' into Japanese.",
     "How do you say good morning in Japanese?",
     "Ohayō gozaimasu (おはようございます), or just ohayō among friends."),
    ("Why does a Kubernetes pod keep crashing with CrashLoopBackOff?",
     "A kubernetes pod is in CrashLoopBackOff, why?",
     "Its container exits repeatedly; read kubectl logs --previous and check the probes."),
    ("What are the symptoms of vitamin D deficiency?",
     "What are signs of low vitamin D?",
     "Fatigue, bone pain, muscle weakness and frequent infections are common signs."),
    ("Write a haiku about autumn leaves.",
     "Compose a short haiku on falling leaves in autumn.",
     "Red leaves drift and fall / the maple lets go slowly / wind carries them home"),
    ("How do I convert a Python list to a set?",
     "Python: turn a list into a set",
     "Call set(items); duplicates are dropped and the order is lost."),
    ("What causes the northern lights?",
     "Why do auroras happen?",
     "Charged particles from the sun hit gases in the upper atmosphere, which then glow."),
    ("Which is the tallest mountain in Africa?",
     "What's Africa's highest mountain?",
     "Kilimanjaro in Tanzania, 5,895 metres above sea level."),
    ("How long should I boil an egg for a soft yolk?",
     "Soft boiled egg: how many minutes?",
     "About six minutes from boiling water, then cool it under cold water."),
    ("What is the capital city of Australia?",
     "Which city is Australia's capital?",
     "Canberra, chosen as a compromise between Sydney and Melbourne."),
    ("Summarize the plot of Romeo and Juliet.",
     "Give me a summary of Romeo and Juliet's story.",
     "Two young lovers from feuding families marry in secret and die through a misunderstanding."),
)  # fmt: skip
#: family -> how many times its question is asked again word for word
REPEATS = {0: 2, 1: 1, 2: 1, 3: 1, 5: 1, 7: 1}
#: In SAME: the family whose question and paraphrase got opposite votes (up, then down), the
#: one where both got a thumbs up, and the one where only the question got a (down) vote.
OPPOSITE_VOTES, AGREEING_VOTES, ONE_VOTE = 14, 12, 8
#: In DIFFER, the paraphrase of family i gets the answer of family (i + ANSWER_SHIFT) % 16.
ANSWER_SHIFT = 7
TIME_SENSITIVE = "What's the status of the payments service right now?"
USER_SPECIFIC = "Why is my invoice for March higher than usual?"
#: One scenario per cache rule, in the RULES service, each alone in its slot (see `slot`).
SCENARIOS = (
    "ttl", "overlap", "concurrent", "instant", "model", "params", "failed", "system", "users",
    "users_on_root", "mine", "route",
)  # fmt: skip
SLOT = timedelta(hours=3)


@dataclass(frozen=True)
class Call:
    """One planted request: a root span and its chat call."""

    trace: int
    service: str
    input_text: str
    output_text: str
    start_ns: int
    duration_ns: int
    input_tokens: int
    output_tokens: int
    model: str = "gpt-4o"
    system: str = SYSTEM
    route: str = "POST /chat"
    user: str | None = "user-1"
    user_on_call: bool = True
    temperature: float | None = None
    failed: bool = False
    family: int | None = None
    role: str = "question"  # question, repeat, paraphrase, excluded or a scenario's step

    @property
    def trace_id(self) -> str:
        return f"{self.trace:032x}"

    @property
    def span_id(self) -> str:
        return f"{2 * self.trace + 1:016x}"

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    @property
    def duration_ms(self) -> float:
        return self.duration_ns / 1e6

    @property
    def cost_usd(self) -> float:
        """Tokens × the list price, by hand."""
        price_in, price_out = PRICES[self.model]
        return (self.input_tokens * price_in + self.output_tokens * price_out) / 1e6

    def spans(self) -> list[dict[str, Any]]:
        """The root span and the chat span, as flat JSONL records."""
        root_id = f"{2 * self.trace:016x}"
        common = {"type": "span", "trace_id": self.trace_id, "service_name": self.service}
        user = {} if self.user is None else {"user.id": self.user}
        root = common | {
            "span_id": root_id, "parent_span_id": None, "name": self.route, "kind": "SERVER",
            "start_time": self.start_ns - NS // 100, "end_time": self.end_ns + NS // 100,
            "status_code": "ERROR" if self.failed else "UNSET", "attributes": user,
        }  # fmt: skip
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": self.model,
            "gen_ai.response.model": self.model,
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": self.system}]),
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": self.input_text}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": self.output_text}]}]
            ),
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "gen_ai.response.finish_reasons": ["stop"],
        }
        if self.temperature is not None:
            attributes["gen_ai.request.temperature"] = self.temperature
        if self.user_on_call:
            attributes |= user
        if self.failed:
            attributes["error.type"] = "RateLimitError"
        call = common | {
            "span_id": self.span_id, "parent_span_id": root_id, "name": f"chat {self.model}",
            "kind": "CLIENT", "start_time": self.start_ns, "end_time": self.end_ns,
            "status_code": "ERROR" if self.failed else "UNSET", "attributes": attributes,
        }  # fmt: skip
        return [root, call]

    def vote(self, value: int) -> dict[str, Any]:
        """A thumbs record on this call's answer, a minute after it."""
        return {
            "type": "feedback", "trace_id": self.trace_id, "span_id": self.span_id,
            "time": self.end_ns + 60 * NS, "kind": "thumbs", "value": value,
            "user_id": self.user,
        }  # fmt: skip


@dataclass
class World:
    """The planted calls and votes, in the order written."""

    calls: list[Call] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)
    first_trace: int = 1  # worlds landed in one lake need trace numbers apart

    def add(self, **fields: Any) -> Call:
        """Plant one call; tokens and the trace number follow the count of calls so far."""
        k = len(self.calls)
        fields = {"input_tokens": 300 + 17 * k, "output_tokens": 40 + 11 * k} | fields
        fields.setdefault("duration_ns", 2 * NS + 37_000_000 * k)
        call = Call(trace=self.first_trace + k, **fields)
        self.calls.append(call)
        return call

    def where(self, **match: Any) -> list[Call]:
        """The calls whose fields equal ``match``."""
        return [c for c in self.calls if all(getattr(c, k) == v for k, v in match.items())]

    def lines(self) -> list[dict[str, Any]]:
        return [span for call in self.calls for span in call.spans()] + self.votes


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * NS


def slot(scenario: str) -> tuple[datetime, datetime]:
    """The window [start, end) a rules scenario lies in alone."""
    start = RULES_DAY + SLOT * SCENARIOS.index(scenario)
    return start, start + SLOT


def _shares(world: World, service: str) -> None:
    """Sixteen questions five minutes apart (all within an hour of their neighbours), each
    repeated (REPEATS) one minute on and paraphrased 150 s on; two excluded inputs, each twice."""
    t0 = _ns(DAY + timedelta(hours=1))
    for i, (question, paraphrase, answer) in enumerate(FAMILIES):
        base = t0 + i * 300 * NS
        world.add(service=service, input_text=question, output_text=answer, start_ns=base,
                  family=i)  # fmt: skip
        for r in range(REPEATS.get(i, 0)):
            world.add(service=service, input_text=question, output_text=answer,
                      start_ns=base + (60 + 30 * r) * NS, family=i, role="repeat")  # fmt: skip
        served = answer if service == SAME else FAMILIES[(i + ANSWER_SHIFT) % 16][2]
        world.add(service=service, input_text=paraphrase, output_text=served,
                  start_ns=base + 150 * NS, family=i, role="paraphrase")  # fmt: skip
    later = t0 + 16 * 300 * NS
    for j, text in enumerate((TIME_SENSITIVE, USER_SPECIFIC)):
        for r in range(2):
            world.add(service=service, input_text=text, output_text=f"Answer {j}.{r}.",
                      start_ns=later + (600 * j + 60 * r) * NS, role="excluded")  # fmt: skip


def _scenario(world: World, name: str, steps: list[dict[str, Any]]) -> None:
    """Plant a rules scenario: each step is a call's fields, ``after`` (s after the previous
    call ended, may be negative) or ``at`` (ns from the slot start)."""
    start = _ns(slot(name)[0]) + 60 * NS
    previous: Call | None = None
    for i, step in enumerate(steps):
        step = dict(step)
        if "at" in step:
            begin = start + step.pop("at")
        elif previous is not None:
            begin = previous.end_ns + int(step.pop("after", 30) * NS)
        else:
            begin = start
        fields = {"input_text": f"Rules scenario {name}: which setting controls the retry limit?",
                  "output_text": f"The retry limit of scenario {name} is max_retries."}  # fmt: skip
        previous = world.add(service=RULES, start_ns=begin, role=f"{name}-{i}", **fields | step)


def _rules(world: World) -> None:
    hour = 3600
    two_s = {"duration_ns": 2 * NS}
    # Live until an hour after the last call that stored or read the entry: exactly an hour is
    # still a hit, a second more is not.
    _scenario(world, "ttl", [two_s, two_s | {"after": hour}, two_s | {"after": hour + 1}])
    # A repeat that starts before the first call ended misses; the next one hits.
    _scenario(world, "overlap", [{"duration_ns": 10 * NS}, {"after": -5, "duration_ns": 10 * NS},
                                 {"after": 15}])  # fmt: skip
    # The third call starts while the second still runs, but the first had ended: a hit.
    _scenario(world, "concurrent", [{"duration_ns": 10 * NS}, {"duration_ns": 30 * NS},
                                    {"after": -25}])  # fmt: skip
    # Calls that took no time (start = end): the first is no hit from itself.
    _scenario(world, "instant", [{"duration_ns": 0}, {"duration_ns": 0}])
    _scenario(world, "model", [{}, {"model": "gpt-4o-mini"}])
    _scenario(world, "params", [{"temperature": 0.2}, {"temperature": 0.7}, {"temperature": 0.2}])
    # A failed call stores nothing: the next identical call misses, the one after hits; a
    # failed call can still be answered from the cache.
    _scenario(world, "failed", [{"failed": True}, {}, {}, {"failed": True}])
    _scenario(world, "system", [{}, {"system": OTHER_SYSTEM}])
    users = [{"user": "user-1"}, {"user": "user-2"}, {"user": "user-1"}]
    _scenario(world, "users", users)
    _scenario(world, "users_on_root", [u | {"user_on_call": False} for u in users])
    mine = {"input_text": "Can you show my invoice for last March?", "output_text": "It is $12."}
    _scenario(world, "mine", [mine | u for u in users])
    _scenario(world, "route", [{"route": "POST /admin/reindex"}] * 2)


def cache_world() -> World:
    """The cache world: SAME and DIFFER on DAY, RULES on RULES_DAY, and the votes."""
    world = World()
    _shares(world, SAME)
    _shares(world, DIFFER)
    _rules(world)

    def family(i: int, role: str) -> Call:
        [call] = world.where(service=SAME, family=i, role=role)
        return call

    world.votes += [
        family(OPPOSITE_VOTES, "question").vote(1),
        family(OPPOSITE_VOTES, "paraphrase").vote(-1),
        family(AGREEING_VOTES, "question").vote(1),
        family(AGREEING_VOTES, "paraphrase").vote(1),
        family(ONE_VOTE, "question").vote(-1),
    ]
    return world


# --- routing --------------------------------------------------------------------------------

ROUTING_START = datetime(2026, 4, 6, tzinfo=UTC)
ROUTING_DAYS = 3
EXPENSIVE, CHEAP = "gpt-4o", "gpt-4o-mini"
#: intent -> templates of its questions ({n} a number, {w} a word)
INTENTS: dict[str, tuple[str, ...]] = {
    "password": (
        "How do I reset the password for login {n}?",
        "I forgot the password of user {n}, how can I set a new one?",
        "The password reset link for account {n} expired, what now?",
        "Can't sign in: password for login {n} is not accepted, how to reset it?",
    ),
    "invoice": (
        "Why was VAT added to invoice INV-{n}?",
        "Invoice INV-{n} shows the wrong VAT number, how do I correct it?",
        "Can I get a VAT-exempt copy of invoice INV-{n} for my company?",
        "What VAT rate applies to invoice INV-{n} for a customer in Germany?",
    ),
    "kubernetes": (
        "Kubernetes pod api-{n} is stuck in CrashLoopBackOff, how do I debug it?",
        "kubectl shows ImagePullBackOff for deployment worker-{n}, why?",
        "Pod web-{n} was OOMKilled in Kubernetes, how do I raise its memory limit?",
        "The Kubernetes service for pod db-{n} has no endpoints, what is wrong?",
    ),
}
CALLS_PER_MODEL = 60
#: intent -> model -> (votes, thumbs down). password: the cheap model does as well; invoice:
#: much worse; kubernetes: too few votes on the cheap model to tell.
VOTES = {
    "password": {EXPENSIVE: (60, 6), CHEAP: (60, 6)},
    "invoice": {EXPENSIVE: (60, 6), CHEAP: (60, 24)},
    "kubernetes": {EXPENSIVE: (60, 6), CHEAP: (10, 1)},
}


def routing_world(seed: int = 5, first_trace: int = 1) -> World:
    """CALLS_PER_MODEL calls per intent and model over ROUTING_DAYS days, with VOTES."""
    rng = random.Random(seed)
    world = World(first_trace=first_trace)
    span = ROUTING_DAYS * 86_400 - 600
    for intent, templates in INTENTS.items():
        for model in (EXPENSIVE, CHEAP):
            num_votes, num_down = VOTES[intent][model]
            for k in range(CALLS_PER_MODEL):
                text = templates[k % len(templates)].format(n=rng.randint(1000, 99_999))
                call = world.add(
                    service="support", input_text=text, model=model, role=intent,
                    output_text=f"Here is how to fix it ({intent}, {model}).",
                    start_ns=_ns(ROUTING_START) + rng.randint(60, span) * NS,
                    duration_ns=rng.randint(500, 4000) * 1_000_000,
                    input_tokens=rng.randint(200, 2000), output_tokens=rng.randint(20, 400),
                    user=f"user-{rng.randint(1, 300)}",
                )  # fmt: skip
                if k < num_votes:
                    world.votes.append(call.vote(-1 if k < num_down else 1))
    return world


def ingest_world(data_dir: Path, *worlds: World) -> Path:
    """Land the worlds' spans and votes in ``data_dir``."""
    return ingest_lines(data_dir, [line for world in worlds for line in world.lines()])


def cosines(data_dir: Path, first: list[str], second: list[str]) -> np.ndarray:
    """Cosine similarity of every text of ``first`` with every one of ``second``, with the
    model the caches use (through the lake's embedding cache)."""
    vectors = embed_texts(first + second, data_dir).vectors.astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors[: len(first)] @ vectors[len(first) :].T


def paraphrase_similarity(data_dir: Path) -> np.ndarray:
    """Each family's paraphrase-to-question similarity."""
    questions, paraphrases = [q for q, _, _ in FAMILIES], [p for _, p, _ in FAMILIES]
    return np.diag(cosines(data_dir, paraphrases, questions))
