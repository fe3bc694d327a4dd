"""Evaluators: each built-in on hand-made cases, judge parsing, specs, custom `py:` evaluators."""

from __future__ import annotations

import doctest
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evals import evaluators, judge
from evals.cases import Case, Completion, Message, Score
from evals.evaluators import (
    DEFAULT_RUBRIC,
    EVALUATORS,
    Evaluator,
    EvaluatorContext,
    Judge,
    Similarity,
    normalize_text,
    parse_evaluator,
    parse_judge_score,
    per_case,
    score_all,
)

FAILED = Completion(None, error="HTTP 503: overloaded")
NO_CONTEXT = EvaluatorContext()


def case(reference: str | None = "Paris", question: str = "What is the capital of France?") -> Case:
    return Case("c-1", ({"role": "user", "content": question},), reference=reference)


def done(output: str, **kwargs: Any) -> Completion:
    return Completion(output, **kwargs)


def score_one(spec: str, output: str | None, reference: str | None = "Paris", **ctx: Any) -> Score:
    evaluator = parse_evaluator(spec, context=EvaluatorContext(**ctx))
    completion = FAILED if output is None else done(output)
    [score] = evaluator.score_many([case(reference)], [completion])
    return score


def test_doctests() -> None:
    results = [doctest.testmod(m, raise_on_error=False, verbose=False) for m in (evaluators, judge)]
    assert sum(tried for _, tried in results) >= 3 and all(failed == 0 for failed, _ in results)


# --- exact, normalized, contains, regex --------------------------------------------------


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("paris", "Paris", 0.0),
        ("Paris ", "Paris", 0.0),  # trailing whitespace counts
        ("Paris.", "Paris", 0.0),
        ("", "", 1.0),
        ("", "Paris", 0.0),
        ("cafe\u0301", "café", 0.0),  # decomposed vs composed: different code points
        ("日本", "日本", 1.0),
    ],
)
def test_exact(output: str, reference: str, expected: float) -> None:
    assert score_one("exact", output, reference).value == expected


def test_exact_says_where_the_output_differs() -> None:
    assert score_one("exact", "Pariss", "Paris").detail == "output differs at character 5"
    assert score_one("exact", "Lyon", "Paris").detail == "output differs at character 0"


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("Paris.", "paris", 1.0),
        ("  New   York\n", "new york", 1.0),
        ("ＡＢＣ", "abc", 1.0),  # full-width letters fold under NFKC
        ("cafe\u0301", "CAFÉ", 1.0),  # composed by NFKC, then casefolded
        ("Straße", "STRASSE", 1.0),  # casefold, not lower
        ("«Bonjour !»", "bonjour", 1.0),
        ("don't", "dont", 1.0),  # punctuation is removed, not made a space
        ("1,000", "1000", 1.0),
        ("$5", "5", 0.0),  # symbols are not punctuation
        ("a b", "ab", 0.0),  # whitespace is collapsed, not removed
        ("...", "", 1.0),
        ("Lyon", "Paris", 0.0),
    ],
)
def test_normalized(output: str, reference: str, expected: float) -> None:
    assert score_one("normalized", output, reference).value == expected


def test_normalize_text_rule() -> None:
    assert normalize_text("  Hello,\t\u00a0WORLD!\n") == "hello world"
    assert normalize_text("ﬁ—rst") == "first"  # ligature by NFKC, em dash is punctuation
    assert normalize_text("") == ""


@pytest.mark.parametrize(
    ("spec", "output", "reference", "expected"),
    [
        ("contains:paris", "The capital is PARIS.", None, 1.0),
        ("contains:Paris", "The capital is Lyon.", "Paris", 0.0),
        ("contains:straße", "STRASSE 5", None, 1.0),
        ("contains: is", "This", None, 0.0),  # the argument is taken as written, space included
        ("contains", "I think it is paris, yes", "Paris", 1.0),
        ("contains", "Lyon", "Paris", 0.0),
        ("contains", "", "Paris", 0.0),
        ("contains", "anything", "", 1.0),  # an empty reference is in every output
    ],
)
def test_contains(spec: str, output: str, reference: str | None, expected: float) -> None:
    assert score_one(spec, output, reference).value == expected


