"""Routing opportunity on planted intents: the cheap model is recommended where its planted
thumbs-down rate equals the expensive one's and not where it is worse; costs, rates, intervals
and the monthly saving against references computed here; eval scores can veto or decide; the
k-means intents and the bootstrap against slow references."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from statistics import mean, median

import duckdb
import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from analytics.cost import install_prices
from analytics.drift import cluster_topics
from analytics.embeddings import embed_texts
from analytics.routing import Routing, bootstrap_mean_difference, routing_opportunity
from analytics.scope import Scope
from evals.cases import Case, Completion, Score
from evals.datasets import write_dataset
from evals.evaluators import per_case
from evals.replay import reference_outputs, replay, start_run
from evals.targets import RecordedTarget
from store.catalog import open_catalog
from store.writer import LakeWriter
from tests.analytics.opportunity_world import (
    CALLS_PER_MODEL,
    CHEAP,
    EXPENSIVE,
    INTENTS,
    ROUTING_DAYS,
    ROUTING_START,
    VOTES,
    Call,
    World,
    ingest_world,
    routing_world,
)

SCOPE = Scope("default", ROUTING_START, ROUTING_START + timedelta(days=ROUTING_DAYS))
#: wide enough for 60 votes a model to show "as good" (the default 2 points needs ~1,700)
MARGIN = 0.15
#: eval scores planted on production's answers: "judge" (password only) says the cheap model
#: is much worse; "steady" (password and kubernetes) scores every answer 0.75.
JUDGE = {EXPENSIVE: (0.8, 1.0), CHEAP: (0.3, 0.5)}


def _judge(call: Call) -> float:
    low, high = JUDGE[call.model]
    return low if call.trace % 2 else high


def _plant_eval_run(conn: duckdb.DuckDBPyConnection, data_dir: Path, world: World) -> None:
    """An eval run that re-scores production's answers (recorded references) of the password
    and kubernetes calls, through evals' own dataset, target and replay."""
    calls = {f"case-{c.trace}": c for c in world.calls if c.role in ("password", "kubernetes")}
    cases = [
        Case(case_id=case_id, messages=({"role": "user", "content": c.input_text},),
             reference=c.output_text, source_trace_id=c.trace_id, source_span_id=c.span_id)
        for case_id, c in calls.items()
    ]  # fmt: skip
    dataset = write_dataset(conn, data_dir, "default", "production-answers", cases)
    target = RecordedTarget(reference_outputs(dataset), "reference")

    def judge(case: Case, completion: Completion) -> Score:
        call = calls[case.case_id]
        return Score(_judge(call)) if call.role == "password" else Score(None, "not judged")

    evaluators = [per_case("judge", judge), per_case("steady", lambda case, done: 0.75)]
    with LakeWriter(data_dir) as writer:
        run = start_run(writer, "default", dataset, target, ["judge", "steady"])
    summary = replay(conn, data_dir, run, dataset, target, evaluators, concurrency=1)
    assert (summary.num_called, summary.num_errors) == (len(cases), 0)


@pytest.fixture(scope="module")
def world() -> World:
    return routing_world()


