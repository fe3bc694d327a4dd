"""Evaluators: turn each (case, completion) of a replay into a score in [0, 1], 1 best.

An evaluator is anything with a ``name`` (the score's name in results) and
``score_many(cases, completions) -> list[Score]``, one score per case, in order. Most are a
function of one case wrapped by :func:`per_case`; :class:`Similarity` embeds a whole batch in
one call and :class:`Judge` asks an LLM. Every built-in scores a failed completion
``Score(None, "no output: …")``: the replay records the error itself, and a missing answer must
not read as a zero.

A run names its evaluators by spec, ``name`` or ``name:arg`` (split on the first colon only, so
``regex:^a:b$`` works); :func:`parse_evaluator` builds one and :data:`EVALUATORS` lists them.
A team adds its own with ``py:package.module:function``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.validators import Draft202012Validator, validator_for

from analytics.embeddings import DEFAULT_MODEL, embed_texts, row_cosines
from evals.cases import Case, ChatTarget, Completion, Score, no_output_score
from evals.judge import DEFAULT_RUBRIC, Judge, parse_judge_score

__all__ = [
    "DEFAULT_RUBRIC", "EVALUATORS", "CaseFn", "CostOf", "Evaluator", "EvaluatorContext", "Judge",
    "Similarity", "normalize_text", "parse_evaluator", "parse_judge_score", "per_case", "score_all",
]  # fmt: skip

#: A custom evaluator of one case: a Score, a value in [0, 1], or a bool (pass/fail).
CaseFn = Callable[[Case, Completion], "Score | float | bool"]
#: The cost of one call in US dollars, or None when its price is unknown.
CostOf = Callable[[Completion], "float | None"]

#: What each spec name means (for ``--help`` and the README).
EVALUATORS: dict[str, str] = {
    "exact": "the output equals the reference, character for character",
    "normalized": "the output equals the reference after normalize_text (case, punctuation, …)",
    "contains": "contains:TEXT: the output contains TEXT (or the reference), ignoring case",
    "regex": "regex:PATTERN: Python re.search finds PATTERN in the output",
    "json_valid": "the output is JSON (or JSON in a single ```json fenced block)",
    "json_schema": "json_schema:PATH: the output is JSON valid against the JSON Schema in PATH",
    "similarity": "similarity[:MODEL]: cosine of output and reference embeddings, clipped to 0-1",
    "max_latency_ms": "max_latency_ms:N: the call took at most N milliseconds",
    "max_output_tokens": "max_output_tokens:N: the answer used at most N output tokens",
    "max_chars": "max_chars:N: the answer is at most N characters long",
    "max_cost_usd": "max_cost_usd:X: the call cost at most X US dollars",
    "judge": "an LLM judge (--judge-model) grades the answer against the reference, 1-5",
    "py": "py:package.module:function: a custom evaluator written in Python",
}


@runtime_checkable
class Evaluator(Protocol):
    """Scores a batch of cases: one :class:`Score` per (case, completion), in order."""

    name: str

    def score_many(self, cases: Sequence[Case], completions: Sequence[Completion]) -> list[Score]:
        """The score of each case's completion, in the order given."""
        ...


@dataclass(frozen=True)
class EvaluatorContext:
    """What some evaluators need from the run: the lake (embedding cache), the judge's target
    and rubric, and the price of a call."""

    data_dir: Path | None = None
    judge: ChatTarget | None = None
    rubric: str | None = None
    cost_of: CostOf | None = None


def _as_score(result: object, name: str) -> Score:
    if isinstance(result, Score):
        return result
    if isinstance(result, bool):  # before int: bool is an int
        return Score(1.0 if result else 0.0)
    if isinstance(result, int | float):
        if not 0.0 <= result <= 1.0:  # NaN fails this too
            raise ValueError(f"evaluator {name} returned {result}, outside [0, 1]")
        return Score(float(result))
    raise TypeError(f"evaluator {name} returned a {type(result).__name__}, not a Score/float/bool")