def test_contains_without_text_or_reference_cannot_score() -> None:
    assert score_one("contains", "Paris", None) == Score(None, "no reference")


@pytest.mark.parametrize(
    ("spec", "output", "expected"),
    [
        ("regex:^a:b$", "a:b", 1.0),  # split on the first colon only
        ("regex:\\d+", "order 42 shipped", 1.0),  # search, not fullmatch
        ("regex:^\\d+$", "order 42", 0.0),
        ("regex:Paris", "paris", 0.0),  # case-sensitive unless the pattern says otherwise
        ("regex:(?i)paris", "PARIS", 1.0),
        ("regex:^$", "", 1.0),
        ("regex:é", "café", 1.0),
    ],
)
def test_regex(spec: str, output: str, expected: float) -> None:
    assert score_one(spec, output).value == expected


def test_regex_detail_shows_the_match() -> None:
    assert score_one("regex:\\d+", "order 42").detail == "matched '42'"
    assert score_one("regex:\\d+", "none").detail == "no match"


def test_invalid_regex_fails_at_construction_naming_the_pattern() -> None:
    with pytest.raises(ValueError, match=r"regex '\(unclosed' is not a valid pattern"):
        parse_evaluator("regex:(unclosed", context=NO_CONTEXT)


@pytest.mark.parametrize("spec", ["exact", "normalized", "contains", "contains:x", "regex:x"])
def test_text_evaluators_give_none_for_a_failed_completion(spec: str) -> None:
    assert score_one(spec, None) == Score(None, "no output: HTTP 503: overloaded")


def test_exact_and_normalized_need_a_reference() -> None:
    assert score_one("exact", "Paris", None) == Score(None, "no reference")
    assert score_one("normalized", "Paris", None) == Score(None, "no reference")


# --- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected", "detail"),
    [
        ('{"a": 1}', 1.0, "valid JSON"),
        (" [1, 2]\n", 1.0, "valid JSON"),
        ("null", 1.0, "valid JSON"),
        ('"just a string"', 1.0, "valid JSON"),
        ('Here it is:\n```json\n{"a": 1}\n```\nDone.', 1.0, "fenced block"),
        ('```\n{"a": 1}\n```', 1.0, "fenced block"),
        ('{"a": 1,}', 0.0, "char 8"),
        ("", 0.0, "not JSON: Expecting value at line 1 column 1 (char 0)"),
        ('```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```', 0.0, "not JSON"),  # two blocks
        ('```json\n{"a": }\n```', 0.0, "not JSON in the fenced block"),
        ("{'a': 1}", 0.0, "not JSON"),  # a Python dict is not JSON
    ],
)
def test_json_valid(output: str, expected: float, detail: str) -> None:
    score = score_one("json_valid", output)
    assert score.value == expected
    assert detail in score.detail


SCHEMA = {
    "type": "object",
    "required": ["answer"],
    "properties": {
        "answer": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "sources": {"type": "array", "prefixItems": [{"type": "integer"}]},
    },
}


@pytest.fixture
def schema_path(tmp_path: Path) -> Path:
    path = tmp_path / "answer.schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


@pytest.mark.parametrize(
    ("output", "expected", "detail"),
    [
        ('{"answer": "Paris", "confidence": 0.9}', 1.0, ""),
        ('```json\n{"answer": "Paris"}\n```', 1.0, ""),
        ('{"confidence": 0.9}', 0.0, "$: 'answer' is a required property"),
        ('{"answer": "Paris", "confidence": 2}', 0.0, "$.confidence: 2 is greater than"),
        ('{"answer": 3}', 0.0, "$.answer: 3 is not of type 'string'"),
        # prefixItems exists in Draft 2020-12 only: an older draft would pass this
        ('{"answer": "x", "sources": ["a"]}', 0.0, "$.sources[0]: 'a' is not of type 'integer'"),
        ("Paris", 0.0, "not JSON"),
        ("", 0.0, "not JSON"),
    ],
)
def test_json_schema(schema_path: Path, output: str, expected: float, detail: str) -> None:
    score = score_one(f"json_schema:{schema_path}", output)
    assert score.value == expected
    assert detail in score.detail


