"""Comparing a run with a baseline: per evaluator, with intervals, wins and a paired test.

Cases are paired by id; an evaluator is compared on the cases both runs scored. Per evaluator:
the mean score of each run, the mean paired difference (candidate − baseline) with a 95%
percentile bootstrap interval (cases resampled with replacement, 2,000 times, seeded), wins /
losses / ties, and the two-sided p-value of a paired sign-flip permutation test of the mean
difference (:func:`paired_permutation_p_value`; 1.0 when every pair ties), so a verdict's
direction and its significance come from the same statistic (a rank test can call a lower mean
"significantly better"). A change is *significant* when p < ``alpha``; a significant negative
difference is a **regression** (what ``flywheel eval compare --fail-if-worse`` gates on).
``answered`` (1 when the target answered, 0 when it failed) is compared like an evaluator, so
a candidate that errors more is caught too.

Latency and cost are compared on the cases both answered: median and p95 latency, mean cost
per case (from tokens and the price table at read time, as everywhere in Flywheel; None when
a model has no price). The case table puts the regressed cases first, each with both outputs
and a unified diff.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from analytics.cost import PriceTable, load_price_table, match_price_model
from evals.cases import Case

__all__ = [
    "ANSWERED",
    "Comparison",
    "EvaluatorComparison",
    "PerformanceComparison",
    "compare_runs",
    "cost_usd",
    "output_diff",
    "paired_bootstrap_interval",
    "paired_permutation_p_value",
]

#: The pseudo-evaluator every comparison includes: did the target answer.
ANSWERED = "answered"
NUM_BOOTSTRAP = 2000
NUM_PERMUTATIONS = 9999
_TIE = 1e-9
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def paired_bootstrap_interval(
    differences: np.ndarray, *, level: float = 0.95, num: int = NUM_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences.

    Args:
        differences: candidate − baseline, one per case.
        level: the interval's coverage.
        num: bootstrap resamples.
        seed: the generator's seed (the same data give the same interval).

    Returns:
        (low, high); (nan, nan) for no differences.

    >>> paired_bootstrap_interval(np.array([1.0, 1.0, 1.0]))
    (1.0, 1.0)
    """
    if differences.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(num, differences.size))
    means = differences[picks].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return (float(low), float(high))


def paired_permutation_p_value(
    differences: np.ndarray, *, num: int = NUM_PERMUTATIONS, seed: int = 0
) -> float:
    """Two-sided p-value of a paired sign-flip permutation test on the mean difference.

    Under "no difference" each case's difference is as likely to have either sign; the p-value
    is the share of sign patterns whose mean is at least as far from 0 as the one observed. All
    2^n patterns when that is at most ``num + 1``; otherwise ``num`` random ones (seeded),
    counting the observed one, so p is never 0. It tests the same statistic the verdict reads
    its direction from (the mean), unlike a rank test.

    Args:
        differences: candidate − baseline, one per case.
        num: random sign patterns when enumerating them all would take more.
        seed: the generator's seed (the same data give the same p).

    Returns:
        The p-value; 1.0 when nothing differs.

    >>> paired_permutation_p_value(np.array([1.0, 1.0, 1.0]))  # 2 of 8 patterns: all + or all -
    0.25
    >>> paired_permutation_p_value(np.zeros(4))
    1.0
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0 or not (np.abs(d) > _TIE).any():
        return 1.0
    observed = abs(d.mean())
    if 2**d.size <= num + 1:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        means = np.abs(signs @ d) / d.size
        return float(np.mean(means >= observed - _TIE))
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, num, 2000):  # in chunks: num × n signs at once could be large
        size = min(2000, num - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, d.size))
        extreme += int((np.abs(signs @ d) / d.size >= observed - _TIE).sum())
    return (extreme + 1) / (num + 1)


@dataclass(frozen=True)
class EvaluatorComparison:
    """One evaluator, candidate vs baseline, on the ``num_pairs`` cases both scored."""

    evaluator: str
    num_pairs: int
    mean_candidate: float
    mean_baseline: float
    mean_difference: float
    interval: tuple[float, float]
    num_wins: int
    num_losses: int
    num_ties: int
    p_value: float
    significant: bool

    @property
    def regression(self) -> bool:
        """Significantly worse."""
        return self.significant and self.mean_difference < 0

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` or ``no significant change``."""
        if not self.significant:
            return "no significant change"
        return "worse" if self.mean_difference < 0 else "better"


@dataclass(frozen=True)
class PerformanceComparison:
    """Latency and cost on the cases both runs answered (None: unknown)."""

    num_pairs: int
    median_latency_ms: tuple[float | None, float | None]
    p95_latency_ms: tuple[float | None, float | None]
    mean_cost_usd: tuple[float | None, float | None]
    total_cost_usd: tuple[float | None, float | None]


