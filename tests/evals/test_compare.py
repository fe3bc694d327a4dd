"""Comparisons: the bootstrap interval and the Wilcoxon p-value against references computed
another way, and ``compare_runs`` end to end on real replays against ``FakeOpenAI``: a worse
candidate is a regression, an equal one is not, wins/losses/ties and cost are what was planted."""

from __future__ import annotations

import doctest
import itertools
import random
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analytics.cost import install_prices
from evals import compare
from evals.cases import Case, case_id_of
from evals.compare import (
    compare_runs,
    output_diff,
    paired_bootstrap_interval,
    paired_permutation_p_value,
)
from evals.datasets import Dataset, write_dataset
from evals.evaluators import EvaluatorContext, parse_evaluator
from evals.replay import read_results, reference_outputs, replay, start_run
from evals.targets import OpenAITarget, RecordedTarget, Target, TargetConfig
from store.catalog import open_catalog
from store.writer import LakeWriter
from tests.evals.openai_server import FakeOpenAI, last_user_text

KEY_ENV = "FLYWHEEL_TEST_FAKE_OPENAI_KEY"
PROJECT = "default"


def test_doctests() -> None:
    failures, tried = doctest.testmod(compare, raise_on_error=False, verbose=False)
    assert tried >= 2 and failures == 0


# --- the bootstrap interval ----------------------------------------------------------------------