def test_json_schema_checks_the_schema_at_construction(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "objekt"}')
    with pytest.raises(ValueError, match="not a valid schema"):
        parse_evaluator(f"json_schema:{bad}", context=NO_CONTEXT)
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": ')
    with pytest.raises(ValueError, match=r"broken\.json is not JSON"):
        parse_evaluator(f"json_schema:{broken}", context=NO_CONTEXT)
    with pytest.raises(ValueError, match="cannot read"):
        parse_evaluator(f"json_schema:{tmp_path / 'missing.json'}", context=NO_CONTEXT)
    with pytest.raises(ValueError, match="json_schema needs an argument"):
        parse_evaluator("json_schema", context=NO_CONTEXT)


def test_json_evaluators_give_none_for_a_failed_completion(schema_path: Path) -> None:
    assert score_one("json_valid", None) == Score(None, "no output: HTTP 503: overloaded")
    assert score_one(f"json_schema:{schema_path}", None).value is None


# --- budgets -------------------------------------------------------------------------------


def budget(spec: str, completion: Completion, **ctx: Any) -> Score:
    [score] = parse_evaluator(spec, context=EvaluatorContext(**ctx)).score_many(
        [case()], [completion]
    )
    return score


@pytest.mark.parametrize(
    ("spec", "completion", "expected"),
    [
        ("max_latency_ms:1000", done("x", latency_ms=999.9), 1.0),
        ("max_latency_ms:1000", done("x", latency_ms=1000.0), 1.0),  # the limit itself passes
        ("max_latency_ms:1000", done("x", latency_ms=1000.1), 0.0),
        ("max_latency_ms:0.5", done("x", latency_ms=0.4), 1.0),
        ("max_latency_ms:1000", done("x"), None),
        ("max_output_tokens:10", done("x", output_tokens=10), 1.0),
        ("max_output_tokens:10", done("x", output_tokens=11), 0.0),
        ("max_output_tokens:0", done("", output_tokens=0), 1.0),
        ("max_output_tokens:10", done("x"), None),
        ("max_chars:5", done("héllo"), 1.0),  # characters, not bytes
        ("max_chars:5", done("hello!"), 0.0),
        ("max_chars:0", done(""), 1.0),
        ("max_latency_ms:1000", FAILED, None),
        ("max_chars:5", FAILED, None),
    ],
)
def test_budgets(spec: str, completion: Completion, expected: float | None) -> None:
    assert budget(spec, completion).value == expected


def test_budget_details() -> None:
    assert budget("max_latency_ms:1000", done("x", latency_ms=1500)).detail == "latency 1500 > 1000"
    assert budget("max_latency_ms:1000", done("x")).detail == "latency unknown"
    assert budget("max_chars:5", FAILED).detail == "no output: HTTP 503: overloaded"


def test_max_cost_uses_the_price_function() -> None:
    prices = {"cheap": 0.001, "limit": 0.01, "dear": 0.02}

    def cost_of(completion: Completion) -> float | None:
        return prices.get(completion.model or "")

    def cost(model: str | None) -> float | None:
        return budget("max_cost_usd:0.01", done("x", model=model), cost_of=cost_of).value

    assert (cost("cheap"), cost("limit"), cost("dear"), cost(None)) == (1.0, 1.0, 0.0, None)
    with pytest.raises(ValueError, match="max_cost_usd needs prices"):
        parse_evaluator("max_cost_usd:0.01", context=NO_CONTEXT)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("max_latency_ms", "'max_latency_ms': max_latency_ms needs a limit"),
        ("max_latency_ms:", "needs a limit"),
        ("max_latency_ms:fast", "'max_latency_ms:fast': the limit 'fast' is not a number"),
        ("max_latency_ms:nan", "finite number >= 0"),
        ("max_output_tokens:1.5", "not a whole number"),
        ("max_chars:-1", "finite number >= 0"),
    ],
)
def test_bad_budget_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_evaluator(spec, context=NO_CONTEXT)


