"""The LLM judge: a rubric sent through the same target interface as a replay, and a lenient
reader of the score it answers with (JSON, ``Score: 4``, ``4/5``, a bare number), which gives
no score, with the reason, for an unreadable, out-of-range or self-contradicting reply."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

from evals.cases import Case, ChatTarget, Completion, Message, Score, no_output_score

__all__ = ["DEFAULT_RUBRIC", "Judge", "parse_judge_score"]

DEFAULT_RUBRIC = """\
You grade an AI assistant's answer to a user's question. Judge two things:
- correctness: are its facts and conclusion right? When a reference answer is given, treat it \
as correct; other wording and extra correct detail are fine, contradicting it is not.
- helpfulness: does it answer what was asked, clearly and without padding?
Scale:
5 = correct and complete, at least as helpful as the reference;
4 = correct, with a minor omission or unclear wording;
3 = partly correct, or correct but missing something the user needed;
2 = mostly wrong or unhelpful, with some correct content;
1 = wrong, off-topic, or an unjustified refusal."""


_NUMBER = r"-?\d+(?:\.\d+)?"
_OUT_OF = rf"\s*(?:/|out\s+of)\s*({_NUMBER})"
# "Score: 4", "**Rating:** 4 out of 5", "score = 4/5"
_LABELLED_RE = re.compile(
    rf"\b(?:score|rating|grade)[\s*\"']*[:=][\s*\"']*({_NUMBER})(?:{_OUT_OF})?", re.IGNORECASE
)
_FRACTION_RE = re.compile(rf"(?<![\w.])({_NUMBER}){_OUT_OF}", re.IGNORECASE)
_BARE_RE = re.compile(rf"\s*({_NUMBER})\s*\.?\s*")


def _json_scores(text: str) -> tuple[list[tuple[float, float | None]], str]:
    """Scores of the JSON objects with a ``score`` key anywhere in the text, and a reason."""
    decoder, reason = json.JSONDecoder(), ""
    found: list[tuple[float, float | None]] = []
    for brace in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, brace.start())
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        key = next((k for k in obj if k.lower() == "score"), None)
        if key is None:
            continue
        field = obj[key]
        if isinstance(field, bool):  # before int: bool is an int
            raise ValueError(f"score is a boolean ({json.dumps(field)}), not a number")
        if isinstance(field, str) and re.fullmatch(_NUMBER, field.strip()):
            field = float(field)
        if not isinstance(field, int | float):
            raise ValueError(f"score is not a number: {field!r}")
        found.append((float(field), None))
        if not reason and isinstance(obj.get("reason"), str):
            reason = obj["reason"]
    return found, reason


def parse_judge_score(text: str, scale: tuple[int, int]) -> tuple[float | None, str]:
    """The score a judge's reply gives, on the judge's scale, and its reason (or why none).

    Read in this order, the first that finds anything wins: JSON objects with a ``score`` key
    (bare, fenced or amid text); labelled scores (``Score: 4``, ``rating = 4/5``,
    ``Rating: 4 out of 5``); fractions (``4/5``); the whole reply being one number. Ambiguity
    gives None: differing scores, a denominator other than the top of the scale, a value
    outside it, a boolean or non-numeric score.

    Args:
        text: the judge's reply.
        scale: the lowest and highest score, inclusive.

    Returns:
        ``(score, reason)``; ``(None, why)`` when no single in-range score is found.

    >>> parse_judge_score('{"score": 4, "reason": "minor omission"}', (1, 5))
    (4.0, 'minor omission')
    >>> parse_judge_score("Score: 2. On reflection, Score: 5", (1, 5))
    (None, 'conflicting scores 2 and 5')
    """
    lo, hi = scale
    if not text.strip():
        return None, "empty judge reply"
    try:
        found, reason = _json_scores(text)
    except ValueError as exc:
        return None, str(exc)
    if not found:
        reason = text.strip()[:300]
        found = [(float(m[1]), float(m[2]) if m[2] else None) for m in _LABELLED_RE.finditer(text)]
    if not found:
        found = [(float(m[1]), float(m[2])) for m in _FRACTION_RE.finditer(text)]
    if not found and (bare := _BARE_RE.fullmatch(text)):
        found = [(float(bare[1]), None)]
    if not found:
        return None, "no score found in the judge reply"
    for value, out_of in found:
        if out_of is not None and out_of != hi:
            return None, f"score {value:g}/{out_of:g} is not on the {lo}–{hi} scale"
    values = list(dict.fromkeys(value for value, _ in found))
    if len(values) > 1:
        listed = ", ".join(f"{v:g}" for v in values[:-1])
        return None, f"conflicting scores {listed} and {values[-1]:g}"
    if not (math.isfinite(values[0]) and lo <= values[0] <= hi):
        return None, f"score {values[0]:g} outside {lo}–{hi}"
    return values[0], reason


class Judge:
    """``judge``: an LLM grades each answer on a rubric through a :class:`ChatTarget`.

    The normalised score is ``(s - lo) / (hi - lo)`` for a judge score ``s`` on ``scale``.
    Cases are judged one after another (the replay already runs cases in parallel).
    """

    name = "judge"

    def __init__(
        self, target: ChatTarget, rubric: str = DEFAULT_RUBRIC, scale: tuple[int, int] = (1, 5)
    ) -> None:
        if not scale[0] < scale[1]:
            raise ValueError(f"a judge scale runs from low to high, got {scale}")
        self.target = target
        self.rubric = rubric
        self.scale = scale

    def messages(self, case: Case, output: str) -> list[Message]:
        """What the judge is sent: the rubric and reply format, then question, reference, answer."""
        lo, hi = self.scale
        instructions = (
            f"{self.rubric}\n\nReply with a JSON object "
            f'{{"score": <integer {lo}-{hi}>, "reason": "..."}} and nothing else.'
        )
        parts = [f"Question:\n{case.user_input}"]
        if case.reference is not None:
            parts.append(f"Reference answer:\n{case.reference}")
        parts.append(f"Answer to grade:\n{output}")
        return [
            {"role": "system", "content": instructions},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    def score_many(self, cases: Sequence[Case], completions: Sequence[Completion]) -> list[Score]:
        """Ask the judge about each answered case, one call per case."""
        return [
            self._score(case, completion) if completion.ok else no_output_score(completion)
            for case, completion in zip(cases, completions, strict=True)
        ]

    def _score(self, case: Case, completion: Completion) -> Score:
        verdict = self.target.chat(self.messages(case, completion.output or ""))
        if not verdict.ok:
            return Score(None, f"judge failed: {verdict.error or 'no reply'}")
        raw, reason = parse_judge_score(verdict.output or "", self.scale)
        if raw is None:
            return Score(None, f"judge reply not understood: {reason}")
        lo, hi = self.scale
        return Score((raw - lo) / (hi - lo), f"{raw:g}/{hi}: {reason}")