def exact_bootstrap_quantiles(d: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The quantiles of the bootstrap distribution of the mean, by enumerating all n^n
    equally likely resamples (the limit the Monte Carlo bootstrap converges to)."""
    picks = np.array(list(itertools.product(range(d.size), repeat=d.size)))
    means = np.sort(d[picks].mean(axis=1))
    tail = (1 - level) / 2
    low = means[int(np.ceil(tail * means.size)) - 1]
    high = means[int(np.ceil((1 - tail) * means.size)) - 1]
    return float(low), float(high)


def test_bootstrap_interval_converges_to_the_exact_bootstrap_quantiles() -> None:
    d = np.array([0.346, 0.822, 0.33, -1.303, 0.905, 0.446])
    expected = exact_bootstrap_quantiles(d)  # about (-0.399, 0.711)
    low, high = paired_bootstrap_interval(d, num=100_000, seed=3)
    assert low == pytest.approx(expected[0], abs=0.01)
    assert high == pytest.approx(expected[1], abs=0.01)
    narrow = exact_bootstrap_quantiles(d, level=0.5)
    assert paired_bootstrap_interval(d, level=0.5, num=100_000) == pytest.approx(narrow, abs=0.01)


def test_bootstrap_interval_matches_scipy_percentile_bootstrap() -> None:
    rng = np.random.default_rng(7)
    d = rng.choice([-1.0, 0.0, 0.0, 1.0], size=60) + rng.normal(0, 0.1, size=60)
    result = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.9,
        rng=np.random.default_rng(11),
    )
    low, high = paired_bootstrap_interval(d, level=0.9, num=20_000, seed=5)
    spread = d.std() / np.sqrt(d.size)
    assert low == pytest.approx(result.confidence_interval.low, abs=0.05 * spread)
    assert high == pytest.approx(result.confidence_interval.high, abs=0.05 * spread)


def test_bootstrap_interval_edge_cases() -> None:
    low, high = paired_bootstrap_interval(np.array([]))
    assert np.isnan(low) and np.isnan(high)
    assert paired_bootstrap_interval(np.array([-0.25])) == (-0.25, -0.25)
    assert paired_bootstrap_interval(np.full(30, 0.5)) == pytest.approx((0.5, 0.5))
    d = np.array([1.0, 0.0, -1.0, 1.0, 1.0])
    assert paired_bootstrap_interval(d, seed=4) == paired_bootstrap_interval(d, seed=4)


differences = st.lists(
    st.floats(min_value=-1.0, max_value=1.0, allow_nan=False), min_size=1, max_size=40
).map(np.array)


@settings(max_examples=60, deadline=None)
@given(d=differences, shift=st.floats(min_value=-1.0, max_value=1.0))
def test_bootstrap_interval_properties(d: np.ndarray, shift: float) -> None:
    low, high = paired_bootstrap_interval(d, num=300)
    assert d.min() - 1e-12 <= low <= high <= d.max() + 1e-12
    moved = paired_bootstrap_interval(d + shift, num=300)
    assert moved == pytest.approx((low + shift, high + shift), abs=1e-9)
    wide = paired_bootstrap_interval(d, level=0.99, num=300)
    assert wide[0] <= low + 1e-12 and high <= wide[1] + 1e-12


# --- the paired permutation test -----------------------------------------------------------------

# Darwin's Zea mays: height differences of cross- and self-fertilised plants (Fisher, 1935).
DARWIN = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)


def enumerated_p(d: np.ndarray) -> float:
    """Every sign pattern, one at a time: the share whose |mean| reaches the observed one."""
    observed = abs(d.mean())
    hits = 0
    for signs in itertools.product([1.0, -1.0], repeat=d.size):
        hits += abs(float(np.dot(signs, d)) / d.size) >= observed - 1e-9
    return hits / 2**d.size


def test_permutation_test_enumerates_small_samples_exactly() -> None:
    d = DARWIN[:12]
    assert paired_permutation_p_value(d) == pytest.approx(enumerated_p(d), rel=1e-12)
    # scipy's permutation test, exact for one sample with all 2^12 sign flips
    scipy_p = stats.permutation_test(
        (d,), np.mean, vectorized=True, permutation_type="samples", n_resamples=np.inf
    ).pvalue
    assert paired_permutation_p_value(d) == pytest.approx(scipy_p, rel=1e-9)
    # Fisher's randomization test of Darwin's 15 pairs (all 32,768 patterns): p = 0.0527
    full = paired_permutation_p_value(DARWIN, num=2**15)
    assert full == pytest.approx(enumerated_p(DARWIN), rel=1e-12)
    assert round(full, 4) == 0.0527
    # the default draws 9,999 patterns: within Monte Carlo error of the exact value
    assert paired_permutation_p_value(DARWIN) == pytest.approx(full, abs=0.01)


def test_permutation_test_edge_cases() -> None:
    assert paired_permutation_p_value(np.zeros(5)) == 1.0
    assert paired_permutation_p_value(np.array([])) == 1.0
    # three losses: 2 of the 8 sign patterns are as extreme
    assert paired_permutation_p_value(np.array([-1.0, -1.0, -1.0])) == pytest.approx(0.25)
    # 24 of 40 cases lost a point: no random pattern reaches it, p = 1 / (9,999 + 1)
    lost = np.array([-1.0] * 24 + [0.0] * 16)
    assert paired_permutation_p_value(lost) == pytest.approx(1 / 10_000)


def test_the_mean_decides_where_a_rank_test_would_not() -> None:
    # 60 cases a little worse, 16 much better: the mean is up (+0.013), the ranks are down.
    d = np.array([-0.25] * 60 + [1.0] * 16)
    assert d.mean() > 0 and stats.wilcoxon(d).pvalue < 0.05  # a rank test: "significant"
    assert paired_permutation_p_value(d) > 0.5  # the mean barely moved: not significant


grid_differences = st.lists(st.integers(-20, 20), min_size=1, max_size=12).map(
    lambda values: np.array(values, dtype=float) / 20
)


@settings(max_examples=25, deadline=None)
@given(d=grid_differences, scale=st.floats(min_value=0.1, max_value=10.0))
def test_permutation_properties(d: np.ndarray, scale: float) -> None:
    p = paired_permutation_p_value(d)
    assert 0.0 < p <= 1.0
    assert paired_permutation_p_value(-d) == pytest.approx(p, rel=1e-9)  # two-sided
    assert paired_permutation_p_value(d * scale) == pytest.approx(p, rel=1e-9)  # scale-free
    assert p == pytest.approx(enumerated_p(d), rel=1e-9)


# --- compare_runs end to end ---------------------------------------------------------------------

NUM_CASES = 40
WRONG = frozenset(random.Random(3).sample(range(NUM_CASES), 24))  # the bad model's misses


def question(i: int) -> str:
    return f"compare question {i:02d}"


def reference(i: int) -> str:
    return f"Answer number {i:02d}." + " More detail." * (i % 4)


REFERENCES = {question(i): reference(i) for i in range(NUM_CASES)}


def good(messages: list[dict[str, Any]]) -> str:
    return REFERENCES[last_user_text(messages)]


def bad(messages: list[dict[str, Any]]) -> str:
    text = last_user_text(messages)
    return "I don't know." if int(text.rsplit(" ", 1)[1]) in WRONG else REFERENCES[text]


@dataclass
class Runs:
    dataset: Dataset
    results: dict[str, pl.DataFrame]  # run label -> read_results frame

    def compare(self, candidate: str, baseline: str, **options: Any) -> compare.Comparison:
        return compare_runs(
            self.results[candidate], self.results[baseline], self.dataset.cases, **options
        )


def _case(i: int) -> Case:
    messages = ({"role": "user", "content": question(i)},)
    # what production answered: gpt-4o, with its tokens and latency
    metadata = {
        "model": "gpt-4o",
        "input_tokens": str(100 + i),
        "output_tokens": str(20 + i),
        "latency_ms": str(100 + i),
    }
    return Case(case_id_of(messages), messages, reference=reference(i), metadata=metadata)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    data_dir = tmp_path_factory.mktemp("compare") / "lake"
    conn = open_catalog(data_dir)
    install_prices(conn)
    dataset = write_dataset(conn, data_dir, PROJECT, "qa", [_case(i) for i in range(NUM_CASES)])
    exact = [parse_evaluator("exact", context=EvaluatorContext())]
    answers = {"good": good, "bad": bad, "gpt-4o-mini": good}
    with pytest.MonkeyPatch.context() as patch, FakeOpenAI(answers=answers) as server:
        patch.setenv(KEY_ENV, "sk-test")

        def endpoint(model: str) -> Target:
            config = TargetConfig(server.base_url, model, api_key_env=KEY_ENV, backoff_s=0.0)
            return OpenAITarget(config)

        half = dict(list(reference_outputs(dataset).items())[:10])
        targets: dict[str, Target] = {
            "baseline": RecordedTarget(reference_outputs(dataset), "reference"),
            "good": endpoint("good"),
            "bad": endpoint("bad"),
            "priced": endpoint("gpt-4o-mini"),
            "failing": RecordedTarget(half, "reference"),  # 30 cases without an answer
        }
        results = {}
        for label, target in targets.items():
            with LakeWriter(data_dir) as writer:
                run = start_run(writer, PROJECT, dataset, target, ["exact"], name=label)
            replay(conn, data_dir, run, dataset, target, exact)
            results[label] = read_results(conn, PROJECT, [run.run_id])
    yield Runs(dataset, results)
    conn.close()


def test_an_equal_candidate_is_not_a_regression(runs: Runs) -> None:
    comparison = runs.compare("good", "baseline")
    item = comparison.evaluator("exact")
    assert (item.num_pairs, item.num_wins, item.num_losses, item.num_ties) == (40, 0, 0, 40)
    assert (item.mean_candidate, item.mean_baseline, item.mean_difference) == (1.0, 1.0, 0.0)
    assert item.interval == (0.0, 0.0) and item.p_value == 1.0
    assert not item.significant and item.verdict == "no significant change"
    assert comparison.regressions == []
    assert [e.evaluator for e in comparison.evaluators] == ["exact", "answered"]
    assert comparison.only_in_candidate == comparison.only_in_baseline == []


def test_a_worse_candidate_is_a_regression(runs: Runs) -> None:
    comparison = runs.compare("bad", "baseline")
    item = comparison.evaluator("exact")
    assert (item.num_wins, item.num_losses, item.num_ties) == (0, len(WRONG), 40 - len(WRONG))
    assert item.mean_candidate == pytest.approx(1 - len(WRONG) / 40)
    assert item.mean_difference == pytest.approx(-len(WRONG) / 40)
    # references computed another way: the per-case differences as planted
    planted = np.array([-1.0 if i in WRONG else 0.0 for i in range(NUM_CASES)])
    assert item.p_value == pytest.approx(paired_permutation_p_value(planted))
    assert item.p_value == pytest.approx(1 / 10_000)  # no random sign pattern goes that far
    low, high = item.interval
    assert -1.0 <= low < item.mean_difference < high < 0.0
    # the pairs are sorted by case id before resampling; any order gives the same distribution
    by_id = sorted(
        range(NUM_CASES), key=lambda i: case_id_of([{"role": "user", "content": question(i)}])
    )
    assert item.interval == paired_bootstrap_interval(planted[by_id])
    assert item.regression and item.verdict == "worse"
    assert comparison.regressions == ["exact"]
    assert not comparison.evaluator("answered").regression
    with pytest.raises(KeyError, match="no evaluator 'judge'"):
        comparison.evaluator("judge")
    # the other way round it is better, and not a regression
    reverse = runs.compare("baseline", "bad").evaluator("exact")
    assert reverse.verdict == "better" and not reverse.regression
    assert reverse.num_wins == len(WRONG)
    # at a strict enough level nothing is significant
    assert runs.compare("bad", "baseline", alpha=1e-12).regressions == []


def test_the_case_table_puts_regressed_cases_first(runs: Runs) -> None:
    cases = runs.compare("bad", "baseline").cases
    assert cases.height == NUM_CASES
    wrong_ids = {case_id_of([{"role": "user", "content": question(i)}]) for i in WRONG}
    head = cases.head(len(WRONG))
    assert set(head["case_id"]) == wrong_ids
    assert head["case_id"].to_list() == sorted(wrong_ids)
    assert set(head["score_difference"]) == {-1.0}
    assert set(cases.tail(40 - len(WRONG))["score_difference"]) == {0.0}
    first = head.row(0, named=True)
    i = int(first["input"].rsplit(" ", 1)[1])
    assert first["candidate_output"] == "I don't know."
    assert first["baseline_output"] == first["reference"] == reference(i)
    assert first["candidate_scores"] == "answered=1.00, exact=0.00"
    assert first["baseline_scores"] == "answered=1.00, exact=1.00"
    assert first["candidate_trace_id"] is not None and first["baseline_trace_id"] is None


def test_a_candidate_that_fails_more_regresses_on_answered(runs: Runs) -> None:
    comparison = runs.compare("failing", "baseline")
    answered = comparison.evaluator("answered")
    assert (answered.num_pairs, answered.num_losses, answered.num_ties) == (40, 30, 10)
    assert answered.regression
    # a failed case has no exact score: it is left out, not counted as a zero
    exact = comparison.evaluator("exact")
    assert (exact.num_pairs, exact.mean_candidate, exact.regression) == (10, 1.0, False)
    assert comparison.regressions == ["answered"]
    assert comparison.performance.num_pairs == 10


def _price(model: str, at: date) -> tuple[float, float]:
    """(input, output) USD per million tokens, read straight from the built-in price file."""
    text = resources.files("analytics").joinpath("prices.toml").read_text(encoding="utf-8")
    rows = [
        row
        for row in tomllib.loads(text)["price"]
        if row["model"] == model and row["effective_from"] <= at
    ]
    latest = max(rows, key=lambda row: row["effective_from"])
    return float(latest["input"]), float(latest["output"])


def test_latency_and_cost_are_compared_on_the_cases_both_answered(runs: Runs) -> None:
    comparison = runs.compare("priced", "baseline")
    assert comparison.regressions == []
    perf = comparison.performance
    assert perf.num_pairs == NUM_CASES
    today = datetime.now(UTC).date()
    mini_in, mini_out = _price("gpt-4o-mini", today)
    # the fake counts words as tokens
    candidate_usd = [
        (len(question(i).split()) * mini_in + len(reference(i).split()) * mini_out) / 1e6
        for i in range(NUM_CASES)
    ]
    big_in, big_out = _price("gpt-4o", today)
    baseline_usd = [((100 + i) * big_in + (20 + i) * big_out) / 1e6 for i in range(NUM_CASES)]
    assert perf.mean_cost_usd == pytest.approx((np.mean(candidate_usd), np.mean(baseline_usd)))
    assert perf.total_cost_usd == pytest.approx((sum(candidate_usd), sum(baseline_usd)))
    # the baseline's latencies are production's, 100..139 ms
    assert perf.median_latency_ms[1] == pytest.approx(119.5)
    assert perf.p95_latency_ms[1] == pytest.approx(100 + 0.95 * 39)
    latencies = runs.results["priced"]["latency_ms"].to_numpy()
    assert perf.median_latency_ms[0] == pytest.approx(np.median(latencies))
    assert perf.p95_latency_ms[0] == pytest.approx(np.percentile(latencies, 95))
    # a model without a price has no cost (not a zero)
    assert runs.compare("good", "baseline").performance.mean_cost_usd[0] is None


def test_only_the_cases_of_the_dataset_both_runs_have_are_paired(runs: Runs) -> None:
    ids = [c.case_id for c in runs.dataset.cases]
    candidate = runs.results["bad"].filter(~pl.col("case_id").is_in(ids[:2]))
    baseline = runs.results["baseline"].filter(~pl.col("case_id").is_in(ids[2:5]))
    cases = runs.dataset.cases[:-1]  # the last case is not asked about
    comparison = compare_runs(candidate, baseline, cases, candidate_name="c", baseline_name="b")
    assert comparison.only_in_candidate == sorted(ids[2:5])
    assert comparison.only_in_baseline == sorted(ids[:2])
    assert comparison.evaluator("exact").num_pairs == NUM_CASES - 6
    assert comparison.cases.height == NUM_CASES - 6
    assert ids[-1] not in set(comparison.cases["case_id"])
    assert (comparison.candidate, comparison.baseline) == ("c", "b")


def test_compare_runs_on_hand_made_frames() -> None:
    cases = [
        Case(case_id_of([{"role": "user", "content": q}]), ({"role": "user", "content": q},))
        for q in ("q1", "q2", "q3")
    ]
    at = datetime(2026, 5, 1, tzinfo=UTC)

    def frame(outputs: list[str | None], exact: list[float | None]) -> pl.DataFrame:
        rows = []
        for case, output, value in zip(cases, outputs, exact, strict=True):
            rows.append(
                {
                    "case_id": case.case_id,
                    "output": output,
                    "error": None if output is not None else "HTTP 500: boom",
                    "latency_ms": 10.0,
                    "model": "my-finetune",
                    "input_tokens": 1,
                    "output_tokens": 1,
                    "time": at,
                    "trace_id": None,
                    "scores": [] if value is None else [{"key": "exact", "value": value}],
                }
            )
        return pl.DataFrame(rows)

    comparison = compare_runs(
        frame(["a", "b", None], [1.0, 0.0, None]), frame(["a", "x", "c"], [0.0, 0.0, 1.0]), cases
    )
    exact = comparison.evaluator("exact")
    assert (exact.num_pairs, exact.num_wins, exact.num_ties) == (2, 1, 1)
    answered = comparison.evaluator("answered")
    assert (answered.num_losses, answered.num_ties) == (1, 2)
    assert comparison.performance.num_pairs == 2
    assert comparison.performance.mean_cost_usd == (None, None)  # no price for my-finetune
    assert comparison.cases["score_difference"].to_list() == [-1.0, 0.0, 1.0]


def test_output_diff() -> None:
    assert output_diff("same\ntext", "same\ntext") == ""
    assert output_diff(None, None) == ""
    diff = output_diff("one\ntwo\nthree", "one\n2\nthree")
    assert diff.splitlines() == [
        "--- baseline",
        "+++ candidate",
        "@@ -1,3 +1,3 @@",
        " one",
        "-two",
        "+2",
        " three",
    ]
    assert output_diff(None, "new").splitlines()[-1] == "+new"


def test_cost_usd_of_one_call() -> None:
    mini_in, mini_out = _price("gpt-4o-mini", date(2025, 1, 1))
    at = datetime(2025, 1, 1, tzinfo=UTC)
    got = compare.cost_usd("gpt-4o-mini-2024-07-18", 1000, 200, at)
    assert got == pytest.approx((1000 * mini_in + 200 * mini_out) / 1e6)
    assert compare.cost_usd("gpt-4o-mini", None, None, at) is None
    assert compare.cost_usd(None, 10, 10, at) is None
    assert compare.cost_usd("my-finetune", 10, 10, at) is None
    # before the model's first price there is none
    assert compare.cost_usd("gpt-4o-mini", 10, 10, datetime(2020, 1, 1, tzinfo=UTC)) is None