@dataclass(frozen=True)
class Comparison:
    """A run compared with a baseline: per evaluator, performance, and the cases.

    ``cases`` has one row per paired case, regressed first (lowest ``score_difference``, the
    sum over evaluators of candidate − baseline): ``case_id``, ``input``, ``reference``,
    ``candidate_output``, ``baseline_output``, ``candidate_error``, ``baseline_error``,
    ``score_difference``, ``candidate_scores`` and ``baseline_scores`` (evaluator → score, as
    text), ``candidate_trace_id``, ``baseline_trace_id`` (the replay traces; ``candidate_time`` and
    ``baseline_time``, when each result was stored, find them fast), ``source_trace_id``,
    ``source_time``, ``candidate_latency_ms``, ``baseline_latency_ms``.
    """

    candidate: str
    baseline: str
    alpha: float
    evaluators: list[EvaluatorComparison]
    performance: PerformanceComparison
    cases: pl.DataFrame
    only_in_candidate: list[str]
    only_in_baseline: list[str]

    def evaluator(self, name: str) -> EvaluatorComparison:
        """The comparison of one evaluator (KeyError naming the ones there are)."""
        for item in self.evaluators:
            if item.evaluator == name:
                return item
        known = [item.evaluator for item in self.evaluators]
        raise KeyError(f"no evaluator {name!r} in both runs; compared: {known}")

    @property
    def regressions(self) -> list[str]:
        """Evaluators that got significantly worse."""
        return [item.evaluator for item in self.evaluators if item.regression]


def cost_usd(
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    at: datetime,
    table: PriceTable | None = None,
) -> float | None:
    """A call's cost from its tokens and the price in force at ``at`` (None: no price or no
    tokens), the same rule as the ``llm_calls`` view without cached tokens."""
    if model is None or (input_tokens is None and output_tokens is None):
        return None
    table = table or load_price_table()
    price_model = match_price_model(model, table)
    if price_model is None:
        return None
    rows = [
        row
        for row in table.prices.to_pylist()
        if row["model"] == price_model and row["effective_from"] <= at
    ]
    if not rows:
        return None
    price = max(rows, key=lambda row: row["effective_from"])
    usd = (input_tokens or 0) * float(price["input_usd_per_mtok"]) + (output_tokens or 0) * float(
        price["output_usd_per_mtok"]
    )
    return usd / 1_000_000.0


def _sentences(text: str | None) -> list[str]:
    return [part for line in (text or "").splitlines() for part in _SENTENCE_END.split(line)]


def output_diff(baseline: str | None, candidate: str | None) -> str:
    """A unified diff of two outputs, a sentence per line (answers are often one long line,
    where a line diff would say only that it changed); empty when they are equal.

    >>> print(output_diff("Hi. Reset it in Settings.", "Hi. Reset it in Account."))
    --- baseline
    +++ candidate
    @@ -1,2 +1,2 @@
     Hi.
    -Reset it in Settings.
    +Reset it in Account.
    """
    before, after = _sentences(baseline), _sentences(candidate)
    return "\n".join(difflib.unified_diff(before, after, "baseline", "candidate", lineterm="", n=2))