# --- similarity ----------------------------------------------------------------------------


def test_similarity_embeds_the_batch_once_and_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = {"same": [1.0, 0.0], "opposite": [-1.0, 0.0], "diagonal": [1.0, 1.0], "zero": [0, 0]}
    calls: list[list[str]] = []

    def fake_embed(texts: Sequence[str], data_dir: Path, model: str) -> Any:
        calls.append(list(texts))
        assert (data_dir, model) == (tmp_path, "my-model")
        return type("Embedded", (), {"vectors": np.array([vectors[t] for t in texts])})

    monkeypatch.setattr(evaluators, "embed_texts", fake_embed)
    cases = [case("same"), case("same"), case(None), case("same"), case("same"), case("same")]
    outputs = [done("same"), done("diagonal"), done("same"), FAILED, done("opposite"), done("zero")]
    scores = Similarity(tmp_path, "my-model").score_many(cases, outputs)
    assert calls == [["same", "diagonal", "opposite", "zero", "same", "same", "same", "same"]]
    assert [s.value for s in scores] == pytest.approx([1.0, 0.5**0.5, None, None, 0.0, 0.0])
    assert scores[2].detail == "no reference"
    assert scores[4].detail == "cosine -1.000"  # clipped, but the raw value is kept


def test_similarity_without_anything_to_embed_does_not_embed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluators, "embed_texts", None)  # calling it would raise
    assert Similarity(tmp_path).score_many([case(None)], [done("x")])[0].value is None
    assert Similarity(tmp_path).score_many([], []) == []


def test_similarity_with_the_packaged_model(tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    reference = "You can reset your password from the account settings page."
    outputs = [
        reference,
        "Go to your account settings to change the password.",
        "The invoice for last month is attached as a PDF.",
    ]
    evaluator = parse_evaluator("similarity", context=EvaluatorContext(data_dir=tmp_path))
    scores = evaluator.score_many([case(reference)] * 3, [done(o) for o in outputs])
    same, paraphrase, unrelated = (s.value for s in scores)
    assert same == pytest.approx(1.0, abs=1e-4)
    assert paraphrase is not None and unrelated is not None
    assert paraphrase > unrelated + 0.2


# --- judge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"score": 4, "reason": "minor omission"}', (4.0, "minor omission")),
        ('```json\n{"score": 5, "reason": "correct"}\n```', (5.0, "correct")),
        (
            'Sure! Here is my verdict: {"score": 2, "reason": "wrong city"} Hope it helps.',
            (2.0, "wrong city"),
        ),
        ('{"Score": 3}', (3.0, "")),
        ('{"score": 4, "reason": "first"} {"score": 4, "reason": "again"}', (4.0, "first")),
        ('{"score": "4", "reason": "ok"}', (4.0, "ok")),  # a numeric string is a number
        ('{"score": 3.5, "reason": "between"}', (3.5, "between")),
        # broken JSON (unescaped quotes): the labelled form still finds the score
        ('{"score": 4, "reason": "says "hi""}', (4.0, '{"score": 4, "reason": "says "hi""}')),
        ("Score: 4", (4.0, "Score: 4")),
        ("score = 4/5", (4.0, "score = 4/5")),
        ("**Rating:** 4 out of 5", (4.0, "**Rating:** 4 out of 5")),
        ("4/5", (4.0, "4/5")),
        ("I'd give this 3 out of 5.", (3.0, "I'd give this 3 out of 5.")),
        ("4", (4.0, "4")),
        (" 5.\n", (5.0, "5.")),
        ("Score: 4. It names 3 cities.", (4.0, "Score: 4. It names 3 cities.")),
        ("Score: 4 ... on reflection, Score: 4", (4.0, "Score: 4 ... on reflection, Score: 4")),
        ('{"score": 7}', (None, "score 7 outside 1–5")),
        ("Score: 0", (None, "score 0 outside 1–5")),
        ("-1", (None, "score -1 outside 1–5")),
        ("", (None, "empty judge reply")),
        ("   \n", (None, "empty judge reply")),
        ("The answer is good.", (None, "no score found in the judge reply")),
        ("Score: 2 ... Score: 5", (None, "conflicting scores 2 and 5")),
        ('{"score": 2} {"score": 5}', (None, "conflicting scores 2 and 5")),
        ("2/5 or maybe 3/5 or 4/5", (None, "conflicting scores 2, 3 and 4")),
        ('{"score": "high", "reason": "good"}', (None, "score is not a number: 'high'")),
        ('{"score": true}', (None, "score is a boolean (true), not a number")),
        ('{"score": null}', (None, "score is not a number: None")),
        ("8/10", (None, "score 8/10 is not on the 1–5 scale")),
        ("Score: 4 out of 10", (None, "score 4/10 is not on the 1–5 scale")),
        ('{"reason": "no score here"}', (None, "no score found in the judge reply")),
        ("four", (None, "no score found in the judge reply")),
    ],
)
def test_parse_judge_score(text: str, expected: tuple[float | None, str]) -> None:
    assert parse_judge_score(text, (1, 5)) == expected


