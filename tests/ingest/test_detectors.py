"""Built-in detectors against labelled corpora, and their checksums against independent code.

``detector_corpus.jsonl`` is the corpus the patterns were tuned on; ``detector_holdout.jsonl``
was written independently of the patterns and never tuned against, so its figures say how
the detectors generalise. ``python -m bench detectors`` prints both.
"""

from __future__ import annotations

import doctest
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest import detectors
from ingest.detectors import (
    CATEGORIES,
    DETECTORS,
    PHRASE_DETECTORS,
    SENSITIVE_SCREEN,
    find_phrase,
    find_sensitive,
    iban_valid,
    luhn_valid,
)
from ingest.redaction import DEFAULT_PROJECT_POLICY, SpanRedactor, parse_policy

HERE = Path(__file__).parent
TUNED = HERE / "detector_corpus.jsonl"
HOLDOUT = HERE / "detector_holdout.jsonl"

#: Per-kind floors (precision, recall) on the tuning corpus (every kind measured 1.00 / 1.00).
TUNED_FLOOR: dict[str, tuple[float, float]] = {kind: (0.95, 0.95) for kind in CATEGORIES}
#: Per-kind floors on the held-out corpus: what the patterns reach on text they were never
#: tuned on (measured, rounded down to 0.05). The phrasing detectors (injection, refusal) are
#: heuristics and generalise least; the shape-and-checksum detectors hold up.
HOLDOUT_FLOOR: dict[str, tuple[float, float]] = {
    "email": (0.90, 1.00),
    "phone": (1.00, 0.85),
    "credit_card": (1.00, 1.00),
    "iban": (1.00, 1.00),
    "ip_address": (1.00, 1.00),
    "national_id": (1.00, 1.00),
    "api_key": (1.00, 1.00),
    "private_key": (1.00, 1.00),
    "prompt_injection": (0.75, 0.40),
    "refusal": (0.90, 0.70),
}


def kinds_found(text: str) -> set[str]:
    found = {f.kind for f in find_sensitive(text)}
    found |= {d.kind for d in PHRASE_DETECTORS if find_phrase(d.kind, text)}
    return found