@pytest.fixture(scope="module")
def lake(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = ingest_world(tmp_path_factory.mktemp("routing") / "lake", world)
    _plant_eval_run(open_catalog(data_dir), data_dir, world)
    return data_dir


@pytest.fixture(scope="module")
def conn(lake: Path) -> duckdb.DuckDBPyConnection:
    conn = open_catalog(lake)
    install_prices(conn)
    return conn


@pytest.fixture(scope="module")
def routing(conn: duckdb.DuckDBPyConnection) -> Routing:
    return routing_opportunity(conn, SCOPE, num_intents=3, margin=MARGIN, eval_metric=None)


def _intent_names(routing: Routing) -> dict[int, str]:
    """Each found intent's planted name, from its examples (asserting they agree)."""
    names: dict[int, str] = {}
    for row in routing.intents.to_dicts():
        found = {_planted_intent(text) for text in row["examples"]}
        assert len(found) == 1, row
        names[row["intent"]] = found.pop()
    return names


def _planted_intent(text: str) -> str:
    for name, templates in INTENTS.items():
        for template in templates:
            head, tail = template.split("{n}")
            if text.startswith(head) and text.endswith(tail):
                return name
    raise AssertionError(f"not a planted input: {text}")


def _calls(world: World, intent: str, model: str) -> list[Call]:
    return world.where(role=intent, model=model)


def test_intents_are_the_planted_ones(world: World, routing: Routing) -> None:
    names = _intent_names(routing)
    assert sorted(names.values()) == sorted(INTENTS)
    assert routing.num_calls == routing.num_sampled == len(world.calls) == 360
    assert routing.intents["num_calls"].to_list() == [2 * CALLS_PER_MODEL] * 3
    assert routing.intents["share"].to_list() == pytest.approx([1 / 3] * 3)
    assert all(len(examples) == 3 for examples in routing.intents["examples"])


def test_model_stats_equal_the_planted_calls_and_votes(world: World, routing: Routing) -> None:
    names = _intent_names(routing)
    rows = routing.by_model.to_dicts()
    assert len(rows) == 6
    for row in rows:
        intent, model = names[row["intent"]], row["model"]
        calls = _calls(world, intent, model)
        votes, down = VOTES[intent][model]
        assert row["num_calls"] == len(calls) == CALLS_PER_MODEL
        assert row["share_of_intent"] == 0.5
        assert row["mean_cost_usd"] == pytest.approx(mean(c.cost_usd for c in calls), rel=1e-12)
        assert row["median_latency_ms"] == pytest.approx(median(c.duration_ms for c in calls))
        assert (row["votes"], row["thumbs_down"]) == (votes, down)
        assert row["thumbs_down_rate"] == down / votes
        low, high = proportion_confint(down, votes, method="wilson")
        assert (row["down_low"], row["down_high"]) == pytest.approx((low, high), abs=1e-9)
        assert (row["num_scored"], row["eval_score"]) == (0, None)  # eval_metric=None
    # the most expensive model of each intent first
    for i in range(0, 6, 2):
        assert (rows[i]["model"], rows[i + 1]["model"]) == (EXPENSIVE, CHEAP)


def _saving(world: World, intent: str) -> float:
    """(mean cost of the expensive model − of the cheap one) × the expensive model's calls,
    over a month: the sample is every call, the window ROUTING_DAYS days."""
    expensive, cheap = _calls(world, intent, EXPENSIVE), _calls(world, intent, CHEAP)
    per_call = mean(c.cost_usd for c in expensive) - mean(c.cost_usd for c in cheap)
    return per_call * len(expensive) * 30 / ROUTING_DAYS


def test_the_cheap_model_is_recommended_where_it_does_as_well(
    world: World, routing: Routing
) -> None:
    names = _intent_names(routing)
    [row] = routing.recommendations.to_dicts()
    assert names[row["intent"]] == "password"
    assert (row["from_model"], row["to_model"], row["reason"]) == (EXPENSIVE, CHEAP, "does as well")
    assert row["monthly_saving_usd"] == pytest.approx(_saving(world, "password"), rel=1e-12)
    assert row["monthly_calls"] == pytest.approx(CALLS_PER_MODEL * 30 / ROUTING_DAYS)
    assert row["from_cost_usd"] == pytest.approx(
        mean(c.cost_usd for c in _calls(world, "password", EXPENSIVE)), rel=1e-12
    )
    # 6 of 60 down on each: no difference, and Newcombe's interval lies under the margin
    low, high = confint_proportions_2indep(6, 60, 6, 60, method="newcomb", compare="diff")
    assert row["down_difference"] == 0.0
    assert (row["down_low"], row["down_high"]) == pytest.approx((low, high), abs=1e-9)
    assert high < MARGIN


def test_no_recommendation_where_the_cheap_model_is_worse_or_unjudged(
    world: World, routing: Routing
) -> None:
    names = _intent_names(routing)
    candidates = {names[r["intent"]]: r for r in routing.candidates.to_dicts()}
    assert set(candidates) == set(INTENTS)
    invoice = candidates["invoice"]
    assert not invoice["recommended"]
    assert invoice["down_difference"] == pytest.approx(24 / 60 - 6 / 60)
    low, high = confint_proportions_2indep(24, 60, 6, 60, method="newcomb", compare="diff")
    assert (invoice["down_low"], invoice["down_high"]) == pytest.approx((low, high), abs=1e-9)
    assert invoice["reason"].startswith("thumbs-down rate +30.0% (95% up to")
    # what it would have saved is still shown
    assert invoice["monthly_saving_usd"] == pytest.approx(_saving(world, "invoice"), rel=1e-12)
    # kubernetes: 10 votes on the cheap model are too few to judge, and there is no eval score
    kubernetes = candidates["kubernetes"]
    assert not kubernetes["recommended"] and kubernetes["down_difference"] is None
    assert kubernetes["reason"] == "fewer than 20 votes or eval scores on each model"


def test_the_default_margin_needs_more_votes_than_planted(conn: duckdb.DuckDBPyConnection) -> None:
    routing = routing_opportunity(conn, SCOPE, num_intents=3, eval_metric=None)
    assert routing.margin == 0.05 and routing.recommendations.is_empty()
    names = _intent_names(routing)
    [password] = [r for r in routing.candidates.to_dicts() if names[r["intent"]] == "password"]
    assert "margin 5%" in password["reason"] and password["down_difference"] == 0.0


def test_eval_scores_veto_a_recommendation(world: World, conn: duckdb.DuckDBPyConnection) -> None:
    routing = routing_opportunity(conn, SCOPE, num_intents=3, margin=MARGIN, eval_metric="judge")
    names = _intent_names(routing)
    assert routing.recommendations.is_empty()
    scored = {
        (names[r["intent"]], r["model"]): (r["num_scored"], r["eval_score"])
        for r in routing.by_model.to_dicts()
    }
    for model in (EXPENSIVE, CHEAP):
        calls = _calls(world, "password", model)
        assert scored[("password", model)] == (60, pytest.approx(mean(map(_judge, calls))))
        assert scored[("kubernetes", model)] == (0, None)  # the judge skipped them
    [password] = [r for r in routing.candidates.to_dicts() if names[r["intent"]] == "password"]
    cheap = np.array([_judge(c) for c in _calls(world, "password", CHEAP)])
    expensive = np.array([_judge(c) for c in _calls(world, "password", EXPENSIVE)])
    assert password["eval_difference"] == pytest.approx(cheap.mean() - expensive.mean())
    # the bootstrap runs on the scores in the order the calls were sampled, so only where the
    # interval lies is checked here (about ±0.036 around −0.5; the bootstrap is checked below)
    assert -0.6 < password["eval_low"] < -0.5 < password["eval_high"] < -0.4
    assert password["reason"].startswith("eval score -0.500 (95% down to")
    # the votes alone would have recommended it
    assert password["down_difference"] == 0.0


def test_an_eval_score_can_be_the_only_quality_signal(
    world: World, conn: duckdb.DuckDBPyConnection
) -> None:
    routing = routing_opportunity(conn, SCOPE, num_intents=3, margin=MARGIN, eval_metric="steady")
    names = _intent_names(routing)
    recommended = {names[r["intent"]]: r for r in routing.recommendations.to_dicts()}
    assert set(recommended) == {"password", "kubernetes"}
    kubernetes = recommended["kubernetes"]
    assert kubernetes["down_difference"] is None  # too few votes: the eval score decided
    assert (kubernetes["eval_difference"], kubernetes["eval_low"], kubernetes["eval_high"]) == (
        0.0, 0.0, 0.0,
    )  # fmt: skip
    assert kubernetes["monthly_saving_usd"] == pytest.approx(_saving(world, "kubernetes"))
    # largest saving first
    savings = routing.recommendations["monthly_saving_usd"].to_list()
    assert savings == sorted(savings, reverse=True)


def test_a_sample_scales_the_saving_to_every_call(conn: duckdb.DuckDBPyConnection) -> None:
    routing = routing_opportunity(
        conn, SCOPE, num_intents=3, margin=MARGIN, eval_metric=None, sample_size=300
    )
    assert (routing.num_calls, routing.num_sampled) == (360, 300)
    assert routing.intents["num_calls"].sum() == 300
    stats = {(r["intent"], r["model"]): r for r in routing.by_model.to_dicts()}
    for row in routing.candidates.to_dicts():
        top = stats[(row["intent"], row["from_model"])]
        cheap = stats[(row["intent"], row["to_model"])]
        scale = (360 / 300) * (30 / ROUTING_DAYS)
        assert row["monthly_calls"] == pytest.approx(top["num_calls"] * scale)
        per_call = top["mean_cost_usd"] - cheap["mean_cost_usd"]
        assert row["monthly_saving_usd"] == pytest.approx(per_call * top["num_calls"] * scale)
    # the sample is seeded: the same seed draws the same calls, another seed others
    again = routing_opportunity(
        conn, SCOPE, num_intents=3, margin=MARGIN, eval_metric=None, sample_size=300
    )
    assert again.by_model.equals(routing.by_model)
    other = routing_opportunity(
        conn, SCOPE, num_intents=3, margin=MARGIN, eval_metric=None, sample_size=300, seed=1
    )
    assert not other.by_model.equals(routing.by_model)


def test_too_few_calls_for_the_intents(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="360 calls are too few for 400 intents"):
        routing_opportunity(conn, SCOPE, num_intents=400)
    empty = Scope("default", SCOPE.start - timedelta(days=2), SCOPE.start)
    with pytest.raises(ValueError, match="0 calls are too few"):
        routing_opportunity(conn, empty)


def test_cluster_topics_finds_the_planted_intents(world: World, lake: Path) -> None:
    texts = [c.input_text for c in world.calls]
    planted = np.array([list(INTENTS).index(c.role) for c in world.calls])
    vectors = embed_texts(texts, lake).vectors
    labels, distances = cluster_topics(vectors, 3, seed=0)
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    # one topic per planted intent, and the other way round
    pairs = set(zip(labels.tolist(), planted.tolist(), strict=True))
    assert len(pairs) == 3
    # the distance is to the topic's centre: the mean of its members (k-means converged)
    for topic in range(3):
        members = vectors[labels == topic].astype(np.float64)
        centre = members.mean(axis=0)
        expected = np.linalg.norm(members - centre, axis=1)
        assert distances[labels == topic] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    again, _ = cluster_topics(vectors, 3, seed=0)
    assert (again == labels).all()


# --- bootstrap_mean_difference ----------------------------------------------------------------


def _bootstrap_reference(a: np.ndarray, b: np.ndarray, num: int, seed: int) -> tuple[float, float]:
    """One resample at a time (a's first, then b's, as the generator is drawn), and the 2.5th
    and 97.5th percentiles by linear interpolation between the sorted differences."""
    rng = np.random.default_rng(seed)
    means_a = [sum(a[i] for i in rng.integers(0, a.size, a.size)) / a.size for _ in range(num)]
    means_b = [sum(b[i] for i in rng.integers(0, b.size, b.size)) / b.size for _ in range(num)]
    diffs = sorted(x - y for x, y in zip(means_a, means_b, strict=True))

    def percentile(q: float) -> float:
        position = q * (num - 1)
        below = int(position)
        above = min(below + 1, num - 1)
        return diffs[below] + (diffs[above] - diffs[below]) * (position - below)

    return percentile(0.025), percentile(0.975)


@pytest.mark.parametrize(
    ("size_a", "size_b", "num", "seed"),
    [(1, 1, 50, 0), (1, 7, 200, 1), (5, 3, 101, 2), (30, 45, 400, 3), (12, 12, 2000, 4)],
)
def test_bootstrap_equals_a_slow_reference(size_a: int, size_b: int, num: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    a = rng.normal(0.6, 0.2, size_a)
    b = rng.exponential(0.3, size_b)
    got = bootstrap_mean_difference(a, b, num=num, seed=seed)
    assert got == pytest.approx(_bootstrap_reference(a, b, num, seed), abs=1e-12)


def test_bootstrap_is_the_normal_interval_on_large_samples() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(0.7, 0.2, 800), rng.normal(0.6, 0.3, 600)
    low, high = bootstrap_mean_difference(a, b, num=4000)
    diff = a.mean() - b.mean()
    half = 1.959964 * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert low == pytest.approx(diff - half, abs=0.1 * half)
    assert high == pytest.approx(diff + half, abs=0.1 * half)
    # constant scores: no spread at all
    assert bootstrap_mean_difference(np.full(5, 0.4), np.full(9, 0.9)) == pytest.approx(
        (-0.5, -0.5)
    )