def test_parse_judge_score_on_another_scale() -> None:
    assert parse_judge_score("Score: 8/10", (0, 10)) == (8.0, "Score: 8/10")
    assert parse_judge_score("0", (0, 10)) == (0.0, "0")
    assert parse_judge_score("11", (0, 10)) == (None, "score 11 outside 0–10")


class FakeJudge:
    """A ChatTarget that answers with canned replies and keeps what it was sent."""

    def __init__(self, *replies: Completion) -> None:
        self.replies = list(replies)
        self.sent: list[Sequence[Message]] = []

    def describe(self) -> dict[str, Any]:
        return {"kind": "fake"}

    def complete(self, case: Case) -> Completion:
        return self.chat(case.messages)

    def chat(self, messages: Sequence[Message]) -> Completion:
        self.sent.append(messages)
        return self.replies.pop(0)


def test_judge_sends_rubric_question_reference_and_answer() -> None:
    target = FakeJudge(done('{"score": 4, "reason": "right city, no detail"}'))
    evaluator = parse_evaluator(
        "judge", context=EvaluatorContext(judge=target, rubric="Be strict about capitals.")
    )
    [score] = evaluator.score_many([case("Paris, on the Seine")], [done("It is Paris.")])
    assert score == Score(0.75, "4/5: right city, no detail")
    [(system, user)] = target.sent
    assert system["role"] == "system" and user["role"] == "user"
    assert system["content"].startswith("Be strict about capitals.")
    assert '{"score": <integer 1-5>, "reason": "..."}' in system["content"]
    assert "What is the capital of France?" in user["content"]
    assert "Reference answer:\nParis, on the Seine" in user["content"]
    assert user["content"].endswith("Answer to grade:\nIt is Paris.")


def test_judge_default_rubric_and_no_reference() -> None:
    target = FakeJudge(done("Score: 1"))
    [score] = Judge(target).score_many([case(None)], [done("Lyon")])
    assert score.value == 0.0
    [(system, user)] = target.sent
    assert DEFAULT_RUBRIC in system["content"]
    assert "Reference" not in user["content"]


def test_judge_failures_score_none() -> None:
    target = FakeJudge(Completion(None, error="HTTP 500: boom"), done("I like it"))
    cases = [case(), case(), case()]
    scores = Judge(target).score_many(cases, [done("Paris"), done("Paris"), FAILED])
    assert scores == [
        Score(None, "judge failed: HTTP 500: boom"),
        Score(None, "judge reply not understood: no score found in the judge reply"),
        Score(None, "no output: HTTP 503: overloaded"),
    ]
    assert len(target.sent) == 2  # the failed completion is not sent to the judge


