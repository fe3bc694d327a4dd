"""Turning templates into text: questions (fresh, repeated, paraphrased) and answers."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from sample_data import answers
from sample_data.questions import (
    CLOSERS,
    FOLLOW_UPS,
    INJECTIONS,
    NEW_TOPIC,
    OPENERS,
    QUESTIONS,
    SLOTS,
    Group,
)

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
BANKS: dict[str, tuple[Group, ...]] = {
    **QUESTIONS,
    "vector_export": NEW_TOPIC,
    "injection": INJECTIONS,
    "follow_up": FOLLOW_UPS,
}
_GROUP_SLOTS = {
    topic: [sorted({n for v in group for n in _PLACEHOLDER.findall(v)}) for group in bank]
    for topic, bank in BANKS.items()
}
_SENTENCE_SLOTS = {
    topic: [_PLACEHOLDER.findall(s) for s in sentences]
    for topic, sentences in answers.SENTENCES.items()
}
_PII_SLOTS = frozenset({"email", "phone"})
_PII_MASK = {"email": "{EMAIL}", "phone": "{PHONE}"}


@dataclass(frozen=True)
class Question:
    """One asking of a question; ``intent`` is where the router sends it, ``topic`` its bank."""

    intent: str
    topic: str
    group: int
    variant: int
    slots: tuple[tuple[str, str], ...]
    opener: int
    closer: int

    @property
    def text(self) -> str:
        """The message as the user typed it."""
        return self._render(dict(self.slots))

    @property
    def masked_text(self) -> str:
        """The message after the input guardrail anonymised e-mail addresses and phone numbers."""
        slots = dict(self.slots)
        return self._render({k: _PII_MASK.get(k, v) for k, v in slots.items()})

    @property
    def has_pii(self) -> bool:
        """Whether the message carries an e-mail address or phone number."""
        return any(name in _PII_SLOTS for name, _ in self.slots)

    @property
    def injection(self) -> bool:
        """Whether this is a prompt-injection attempt."""
        return self.topic == "injection"

    @property
    def new_topic(self) -> bool:
        """Whether this is about the feature launched on the new-topic day."""
        return self.topic == "vector_export"

    @property
    def body(self) -> str:
        """The masked message without greeting or sign-off (what a query rewriter keeps)."""
        slots = {k: _PII_MASK.get(k, v) for k, v in self.slots}
        return BANKS[self.topic][self.group][self.variant].format_map(slots)

    def _render(self, slots: dict[str, str]) -> str:
        body = BANKS[self.topic][self.group][self.variant].format_map(slots)
        opener = OPENERS[self.opener]
        if opener.endswith((", ", ": ")) and body[:2].istitle() and not body.startswith("I "):
            body = body[0].lower() + body[1:]
        return f"{opener}{body}{CLOSERS[self.closer]}"


def make_question(rng: random.Random, topic: str, intent: str) -> Question:
    """A fresh question from the ``topic`` bank, routed to ``intent``."""
    group = rng.randrange(len(BANKS[topic]))
    slots = tuple((name, rng.choice(SLOTS[name])) for name in _GROUP_SLOTS[topic][group])
    variant = rng.randrange(len(BANKS[topic][group]))
    plain = topic == "injection"  # attacks come without pleasantries
    opener = 0 if plain else rng.randrange(len(OPENERS))
    closer = 0 if plain else rng.randrange(len(CLOSERS))
    return Question(intent, topic, group, variant, slots, opener, closer)


def paraphrase(rng: random.Random, q: Question) -> Question:
    """The same question said another way: other variant, opener or closer; never the same text."""
    variants = len(BANKS[q.topic][q.group])
    for _ in range(8):
        candidate = Question(
            q.intent,
            q.topic,
            q.group,
            (q.variant + 1 + rng.randrange(variants - 1)) % variants if variants > 1 else q.variant,
            q.slots,
            rng.randrange(len(OPENERS)),
            rng.randrange(len(CLOSERS)),
        )
        if candidate.text != q.text:
            return candidate
    return Question(q.intent, q.topic, q.group, q.variant, q.slots, 4, 4)


def compose_answer(
    rng: random.Random, q: Question, target_chars: int, bad: bool, prompt_version: str
) -> str:
    """A plausible answer of roughly ``target_chars``; bad ones hedge or answer something else."""
    topic = q.topic if q.topic in answers.SENTENCES else q.intent
    if bad:
        if q.new_topic:
            return f"{answers.NEW_TOPIC_HEDGE} {rng.choice(answers.CLOSERS)}".strip()
        if rng.random() < 0.5:
            return rng.choice(answers.HEDGES)
        topic = rng.choice([t for t in answers.SENTENCES if t not in (topic, "vector_export")])
    slots = dict(q.slots)
    sentences = answers.SENTENCES[topic]
    # Sentences about what the user mentioned come first, the rest in random order.
    order = sorted(
        rng.sample(range(len(sentences)), len(sentences)),
        key=lambda i: not slots.keys() & set(_SENTENCE_SLOTS[topic][i]),
    )
    limit = 3 if prompt_version == "v2" or topic == "smalltalk" else len(sentences)
    chosen: list[str] = []
    size = 0
    for i in order[:limit]:
        fill = {
            n: slots[n] if n in slots else rng.choice(SLOTS[n]) for n in _SENTENCE_SLOTS[topic][i]
        }
        sentence = sentences[i].format_map(fill)
        chosen.append(sentence)
        size += len(sentence)
        if size >= target_chars:
            break
    opener = rng.choice(answers.OPENERS[topic])
    closer = rng.choice(answers.CLOSERS)
    if prompt_version == "v2" or topic == "smalltalk" or len(chosen) < 3:
        return " ".join([opener, *chosen, closer]).strip()
    steps = "\n".join(f"{n}. {s}" for n, s in enumerate(chosen, 1))
    return f"{opener}\n\n{steps}\n\n{closer}".strip()


def edit_answer(rng: random.Random, q: Question, answer: str) -> str:
    """What a user who edits the answer leaves behind: a hedge replaced by a concrete step."""
    topic = q.topic if q.topic in answers.SENTENCES else q.intent
    fixed = rng.choice(answers.SENTENCES[topic])
    slots = dict(q.slots)
    fill = {
        n: slots[n] if n in slots else rng.choice(SLOTS[n]) for n in _PLACEHOLDER.findall(fixed)
    }
    first = answer.split("\n")[0]
    return f"{first} {fixed.format_map(fill)}"


def doc_snippet(rng: random.Random, topic: str) -> str:
    """One help-center sentence about ``topic``, placeholders filled."""
    i = rng.randrange(len(answers.SENTENCES[topic]))
    fill = {n: rng.choice(SLOTS[n]) for n in _SENTENCE_SLOTS[topic][i]}
    return answers.SENTENCES[topic][i].format_map(fill)