def scores(path: Path) -> dict[str, tuple[float, float, int, int]]:
    """Per kind: (precision, recall, positives, negatives) over a corpus."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    out = {}
    for kind in CATEGORIES:
        tp = fp = fn = positives = 0
        for row in rows:
            want, got = kind in row["labels"], kind in kinds_found(row["text"])
            positives += want
            tp += want and got
            fp += got and not want
            fn += want and not got
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        out[kind] = (precision, recall, positives, len(rows) - positives)
    return out


@pytest.mark.parametrize(("path", "floor"), [(TUNED, TUNED_FLOOR), (HOLDOUT, HOLDOUT_FLOOR)])
def test_precision_and_recall_per_kind(path: Path, floor: dict[str, tuple[float, float]]) -> None:
    measured = scores(path)
    for kind, (precision, recall, positives, negatives) in measured.items():
        assert positives >= 10 and negatives >= 10, (path.name, kind, positives, negatives)
        assert precision >= floor[kind][0], (path.name, kind, measured[kind])
        assert recall >= floor[kind][1], (path.name, kind, measured[kind])


def test_doctests() -> None:
    failures, _ = doctest.testmod(detectors, raise_on_error=False, verbose=False)
    assert failures == 0


def test_every_corpus_label_is_a_known_kind() -> None:
    for path in (TUNED, HOLDOUT):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert set(json.loads(line)["labels"]) <= set(CATEGORIES), line


def _luhn_reference(digits: str) -> bool:
    # The textbook form: double every second digit from the right, sum the digits of each.
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += sum(int(x) for x in str(d))
    return total % 10 == 0


def test_luhn_agrees_with_the_textbook_form() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 19)))
        assert luhn_valid(digits) == _luhn_reference(digits), digits


def _iban_reference(text: str) -> int:
    # ISO 7064 MOD 97-10 computed piecewise (9 digits at a time), as banks' specs describe.
    iban = text.replace(" ", "")
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    remainder = 0
    while digits:
        chunk, digits = str(remainder) + digits[:7], digits[7:]
        remainder = int(chunk) % 97
    return remainder


def test_iban_check_agrees_with_piecewise_mod_97() -> None:
    rng = random.Random(5)
    for _ in range(500):
        body = "".join(rng.choice("0123456789") for _ in range(18))
        for check in range(100):
            candidate = f"DE{check:02d}{body}"
            assert iban_valid(candidate) == (_iban_reference(candidate) == 1), candidate
    assert not iban_valid("DE89370400440532013000X")  # wrong length for DE
    assert not iban_valid("QZ5380167643467613144")  # not a registry country


def test_overlapping_matches_keep_the_earlier_detector() -> None:
    text = "key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234 and card 4111 1111 1111 1111."
    found = find_sensitive(text)
    assert [(f.kind, f.value) for f in found] == [
        ("api_key", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx1234"),
        ("credit_card", "4111 1111 1111 1111"),
    ]
    assert all(text[f.start : f.end] == f.value for f in found)


def test_every_positive_passes_its_re2_screen() -> None:
    # The Arrow screen must be a superset of the Python patterns, or findings go unseen.
    rows = [json.loads(line) for p in (TUNED, HOLDOUT) for line in p.read_text().splitlines()]
    texts = pa.array([row["text"] for row in rows])
    screened = pc.match_substring_regex(texts, SENSITIVE_SCREEN).to_pylist()
    for row, passed in zip(rows, screened, strict=True):
        if find_sensitive(row["text"]):
            assert passed, row["text"]
    for detector in DETECTORS + PHRASE_DETECTORS:
        compiled = pc.match_substring_regex(texts, detector.prefilter).to_pylist()
        for row, passed in zip(rows, compiled, strict=True):
            if detector.pattern.search(row["text"]) and detector.confirm(
                detector.pattern.search(row["text"])  # type: ignore[arg-type]
            ):
                assert passed, (detector.kind, row["text"])


def test_mask_numbers_placeholders_per_value() -> None:
    policy = parse_policy('[default]\npii = "mask"').default
    redactor = SpanRedactor(policy)
    text = "mail a@example.com, b@example.org, then a@example.com again; call +1 415 555 0134"
    out = redactor.rewrite(text, find_sensitive(text))
    assert out == "mail <EMAIL_1>, <EMAIL_2>, then <EMAIL_1> again; call <PHONE_1>"


def test_hash_mode_is_salted_and_stable() -> None:
    policy = parse_policy('[default]\nemail = "hash"\nsalt = "s1"').default
    other = parse_policy('[default]\nemail = "hash"\nsalt = "s2"').default
    text = "to a@example.com"
    one = SpanRedactor(policy).rewrite(text, find_sensitive(text))
    assert one == SpanRedactor(policy).rewrite(text, find_sensitive(text))
    assert one.startswith("to <EMAIL:") and "a@example.com" not in one
    assert one != SpanRedactor(other).rewrite(text, find_sensitive(text))


def test_built_in_policy_masks_secrets_and_keeps_pii() -> None:
    text = "token ghp_" + "a1B2" * 9 + " for ann@example.com"
    out = SpanRedactor(DEFAULT_PROJECT_POLICY).rewrite(text, find_sensitive(text))
    assert out == "token <API_KEY_1> for ann@example.com"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[default]\npii = "scramble"', "want one of off, mask, hash"),
        ('[default]\nemails = "mask"', "unknown key"),
        ('[projects]\nacme = "mask"', "projects.acme must be a table"),
        ("[other]\n", "unknown table [other]"),
        ("[default\n", "not valid TOML"),
    ],
)
def test_policy_errors_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_policy(text, "test.toml")


def test_project_policy_starts_from_default_and_kind_beats_category() -> None:
    policy = parse_policy('[default]\npii = "mask"\n[projects.acme]\npii = "hash"\nphone = "off"\n')
    acme, other = policy.for_project("acme"), policy.for_project("other")
    assert (acme.mode("email"), acme.mode("phone"), acme.mode("api_key")) == (
        "hash",
        "off",
        "mask",
    )
    assert (other.mode("email"), other.mode("phone")) == ("mask", "mask")