def test_judge_on_another_scale() -> None:
    target = FakeJudge(done('{"score": 7, "reason": "decent"}'))
    [score] = Judge(target, scale=(0, 10)).score_many([case()], [done("Paris")])
    assert score.value == pytest.approx(0.7)
    assert "<integer 0-10>" in target.sent[0][0]["content"]
    with pytest.raises(ValueError, match="low to high"):
        Judge(target, scale=(5, 1))


# --- specs, custom evaluators, score_all ---------------------------------------------------

SPEC_ARGS = {
    "contains": "contains:Paris",
    "regex": "regex:P",
    "max_latency_ms": "max_latency_ms:100",
    "max_output_tokens": "max_output_tokens:100",
    "max_chars": "max_chars:100",
    "max_cost_usd": "max_cost_usd:0.5",
    "py": "py:tests.evals.test_evaluators:starts_with_capital",
}


def test_two_of_a_kind_keep_their_scores_apart() -> None:
    context = EvaluatorContext()
    first, second = (parse_evaluator(s, context=context) for s in ("regex:hel", "regex:^zzz"))
    scored = score_all([first, second], [case()], [Completion("hello")])[0]
    assert {name: s.value for name, s in scored.items()} == {"regex:hel": 1.0, "regex:^zzz": 0.0}


def test_every_registered_evaluator_parses_and_keeps_its_name(schema_path: Path) -> None:
    context = EvaluatorContext(data_dir=Path("."), judge=FakeJudge(), cost_of=lambda c: 0.1)
    specs = {**SPEC_ARGS, "json_schema": f"json_schema:{schema_path}"}
    for name in EVALUATORS:
        evaluator = parse_evaluator(specs.get(name, name), context=context)
        assert isinstance(evaluator, Evaluator)
        # stored under its spec (an argument included), a custom one under its own name
        spec = specs.get(name, name)
        assert evaluator.name == (spec if name != "py" else "starts_with_capital")