class PerCase:
    """An evaluator from a function of one case; see :func:`per_case`."""

    def __init__(self, name: str, fn: CaseFn) -> None:
        self.name = name
        self.fn = fn

    def score_many(self, cases: Sequence[Case], completions: Sequence[Completion]) -> list[Score]:
        """``fn`` on each case that was answered; ``Score(None, "no output: …")`` for the rest."""
        return [
            _as_score(self.fn(case, completion), self.name)
            if completion.ok
            else no_output_score(completion)
            for case, completion in zip(cases, completions, strict=True)
        ]


def per_case(name: str, fn: CaseFn) -> Evaluator:
    """An evaluator called ``name`` from ``fn(case, completion) -> Score | float | bool``.

    ``fn`` is only called for completions that answered (``completion.output`` is text); a bool
    becomes 1.0 or 0.0, and a float outside [0, 1] is an error.
    """
    return PerCase(name, fn)


def _equal(transform: Callable[[str], str], compared: str) -> CaseFn:
    def equal(case: Case, completion: Completion) -> Score:
        if case.reference is None:
            return Score(None, "no reference")
        a, b = transform(completion.output or ""), transform(case.reference)
        if a == b:
            return Score(1.0)
        at = next(
            (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
        )
        return Score(0.0, f"{compared} differs at character {at}")

    return equal


def normalize_text(text: str) -> str:
    """The text as ``normalized`` compares it: Unicode NFKC, casefolded, punctuation removed,
    runs of whitespace made one space, stripped.

    Punctuation is every character in a Unicode ``P*`` category; it is removed, not replaced
    by a space (``don't`` becomes ``dont``). Symbols (``S*``: ``$``, ``+``, emoji) are kept.

    >>> normalize_text("  Ｈéllo,   WORLD!! ")
    'héllo world'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(ch for ch in folded if not unicodedata.category(ch).startswith("P"))
    return " ".join(kept.split())


def _contains(text: str | None) -> CaseFn:
    def contains(case: Case, completion: Completion) -> Score:
        needle = text if text is not None else case.reference
        if needle is None:
            return Score(None, "no reference")
        if needle.casefold() in (completion.output or "").casefold():
            return Score(1.0)
        return Score(0.0, f"{needle[:80]!r} not found")

    return contains


def _regex(pattern: str) -> CaseFn:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"regex {pattern!r} is not a valid pattern: {exc}") from None

    def regex(case: Case, completion: Completion) -> Score:
        match = compiled.search(completion.output or "")
        return Score(1.0, f"matched {match.group(0)[:80]!r}") if match else Score(0.0, "no match")

    return regex


# A model often wraps JSON in a fence; the bare ``` fence counts too (no language tag).
_FENCED_RE = re.compile(r"```(?:json)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def _where(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"


def _decode_json(text: str) -> tuple[Any, str]:
    """The JSON value of an output and how it was read (ValueError with the error's position)."""
    try:
        return json.loads(text), "valid JSON"
    except json.JSONDecodeError as exc:
        error = exc
    blocks = _FENCED_RE.findall(text)
    if len(blocks) == 1:
        try:
            return json.loads(blocks[0]), "valid JSON in a ```json fenced block"
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON in the fenced block: {_where(exc)}") from None
    raise ValueError(f"not JSON: {_where(error)}")


def _json_valid(case: Case, completion: Completion) -> Score:
    try:
        _, how = _decode_json(completion.output or "")
    except ValueError as exc:
        return Score(0.0, str(exc))
    return Score(1.0, how)


def _json_schema(path: str) -> CaseFn:
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"json_schema: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"json_schema: {path} is not JSON ({_where(exc)})") from None
    if not isinstance(schema, dict | bool):
        raise ValueError(f"json_schema: {path} is not a schema (expected an object)")
    # $schema may name another draft; without it, 2020-12.
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"json_schema: {path} is not a valid schema: {exc.message}") from None
    validator = cls(schema)

    def json_schema(case: Case, completion: Completion) -> Score:
        try:
            value, _ = _decode_json(completion.output or "")
        except ValueError as exc:
            return Score(0.0, str(exc))
        error = best_match(validator.iter_errors(value))
        return Score(1.0) if error is None else Score(0.0, f"{error.json_path}: {error.message}")

    return json_schema


class Similarity:
    """``similarity``: cosine similarity of the embeddings of the output and the reference,
    clipped to [0, 1] (the detail keeps the raw cosine). A batch is embedded in one call, and
    the vectors are cached in the lake under ``data_dir``."""

    name = "similarity"
    #: Scores a whole batch at once (the replay gathers finished cases for it).
    batched = True

    def __init__(self, data_dir: Path | str, model: str = DEFAULT_MODEL) -> None:
        self.data_dir = Path(data_dir)
        self.model = model

    def score_many(self, cases: Sequence[Case], completions: Sequence[Completion]) -> list[Score]:
        """The similarity of each output to its reference (None without either)."""
        scores: list[Score | None] = []
        pairs: list[tuple[str, str]] = []
        for case, completion in zip(cases, completions, strict=True):
            if not completion.ok:
                scores.append(no_output_score(completion))
            elif case.reference is None:
                scores.append(Score(None, "no reference"))
            else:
                scores.append(None)
                pairs.append((completion.output or "", case.reference))
        cosines = iter(self._cosines(pairs))
        return [s if s is not None else _clipped(next(cosines)) for s in scores]

    def _cosines(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        texts = [output for output, _ in pairs] + [reference for _, reference in pairs]
        vectors = embed_texts(texts, self.data_dir, self.model).vectors.astype(np.float64)
        return [float(c) for c in row_cosines(vectors[: len(pairs)], vectors[len(pairs) :])]


def _clipped(cosine: float) -> Score:
    return Score(min(1.0, max(0.0, cosine)), f"cosine {cosine:.3f}")


def _budget(limit: float, measure: Callable[[Completion], float | None], what: str) -> CaseFn:
    def within(case: Case, completion: Completion) -> Score:
        value = measure(completion)
        if value is None:
            return Score(None, f"{what} unknown")
        if value <= limit:
            return Score(1.0, f"{what} {value:g} <= {limit:g}")
        return Score(0.0, f"{what} {value:g} > {limit:g}")

    return within


#: name -> (what it measures, whether the limit is a whole number, how to measure it)
_BUDGETS: dict[str, tuple[str, bool, Callable[[Completion], float | None]]] = {
    "max_latency_ms": ("latency", False, lambda c: c.latency_ms),
    "max_output_tokens": ("output tokens", True, lambda c: c.output_tokens),
    "max_chars": ("characters", True, lambda c: len(c.output or "")),
}


def _limit(spec: str, name: str, arg: str | None, whole: bool) -> float:
    if arg is None:
        raise ValueError(f"{spec!r}: {name} needs a limit, e.g. {name}:100")
    try:
        limit = int(arg) if whole else float(arg)
    except ValueError:
        kind = "whole number" if whole else "number"
        raise ValueError(f"{spec!r}: the limit {arg!r} is not a {kind}") from None
    if not (math.isfinite(limit) and limit >= 0):
        raise ValueError(f"{spec!r}: the limit must be a finite number >= 0, got {arg!r}")
    return limit


def _is_factory(obj: Callable[..., Any]) -> bool:
    """A class, or a function that can be called without arguments."""
    if isinstance(obj, type):
        return True
    params = inspect.signature(obj).parameters.values()
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
    )


def _load_custom(spec: str, target: str) -> Evaluator:
    """``py:package.module:function``: an Evaluator, a class or zero-argument factory making
    one, or a function of (case, completion) wrapped by :func:`per_case`."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r}: expected py:package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{spec!r}: cannot import {module_name} ({exc})") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"{spec!r}: {module_name} has no {attr!r}")
    if not isinstance(obj, type) and isinstance(obj, Evaluator):
        return obj
    if not callable(obj):
        raise ValueError(f"{spec!r}: {attr} is neither an evaluator nor a function")
    if _is_factory(obj):
        try:
            made = obj()
        except Exception as exc:
            raise ValueError(f"{spec!r}: {attr}() failed: {exc}") from None
        if not isinstance(made, Evaluator):
            raise ValueError(f"{spec!r}: {attr}() returned {made!r}, not an evaluator")
        return made
    return per_case(getattr(obj, "__name__", attr), obj)


def parse_evaluator(spec: str, *, context: EvaluatorContext) -> Evaluator:
    """The evaluator a spec names, ``name`` or ``name:arg`` (see :data:`EVALUATORS`);
    ValueError saying which spec and why when it cannot be built.

    Its scores are stored under the spec itself (``regex:^a``, ``max_latency_ms:2000``), so two
    of a kind with different arguments keep apart; a custom (``py:``) one under its own name.
    """
    name, _, raw_arg = spec.strip().partition(":")
    arg = raw_arg or None
    key = f"{name}:{arg}" if arg is not None else name
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r} in {spec!r}; known: {', '.join(EVALUATORS)}")
    if arg is not None and name in ("exact", "normalized", "json_valid", "judge"):
        raise ValueError(f"{spec!r}: {name} takes no argument")
    if name in ("regex", "json_schema", "py"):
        if arg is None:
            raise ValueError(f"{spec!r}: {name} needs an argument ({EVALUATORS[name]})")
        if name == "py":
            return _load_custom(spec, arg)
        return per_case(key, _regex(arg) if name == "regex" else _json_schema(arg))
    if name == "exact":
        return per_case(key, _equal(str, "output"))
    if name == "normalized":
        return per_case(key, _equal(normalize_text, "normalized output"))
    if name == "contains":
        return per_case(key, _contains(arg))
    if name == "json_valid":
        return per_case(key, _json_valid)
    if name == "similarity":
        if context.data_dir is None:
            raise ValueError(f"{spec!r}: similarity needs a data directory (its embedding cache)")
        similarity = Similarity(context.data_dir, arg or DEFAULT_MODEL)
        similarity.name = key
        return similarity
    if name == "judge":
        if context.judge is None:
            raise ValueError(f"{spec!r}: judge needs --judge-model")
        return Judge(context.judge, context.rubric or DEFAULT_RUBRIC)
    if name == "max_cost_usd":
        if context.cost_of is None:
            raise ValueError(f"{spec!r}: max_cost_usd needs prices (no cost_of in the context)")
        return per_case(key, _budget(_limit(spec, name, arg, False), context.cost_of, "cost"))
    what, whole, measure = _BUDGETS[name]
    return per_case(key, _budget(_limit(spec, name, arg, whole), measure, what))


def score_all(
    evaluators: Sequence[Evaluator], cases: Sequence[Case], completions: Sequence[Completion]
) -> list[dict[str, Score]]:
    """Per case, each evaluator's name -> score; an evaluator that raises scores every case
    ``Score(None, "evaluator error: …")`` and the others still run."""
    if len(cases) != len(completions):
        raise ValueError(f"{len(cases)} cases but {len(completions)} completions")
    results: list[dict[str, Score]] = [{} for _ in cases]
    for evaluator in evaluators:
        try:
            scores = evaluator.score_many(cases, completions)
            if len(scores) != len(cases):
                raise ValueError(f"gave {len(scores)} scores for {len(cases)} cases")
        except Exception as exc:
            scores = [Score(None, f"evaluator error: {type(exc).__name__}: {exc}")] * len(cases)
        for row, score in zip(results, scores, strict=True):
            row[evaluator.name] = score
    return results