def _scores_frame(results: pl.DataFrame) -> pl.DataFrame:
    """Long scores (case_id, evaluator, score), with ``answered`` for every result."""
    scored = (
        results.select("case_id", pl.col("scores").alias("s"))
        .explode("s")
        .drop_nulls("s")
        .select(
            "case_id",
            pl.col("s").struct.field("key").alias("evaluator"),
            pl.col("s").struct.field("value").alias("score"),
        )
        .drop_nulls("score")
    )
    answered = results.select(
        "case_id",
        pl.lit(ANSWERED).alias("evaluator"),
        pl.col("error").is_null().cast(pl.Float64).alias("score"),
    )
    return pl.concat([scored, answered])


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def compare_runs(
    candidate: pl.DataFrame,
    baseline: pl.DataFrame,
    cases: Sequence[Case],
    *,
    candidate_name: str = "candidate",
    baseline_name: str = "baseline",
    alpha: float = 0.05,
    prices: PriceTable | None = None,
    seed: int = 0,
) -> Comparison:
    """Compare two runs' latest results (:func:`evals.replay.read_results` frames) on the
    cases of ``cases`` both have."""
    by_id = {c.case_id: c for c in cases}
    cand = candidate.filter(pl.col("case_id").is_in(list(by_id)))
    base = baseline.filter(pl.col("case_id").is_in(list(by_id)))
    cand_ids, base_ids = set(cand["case_id"]), set(base["case_id"])
    long = _scores_frame(cand).join(
        _scores_frame(base), on=["case_id", "evaluator"], suffix="_baseline"
    )
    evaluators = []
    for name in sorted(set(long["evaluator"]), key=lambda n: (n == ANSWERED, n)):
        rows = long.filter(pl.col("evaluator") == name).sort("case_id")
        a = rows["score"].to_numpy()
        b = rows["score_baseline"].to_numpy()
        diff = a - b
        p = paired_permutation_p_value(diff, seed=seed)
        evaluators.append(
            EvaluatorComparison(
                evaluator=name,
                num_pairs=int(diff.size),
                mean_candidate=float(a.mean()),
                mean_baseline=float(b.mean()),
                mean_difference=float(diff.mean()),
                interval=paired_bootstrap_interval(diff, seed=seed),
                num_wins=int((diff > _TIE).sum()),
                num_losses=int((diff < -_TIE).sum()),
                num_ties=int((np.abs(diff) <= _TIE).sum()),
                p_value=p,
                significant=p < alpha,
            )
        )
    table = prices or load_price_table()
    joined = cand.join(base, on="case_id", suffix="_baseline")
    both = joined.filter(pl.col("error").is_null() & pl.col("error_baseline").is_null())
    costs: dict[str, list[float | None]] = {"": [], "_baseline": []}
    for row in both.to_dicts():
        for side in costs:
            costs[side].append(
                cost_usd(
                    row["model" + side],
                    row["input_tokens" + side],
                    row["output_tokens" + side],
                    row["time" + side],
                    table,
                )
            )

    def mean_cost(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known and len(known) == len(values) else None

    def total_cost(values: list[float | None]) -> float | None:
        return (
            float(sum(v for v in values if v is not None))
            if values and None not in values
            else None
        )

    latency = {
        side: [v for v in both["latency_ms" + side].to_list() if v is not None]
        for side in ("", "_baseline")
    }
    performance = PerformanceComparison(
        num_pairs=both.height,
        median_latency_ms=(_percentile(latency[""], 50), _percentile(latency["_baseline"], 50)),
        p95_latency_ms=(_percentile(latency[""], 95), _percentile(latency["_baseline"], 95)),
        mean_cost_usd=(mean_cost(costs[""]), mean_cost(costs["_baseline"])),
        total_cost_usd=(total_cost(costs[""]), total_cost(costs["_baseline"])),
    )
    return Comparison(
        candidate=candidate_name,
        baseline=baseline_name,
        alpha=alpha,
        evaluators=evaluators,
        performance=performance,
        cases=_case_table(joined, long, by_id),
        only_in_candidate=sorted(cand_ids - base_ids),
        only_in_baseline=sorted(base_ids - cand_ids),
    )


def _scores_text(rows: pl.DataFrame, column: str) -> str:
    return ", ".join(f"{e}={s:.2f}" for e, s in zip(rows["evaluator"], rows[column], strict=True))


def _case_table(joined: pl.DataFrame, long: pl.DataFrame, by_id: dict[str, Case]) -> pl.DataFrame:
    differences = long.group_by("case_id").agg(
        (pl.col("score") - pl.col("score_baseline")).sum().alias("score_difference")
    )
    per_case = {cid: frame for (cid,), frame in long.sort("evaluator").group_by("case_id")}
    rows = []
    for row in joined.join(differences, on="case_id", how="left").to_dicts():
        case = by_id[row["case_id"]]
        scores = per_case.get(row["case_id"], long.clear())
        rows.append(
            {
                "case_id": row["case_id"],
                "input": case.user_input,
                "reference": case.reference,
                "candidate_output": row["output"],
                "baseline_output": row["output_baseline"],
                "candidate_error": row["error"],
                "baseline_error": row["error_baseline"],
                "score_difference": row["score_difference"] or 0.0,
                "candidate_scores": _scores_text(scores, "score"),
                "baseline_scores": _scores_text(scores, "score_baseline"),
                "candidate_trace_id": row["trace_id"],
                "baseline_trace_id": row["trace_id_baseline"],
                "candidate_time": row["time"],
                "baseline_time": row["time_baseline"],
                "source_trace_id": case.source_trace_id,
                "source_time": case.source_time,
                "candidate_latency_ms": row["latency_ms"],
                "baseline_latency_ms": row["latency_ms_baseline"],
            }
        )
    schema: dict[str, pl.DataType] = {
        "case_id": pl.String(),
        "input": pl.String(),
        "reference": pl.String(),
        "candidate_output": pl.String(),
        "baseline_output": pl.String(),
        "candidate_error": pl.String(),
        "baseline_error": pl.String(),
        "score_difference": pl.Float64(),
        "candidate_scores": pl.String(),
        "baseline_scores": pl.String(),
        "candidate_trace_id": pl.String(),
        "baseline_trace_id": pl.String(),
        "candidate_time": pl.Datetime("us", "UTC"),
        "baseline_time": pl.Datetime("us", "UTC"),
        "source_trace_id": pl.String(),
        "source_time": pl.Datetime("us", "UTC"),
        "candidate_latency_ms": pl.Float64(),
        "baseline_latency_ms": pl.Float64(),
    }
    return pl.DataFrame(rows, schema=schema).sort(["score_difference", "case_id"])