@pytest.mark.parametrize(
    ("spec", "context", "message"),
    [
        ("bleu", NO_CONTEXT, "unknown evaluator 'bleu' in 'bleu'; known: exact, normalized"),
        ("regex", NO_CONTEXT, "'regex': regex needs an argument \\(regex:PATTERN"),
        ("regex:", NO_CONTEXT, "regex needs an argument"),
        ("exact:Paris", NO_CONTEXT, "'exact:Paris': exact takes no argument"),
        ("judge", NO_CONTEXT, "judge needs --judge-model"),
        ("similarity", NO_CONTEXT, "similarity needs a data directory"),
        ("py", NO_CONTEXT, "py needs an argument"),
        ("py:tests.evals.test_evaluators", NO_CONTEXT, "expected py:package.module:function"),
        ("py:no_such_module_xyz:f", NO_CONTEXT, "cannot import no_such_module_xyz"),
        ("py:tests.evals.test_evaluators:missing", NO_CONTEXT, "has no 'missing'"),
        ("py:tests.evals.test_evaluators:NOT_AN_EVALUATOR", NO_CONTEXT, "neither an evaluator"),
        (
            "py:tests.evals.test_evaluators:make_nothing",
            NO_CONTEXT,
            "make_nothing\\(\\) returned 0, not an evaluator",
        ),
    ],
)
def test_parse_evaluator_errors(spec: str, context: EvaluatorContext, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_evaluator(spec, context=context)


def starts_with_capital(case: Case, completion: Completion) -> bool:
    return (completion.output or " ")[0].isupper()


def mentions_reference(case: Case, completion: Completion) -> float:
    return 0.5 if case.reference and case.reference in (completion.output or "") else 0.0


class WordCount:
    """A custom evaluator class: 1 for answers of at most ``limit`` words."""

    def __init__(self, limit: int = 3) -> None:
        self.name = "word_count"
        self.limit = limit

    def score_many(self, cases: Sequence[Case], completions: Sequence[Completion]) -> list[Score]:
        return [Score(float(len((c.output or "").split()) <= self.limit)) for c in completions]


SHORT_ANSWERS = WordCount(limit=2)
NOT_AN_EVALUATOR = 42


def make_nothing() -> int:
    return 0


def make_word_count() -> WordCount:
    return WordCount(limit=1)


@pytest.mark.parametrize(
    ("target", "name", "expected"),
    [
        ("starts_with_capital", "starts_with_capital", [1.0, 0.0, None]),
        ("mentions_reference", "mentions_reference", [0.5, 0.0, None]),
        # an Evaluator of its own sees failed completions too (here: an empty answer)
        ("SHORT_ANSWERS", "word_count", [0.0, 0.0, 1.0]),
        ("WordCount", "word_count", [1.0, 0.0, 1.0]),
        ("make_word_count", "word_count", [0.0, 0.0, 1.0]),
    ],
)
def test_custom_py_evaluators(target: str, name: str, expected: list[float | None]) -> None:
    evaluator = parse_evaluator(f"py:tests.evals.test_evaluators:{target}", context=NO_CONTEXT)
    assert evaluator.name == name
    completions = [done("Paris it is"), done("it is not paris"), FAILED]
    scores = evaluator.score_many([case(), case(), case()], completions)
    assert [s.value for s in scores] == expected


@pytest.mark.parametrize(
    ("result", "expected"),
    [(True, 1.0), (False, 0.0), (0, 0.0), (1, 1.0), (0.25, 0.25), (Score(None, "n/a"), None)],
)
def test_per_case_converts_results(result: object, expected: float | None) -> None:
    [score] = per_case("custom", lambda c, o: result).score_many([case()], [done("x")])  # type: ignore[arg-type, return-value]
    assert score.value == expected


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (1.5, ValueError),
        (-0.1, ValueError),
        (float("nan"), ValueError),
        ("yes", TypeError),
        (None, TypeError),
    ],
)
def test_per_case_rejects_bad_results(result: object, error: type[Exception]) -> None:
    evaluator = per_case("custom", lambda c, o: result)  # type: ignore[arg-type, return-value]
    with pytest.raises(error, match="evaluator custom returned"):
        evaluator.score_many([case()], [done("x")])


def test_score_all_keeps_going_when_an_evaluator_raises() -> None:
    def explode(case: Case, completion: Completion) -> float:
        raise ZeroDivisionError("division by zero")

    evaluators_ = [
        parse_evaluator("exact", context=NO_CONTEXT),
        per_case("boom", explode),
        per_case("too_high", lambda c, o: 2.0),
        parse_evaluator("max_chars:3", context=NO_CONTEXT),
    ]
    results = score_all(evaluators_, [case(), case("Lyon")], [done("Paris"), FAILED])
    assert results == [
        {
            "exact": Score(1.0),
            "boom": Score(None, "evaluator error: ZeroDivisionError: division by zero"),
            "too_high": Score(
                None, "evaluator error: ValueError: evaluator too_high returned 2.0, outside [0, 1]"
            ),
            "max_chars:3": Score(0.0, "characters 5 > 3"),
        },
        {
            "exact": Score(None, "no output: HTTP 503: overloaded"),
            "boom": Score(None, "evaluator error: ZeroDivisionError: division by zero"),
            "too_high": Score(
                None, "evaluator error: ValueError: evaluator too_high returned 2.0, outside [0, 1]"
            ),
            "max_chars:3": Score(None, "no output: HTTP 503: overloaded"),
        },
    ]


def test_score_all_catches_a_wrong_number_of_scores() -> None:
    class Short:
        name = "short"

        def score_many(
            self, cases: Sequence[Case], completions: Sequence[Completion]
        ) -> list[Score]:
            return []

    [row] = score_all([Short()], [case()], [done("x")])
    assert row == {"short": Score(None, "evaluator error: ValueError: gave 0 scores for 1 cases")}
    with pytest.raises(ValueError, match="2 cases but 1 completions"):
        score_all([Short()], [case(), case()], [done("x")])
