"""The seeded simulation: sessions of users talking to rag-chat and support-bot, their
behaviour after good and bad answers, and the explicit feedback they leave.

One ``random.Random(seed)`` drives everything in a fixed order, so a seed gives the same
traces and feedback, byte for byte. State is bounded (the user table and a ring of recent
questions), so memory stays flat however many traces are asked for; sessions are laid out in
time order along the traffic curve of ``world.Timeline``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from sample_data import answers, world
from sample_data.rag_chat import rag_trace
from sample_data.spans import BatchBuilder
from sample_data.support_bot import support_trace
from sample_data.texts import Question, edit_answer, make_question, paraphrase
from sample_data.traces import Outcome, Turn

SUPPORT_BOT_SHARE = 0.15  # of sessions
ATTACK_SESSION_RATE = 0.004
ATTACK_SESSION_RATE_SPIKE = 0.20  # on INJECTION_SPIKE_DAY
EXACT_REPEAT_SHARE = 0.10  # of new questions: copied from an earlier question of anyone
PARAPHRASE_SHARE = 0.10  # of new questions: an earlier question said another way
NEW_TOPIC_SHARE = (0.10, 0.16)  # of new rag-chat questions on NEW_TOPIC_DAY, and after it
THUMBS_RATE = {"rag-chat": 0.08, "support-bot": 0.05}  # of answers
RATING_RATE = 0.03
EDIT_RATE = 0.008
COPY_RATE = (0.12, 0.03)  # after a good answer, after a bad one
SHARE_RATE = 0.01  # after a good answer
REPORT_RATE = 0.02  # after a bad answer
#: After a bad rag-chat answer: regenerate, rephrase next turn, abandon the session (cumulative).
AFTER_BAD = (0.25, 0.50, 0.85)
CHURN_AFTER_ABANDON = 0.2
TURNS = (1, 2, 3, 4, 5, 6)
TURN_WEIGHTS = (30, 25, 18, 12, 9, 6)
SUPPORT_INTENTS = {"billing": 0.3, "tech_support": 0.4, "account": 0.2, "product_qa": 0.1}
_NS = world.NS_PER_S


@dataclass(frozen=True)
class Batch:
    """One request of about ``batch_size`` traces and the feedback left on those traces."""

    request: ExportTraceServiceRequest
    feedback: list[dict[str, Any]]
    num_traces: int
    num_spans: int


def _unix_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


class _Simulation:
    def __init__(self, num_traces: int, days: int, seed: int, end: datetime | None) -> None:
        if num_traces < 0 or days < 1:
            raise ValueError("num_traces must be >= 0 and days >= 1")
        self.n = num_traces
        self.rng = random.Random(seed)
        self.tl = world.Timeline(_unix_ns(end or world.DEFAULT_END), days)
        self.users = world.Users(self.rng, num_traces, self.tl)
        self.pool: deque[Question] = deque(maxlen=1000)
        self.builder = BatchBuilder()
        self._intents = list(world.INTENTS)
        self._intent_cum = _cumulative(world.INTENTS.values())
        self._support_cum = _cumulative(SUPPORT_INTENTS.values())

    def run(self, batch_size: int) -> Iterator[Batch]:
        """Simulate sessions until ``num_traces`` traces exist, yielding full batches."""
        emitted = 0
        while emitted < self.n:
            share = min(max((emitted + self.rng.uniform(-1, 1)) / self.n, 0.0), 1.0)
            start = self.tl.time_at(share)
            if self.rng.random() < SUPPORT_BOT_SHARE:
                session = self._support_session(start)
            else:
                session = self._rag_session(start)
            for _ in session:
                emitted += 1
                if self.builder.num_traces >= batch_size:
                    yield self._flush()
                if emitted >= self.n:
                    break
        if self.builder.num_traces:
            yield self._flush()

    def _flush(self) -> Batch:
        b, self.builder = self.builder, BatchBuilder()
        return Batch(b.request, b.feedback, b.num_traces, b.num_spans)

    # -- questions ---------------------------------------------------------------------------

    def _fresh(self, now: int, intent: str | None = None) -> Question:
        rng = self.rng
        if intent is None:
            intent = rng.choices(self._intents, cum_weights=self._intent_cum)[0]
        new_share = 0.0
        if now >= self.tl.at_day(world.NEW_TOPIC_DAY + 1):
            new_share = NEW_TOPIC_SHARE[1]
        elif now >= self.tl.at_day(world.NEW_TOPIC_DAY):
            new_share = NEW_TOPIC_SHARE[0]
        if new_share and rng.random() < new_share:
            return make_question(rng, "vector_export", "product_qa")
        return make_question(rng, intent, intent)

    def _new_question(self, now: int) -> Question:
        """A new question: an exact repeat, a paraphrase of an earlier one, or a fresh one."""
        r = self.rng.random()
        if self.pool and r < EXACT_REPEAT_SHARE:
            return self.pool[self.rng.randrange(len(self.pool))]
        if self.pool and r < EXACT_REPEAT_SHARE + PARAPHRASE_SHARE:
            return paraphrase(self.rng, self.pool[self.rng.randrange(len(self.pool))])
        q = self._fresh(now)
        self.pool.append(q)
        return q

    def _next_question(self, q: Question, now: int) -> Question:
        r = self.rng.random()
        if r < 0.15 and q.topic != "follow_up":
            return make_question(self.rng, "follow_up", q.intent)
        if r < 0.55:
            return self._fresh(now, q.intent)
        return self._new_question(now)

    # -- sessions ----------------------------------------------------------------------------

    def _rag_session(self, start: int) -> Iterator[None]:
        rng, tl = self.rng, self.tl
        spike = (
            tl.at_day(world.INJECTION_SPIKE_DAY) <= start < tl.at_day(world.INJECTION_SPIKE_DAY + 1)
        )
        attack = rng.random() < (ATTACK_SESSION_RATE_SPIKE if spike else ATTACK_SESSION_RATE)
        if attack and spike and rng.random() < 0.85:
            user = rng.choice(self.users.attackers)
        else:
            user = self.users.pick(rng, start)
        if attack:
            planned = rng.randint(2, 6) if spike else 1
        else:
            planned = rng.choices(TURNS, weights=TURN_WEIGHTS)[0]
        session_id = f"sess_{rng.getrandbits(48):012x}"
        bucket = rng.random()
        q = make_question(rng, "injection", "smalltalk") if attack else self._new_question(start)
        now, turns, regens = start, 0, 0
        history: list[tuple[str, str, int]] = []
        previous: Question | None = None
        while True:
            out = rag_trace(
                self.builder,
                rng,
                tl,
                Turn(user.user_id, session_id, q, now, bucket, list(history), previous),
            )
            self.builder.num_traces += 1
            self._feedback(out, q, user.user_id, "rag-chat")
            yield None
            action = "next"
            if out.error and not out.answered:
                action = "regenerate" if rng.random() < 0.6 else "abandon"  # retry the failed send
            elif out.bad and not attack:
                r = rng.random()
                if r < AFTER_BAD[0] and regens < 2:
                    action = "regenerate"
                elif r < AFTER_BAD[1]:
                    action = "rephrase"
                elif r < AFTER_BAD[2]:
                    action = "abandon"
            if action == "abandon":
                if out.bad and rng.random() < CHURN_AFTER_ABANDON:
                    user.churned = True
                return
            if action == "regenerate":
                regens += 1
                now = out.end_ns + int(rng.uniform(4, 30) * _NS)
                continue
            regens = 0
            history.append((q.masked_text, out.answer, out.answer_tokens))
            turns += 1
            if turns >= planned:
                return
            previous = q
            if action == "rephrase":
                q = paraphrase(rng, q)
                now = out.end_ns + int(rng.uniform(15, 90) * _NS)
            else:
                if attack:
                    q = make_question(rng, "injection", "smalltalk")
                else:
                    q = self._next_question(q, now)
                now = out.end_ns + self._think_ns(out.answer)
            if now > tl.end_ns - 60 * _NS:
                return

    def _support_session(self, start: int) -> Iterator[None]:
        rng = self.rng
        user = self.users.pick(rng, start)
        session_id = f"sess_{rng.getrandbits(48):012x}"
        bucket = rng.random()
        planned = rng.choices((1, 2, 3), weights=(60, 28, 12))[0]
        intent = rng.choices(list(SUPPORT_INTENTS), cum_weights=self._support_cum)[0]
        q = make_question(rng, intent, intent)
        now = start
        for turn in range(planned):
            out = support_trace(self.builder, rng, Turn(user.user_id, session_id, q, now, bucket))
            self.builder.num_traces += 1
            self._feedback(out, q, user.user_id, "support-bot")
            yield None
            if (out.bad and rng.random() < 0.3) or turn == planned - 1:
                return
            q = make_question(rng, intent, intent)
            now = out.end_ns + self._think_ns(out.answer)
            if now > self.tl.end_ns - 60 * _NS:
                return

    def _think_ns(self, answer: str) -> int:
        think = min(max(self.rng.lognormvariate(3.8, 0.6), 8.0), 300.0)  # median about 45 s
        return int((think + len(answer) / 30) * _NS)

    # -- feedback ----------------------------------------------------------------------------

    def _feedback(self, out: Outcome, q: Question, user_id: str, service: str) -> None:
        if not out.answered or out.answer_span_id is None:
            return
        rng = self.rng
        trace_id, span_id = out.trace_id.hex(), out.answer_span_id.hex()
        records = self.builder.feedback

        def add(
            kind: str, value: float | None, text: str | None, delay_s: float, on_span: bool = True
        ) -> None:
            """Record one feedback event ``delay_s`` seconds after the trace ends."""
            records.append(
                {
                    "type": "feedback",
                    "feedback_id": f"fb_{rng.getrandbits(64):016x}",
                    "trace_id": trace_id,
                    "span_id": span_id if on_span else None,
                    "time": out.end_ns + int(delay_s * _NS),
                    "kind": kind,
                    "value": value,
                    "text": text,
                    "user_id": user_id,
                    "source": "explicit",
                }
            )

        bad = out.bad
        if rng.random() < THUMBS_RATE[service]:
            add("thumbs", -1.0 if bad else 1.0, None, rng.lognormvariate(1.8, 0.6))
            if rng.random() < (0.30 if bad else 0.05):
                comment = rng.choice(answers.COMMENTS_BAD if bad else answers.COMMENTS_GOOD)
                add("comment", None, comment, rng.lognormvariate(3.2, 0.5))
        if rng.random() < RATING_RATE:
            stars = (
                rng.choices((1, 2, 3), (5, 3, 2))[0]
                if bad
                else rng.choices((3, 4, 5), (1, 3, 6))[0]
            )
            add("rating", float(stars), None, rng.lognormvariate(2.5, 0.6))
        if rng.random() < EDIT_RATE:
            add("edit", None, edit_answer(rng, q, out.answer), rng.lognormvariate(3.5, 0.5))
        if rng.random() < COPY_RATE[1 if bad else 0]:
            add("copy", 1.0, None, rng.lognormvariate(2.0, 0.7), on_span=False)
        if not bad and rng.random() < SHARE_RATE:
            add("share", 1.0, None, rng.lognormvariate(3.0, 0.7), on_span=False)
        if bad and rng.random() < REPORT_RATE:
            add("report", 1.0, None, rng.lognormvariate(3.0, 0.7), on_span=False)


def _cumulative(weights: Any) -> list[float]:
    out: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def generate_batches(
    num_traces: int, days: int, seed: int, end: datetime | None = None, batch_size: int = 200
) -> Iterator[Batch]:
    """Traces and their feedback from one seeded pass, in batches of ``batch_size`` traces."""
    return _Simulation(num_traces, days, seed, end).run(batch_size)


def generate(
    num_traces: int, days: int, seed: int, end: datetime | None = None, batch_size: int = 200
) -> Iterator[ExportTraceServiceRequest]:
    """Seeded OTLP requests of ``batch_size`` traces each, for the ``days`` before ``end``."""
    for batch in generate_batches(num_traces, days, seed, end, batch_size):
        yield batch.request


def generate_feedback(
    num_traces: int, days: int, seed: int, end: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """The feedback records of ``generate`` with the same arguments (re-runs the simulation)."""
    for batch in generate_batches(num_traces, days, seed, end):
        yield from batch.feedback
