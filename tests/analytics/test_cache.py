"""Cache opportunity on planted traffic: exact and semantic hit rates equal the planted repeats
and paraphrases (their similarity measured here with the real model), each cache rule holds on
its own scenario, the risk rises with disagreeing answers, and ``nearest_earlier`` equals a
brute-force search."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from statsmodels.stats.proportion import proportion_confint

from analytics.cache import CacheRules, cache_calls, exact_cache_opportunity, simulate_exact_cache
from analytics.cost import install_prices
from analytics.scope import Scope
from analytics.semantic_cache import (
    DEFAULT_THRESHOLDS,
    MIN_HITS,
    SemanticCache,
    semantic_cache_opportunity,
    simulate_semantic_cache,
)
from store.catalog import open_catalog
from tests.analytics.opportunity_world import (
    AGREEING_VOTES,
    ANSWER_SHIFT,
    DAY,
    DIFFER,
    FAMILIES,
    ONE_VOTE,
    OPPOSITE_VOTES,
    REPEATS,
    RULES,
    SAME,
    SCENARIOS,
    Call,
    World,
    cache_world,
    cosines,
    ingest_world,
    paraphrase_similarity,
    slot,
)

NUM_REPEATS = sum(REPEATS.values())
#: answer_agreement of semantic_cache_opportunity (its default)
AGREEMENT = 0.8


@pytest.fixture(scope="module")
def world() -> World:
    return cache_world()


@pytest.fixture(scope="module")
def lake(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_world(tmp_path_factory.mktemp("cache") / "lake", world)


@pytest.fixture(scope="module")
def conn(lake: Path) -> duckdb.DuckDBPyConnection:
    conn = open_catalog(lake)
    install_prices(conn)
    return conn


def _day(service: str) -> Scope:
    return Scope("default", DAY, DAY + timedelta(days=1), services=(service,))


@dataclass(frozen=True)
class Planted:
    """What the planted texts measure: each family's paraphrase-to-question similarity, the
    highest similarity between two different families' inputs, and (in DIFFER) each
    paraphrase answer's similarity to the answer a cache would have served."""

    paraphrase_similarity: np.ndarray
    unrelated_max: float
    differ_answer_similarity: np.ndarray


@pytest.fixture(scope="module")
def planted(lake: Path) -> Planted:
    inputs = [q for q, _, _ in FAMILIES] + [p for _, p, _ in FAMILIES]
    sims = cosines(lake, inputs, inputs)
    family = np.tile(np.arange(len(FAMILIES)), 2)
    unrelated = sims[family[:, None] != family[None, :]]
    answers = [a for _, _, a in FAMILIES]
    shifted = answers[ANSWER_SHIFT:] + answers[:ANSWER_SHIFT]  # what DIFFER's paraphrases got
    return Planted(
        paraphrase_similarity=paraphrase_similarity(lake),
        unrelated_max=float(unrelated.max()),
        differ_answer_similarity=np.diag(cosines(lake, shifted, answers)),
    )


def test_the_planted_texts_are_what_the_tests_assume(planted: Planted) -> None:
    # unrelated questions stay far apart, so only the planted pairs can hit
    assert planted.unrelated_max < 0.7
    # the paraphrases spread over the default thresholds: some hit at 0.80 and not at 0.90,
    # some only below 0.80, some up to 0.95
    sims = planted.paraphrase_similarity
    assert (sims < 0.8).sum() >= 2 and ((sims >= 0.8) & (sims < 0.9)).sum() >= 4
    assert (sims >= 0.95).sum() >= 2
    assert sims[OPPOSITE_VOTES] >= 0.95 and sims[AGREEING_VOTES] >= 0.9
    # DIFFER's answers disagree with the ones a cache would have served
    assert planted.differ_answer_similarity.max() < AGREEMENT


def _cost(calls: list[Call]) -> float:
    return sum(c.cost_usd for c in calls)


def test_exact_hit_rate_equals_the_planted_repeats(
    world: World, conn: duckdb.DuckDBPyConnection
) -> None:
    calls = world.where(service=SAME)
    repeats = world.where(service=SAME, role="repeat")
    assert len(repeats) == NUM_REPEATS == 7 and len(calls) == 43
    exact = exact_cache_opportunity(conn, _day(SAME))
    assert exact.num_calls == len(calls)
    assert exact.num_hits == NUM_REPEATS
    assert exact.hit_rate == NUM_REPEATS / len(calls)
    # the time-sensitive and the user-specific input were each asked twice: never hits
    assert exact.num_excluded == {"time_sensitive": 2, "user_specific": 2}
    assert exact.saved_cost_usd == pytest.approx(_cost(repeats), rel=1e-12)
    assert exact.saved_latency_ms == pytest.approx(sum(c.duration_ms for c in repeats))
    assert exact.monthly_saving_usd == pytest.approx(_cost(repeats) * 30)  # a one-day window
    assert exact.ttl == timedelta(hours=1)
    # one row per repeated question, most hits first; the excluded inputs are not listed
    rows = exact.repeats.to_dicts()
    assert [r["num_hits"] for r in rows] == sorted(REPEATS.values(), reverse=True)
    by_text = {r["input_text"]: r for r in rows}
    assert set(by_text) == {FAMILIES[i][0] for i in REPEATS}
    for i, times in REPEATS.items():
        row = by_text[FAMILIES[i][0]]
        hits = world.where(service=SAME, family=i, role="repeat")
        assert (row["model"], row["num_calls"], row["num_hits"]) == ("gpt-4o", times + 1, times)
        assert row["saved_cost_usd"] == pytest.approx(_cost(hits), rel=1e-12)
    assert exact_cache_opportunity(conn, _day(SAME), num_repeats=2).repeats.height == 2


def test_cache_calls_lists_every_call_with_its_cost_and_exclusion(
    world: World, conn: duckdb.DuckDBPyConnection
) -> None:
    calls = cache_calls(conn, _day(SAME))
    planted = sorted(world.where(service=SAME), key=lambda c: c.start_ns)
    assert calls["trace_id"].to_list() == [c.trace_id for c in planted]
    assert calls["cost_usd"].to_list() == pytest.approx([c.cost_usd for c in planted], rel=1e-12)
    excluded = dict(zip(calls["input_text"], calls["excluded"], strict=True))
    assert excluded["What's the status of the payments service right now?"] == "time_sensitive"
    assert excluded["Why is my invoice for March higher than usual?"] == "user_specific"
    assert sum(v is None for v in calls["excluded"]) == len(planted) - 4
    # identical requests share a key; a paraphrase does not
    keys = dict(zip(calls["trace_id"], calls["input_key"], strict=True))
    [question] = world.where(service=SAME, family=0, role="question")
    repeats = world.where(service=SAME, family=0, role="repeat")
    [paraphrase] = world.where(service=SAME, family=0, role="paraphrase")
    assert {keys[c.trace_id] for c in repeats} == {keys[question.trace_id]}
    assert keys[paraphrase.trace_id] != keys[question.trace_id]


def _thresholds(planted: Planted) -> list[float]:
    """The default thresholds and one just under each paraphrase's similarity (so each step
    of the count is seen), all above what unrelated questions reach."""
    floor = planted.unrelated_max + 0.05
    sims = planted.paraphrase_similarity
    near = [round(s - 0.002, 4) for s in sims if s - 0.002 > floor]
    return sorted(t for t in {*DEFAULT_THRESHOLDS, *near} if np.abs(sims - t).min() > 1e-4)


def test_semantic_hits_equal_the_repeats_and_the_paraphrases_above_each_threshold(
    world: World, conn: duckdb.DuckDBPyConnection, planted: Planted
) -> None:
    thresholds = _thresholds(planted)
    sims = planted.paraphrase_similarity
    semantic = semantic_cache_opportunity(conn, _day(SAME), thresholds=thresholds)
    calls = world.where(service=SAME)
    repeats = world.where(service=SAME, role="repeat")
    paraphrases = world.where(service=SAME, role="paraphrase")
    assert (semantic.num_calls, semantic.num_eligible, semantic.num_compared) == (43, 39, 39)
    assert semantic.notes == []
    table = semantic.by_threshold.to_dicts()
    assert [r["threshold"] for r in table] == thresholds
    for row in table:
        t = row["threshold"]
        hit = [p for p in paraphrases if sims[p.family] >= t]
        assert row["num_hits"] == NUM_REPEATS + len(hit), t
        assert row["hit_rate"] == (NUM_REPEATS + len(hit)) / len(calls)
        saved = _cost(repeats + hit)
        assert row["saved_cost_usd"] == pytest.approx(saved, rel=1e-12)
        assert row["monthly_saving_usd"] == pytest.approx(saved * 30, rel=1e-12)
        latency = sum(c.duration_ms for c in repeats + hit)
        assert row["saved_latency_ms"] == pytest.approx(latency)
    # every step of the count was seen: from all sixteen paraphrases down to the repeats alone
    counts = [r["num_hits"] for r in table]
    assert counts[0] == NUM_REPEATS + len(FAMILIES) and counts[-1] == NUM_REPEATS


def _disagreeing(service: str, planted: Planted, t: float) -> int:
    """The hits at ``t`` whose served answer disagrees: in SAME the answers are equal and only
    the opposite votes disagree; in DIFFER every paraphrase answer is another question's."""
    sims = planted.paraphrase_similarity
    if service == SAME:
        return int(sims[OPPOSITE_VOTES] >= t)
    return int((sims >= t).sum())


@pytest.mark.parametrize("service", [SAME, DIFFER])
def test_disagreement_counts_the_planted_answers_and_votes(
    service: str, conn: duckdb.DuckDBPyConnection, planted: Planted
) -> None:
    semantic = semantic_cache_opportunity(conn, _day(service))
    for row in semantic.by_threshold.to_dicts():
        t = row["threshold"]
        expected = _disagreeing(service, planted, t)
        assert row["num_disagreeing"] == expected, (service, t)
        assert row["disagreement_rate"] == expected / row["num_hits"]
        low, high = proportion_confint(expected, row["num_hits"], method="wilson")
        assert (row["disagreement_low"], row["disagreement_high"]) == pytest.approx(
            (low, high), abs=1e-9
        )

    # the recommendation: the lowest threshold with enough hits whose risk is at most
    # max_risk with 95% confidence; 21 hits cannot show 5% (one disagreeing: 4.8%, up to 23%)
    def usable(result: SemanticCache) -> list[float]:
        return [
            r["threshold"]
            for r in result.by_threshold.to_dicts()
            if r["num_hits"] >= MIN_HITS and r["disagreement_high"] <= result.max_risk
        ]

    assert semantic.recommended is None and usable(semantic) == []
    assert "not recommended" in semantic.trade_off
    tolerant = semantic_cache_opportunity(conn, _day(service), max_risk=0.25)
    assert tolerant.recommended == (usable(tolerant) or [None])[0]
    if service == SAME:
        assert tolerant.recommended == 0.8  # 21 hits, one with opposite votes: 4.8%, up to 23%
        assert "would have answered 48.8% of calls" in tolerant.trade_off
        # 0.80 is the lowest threshold tried: nothing lower was left out for its risk
        assert "Lower thresholds" not in tolerant.trade_off
    else:
        assert tolerant.recommended is None


def test_disagreement_rises_when_paraphrases_carry_other_answers(
    conn: duckdb.DuckDBPyConnection, planted: Planted
) -> None:
    same = semantic_cache_opportunity(conn, _day(SAME)).by_threshold
    differ = semantic_cache_opportunity(conn, _day(DIFFER)).by_threshold
    assert same["num_hits"].to_list() == differ["num_hits"].to_list()
    for a, b in zip(same.to_dicts(), differ.to_dicts(), strict=True):
        if (planted.paraphrase_similarity >= a["threshold"]).sum() >= 2:  # paraphrases hit
            assert b["disagreement_rate"] > a["disagreement_rate"], a["threshold"]


def test_opposite_votes_disagree_even_with_equal_answers(
    world: World, conn: duckdb.DuckDBPyConnection
) -> None:
    """The examples show each hit with the answer served: in SAME the paraphrase voted down
    after its question was voted up disagrees; both voted up, or one vote, does not."""
    semantic = semantic_cache_opportunity(conn, _day(SAME), thresholds=(0.8,), num_examples=100)
    assert semantic.examples.height == 21  # every hit: 7 repeats, 14 paraphrases
    examples = {row["input_text"]: row for row in semantic.examples.to_dicts()}
    for family, disagrees in ((OPPOSITE_VOTES, True), (AGREEING_VOTES, False), (ONE_VOTE, False)):
        question, paraphrase, answer = FAMILIES[family]
        row = examples[paraphrase]
        assert (row["cached_input"], row["output_text"], row["cached_output"]) == (
            question, answer, answer,
        )  # fmt: skip
        assert row["answer_similarity"] == pytest.approx(1.0)
        assert row["disagrees"] is disagrees
        [cached] = world.where(service=SAME, family=family, role="question")
        assert row["cached_trace_id"] == cached.trace_id


def test_examples_are_the_hits_just_above_each_threshold(
    conn: duckdb.DuckDBPyConnection, planted: Planted
) -> None:
    thresholds = (0.8, 0.9, 0.95)
    semantic = semantic_cache_opportunity(conn, _day(SAME), thresholds=thresholds)
    sims = np.sort(planted.paraphrase_similarity)
    bands = {0.8: (0.8, 0.9), 0.9: (0.9, 0.95), 0.95: (0.95, 1.0)}
    questions = {p: q for q, p, _ in FAMILIES} | {q: q for q, _, _ in FAMILIES}
    for t, (low, high) in bands.items():
        rows = semantic.examples.filter(semantic.examples["threshold"] == t).to_dicts()
        # the repeats (similarity 1) are in the top band only
        in_band = [s for s in sims if low <= s < high] + ([1.0] * NUM_REPEATS if t == 0.95 else [])
        assert [r["similarity"] for r in rows] == pytest.approx(sorted(in_band)[:3], abs=1e-6)
        assert all(questions[r["input_text"]] == r["cached_input"] for r in rows)


@dataclass(frozen=True)
class Rule:
    """Which steps of a scenario hit: exact, exact per user, semantic, semantic per user; and
    what is excluded without and with ``per_user``."""

    exact: tuple[int, ...]
    exact_per_user: tuple[int, ...]
    semantic: tuple[int, ...]
    semantic_per_user: tuple[int, ...]
    excluded: dict[str, int]
    excluded_per_user: dict[str, int]


def _rule(hits: tuple[int, ...], **changes: object) -> Rule:
    fields: dict[str, object] = {
        "exact": hits, "exact_per_user": hits, "semantic": hits, "semantic_per_user": hits,
        "excluded": {}, "excluded_per_user": {},
    }  # fmt: skip
    return Rule(**(fields | changes))  # type: ignore[arg-type]


RULE_CASES = {
    # an hour after the first call ended is still a hit; an hour and a second is not
    "ttl": _rule((1,)),
    # the second call starts before the first ended: a miss; the third hits
    "overlap": _rule((2,)),
    # the third call starts while the second runs: the first one's answer is in the cache
    "concurrent": _rule((1, 2)),
    # calls that took no time: the first one is not its own cached answer
    "instant": _rule((1,)),
    "model": _rule(()),
    # temperature 0.7 is another request for an exact cache, the same text for a semantic one
    "params": _rule((2,), semantic=(1, 2), semantic_per_user=(1, 2)),
    # the first call failed: nothing to serve the second from; the third hits the second;
    # the fourth fails, but a cache would have answered it
    "failed": _rule((2, 3)),
    "system": _rule(()),
    # user-1, user-2, user-1: a shared cache serves both repeats, a cache per user one
    "users": _rule((1, 2), exact_per_user=(2,), semantic_per_user=(2,)),
    # the same with user.id on the root span only (where the OTel HTTP conventions put it)
    "users_on_root": _rule((1, 2), exact_per_user=(2,), semantic_per_user=(2,)),
    # "my invoice": excluded from a shared cache, kept (per user) in a cache per user
    "mine": _rule((), exact_per_user=(2,), semantic_per_user=(2,), excluded={"user_specific": 3}),
    "route": _rule((1,)),
}


def _scenario(world: World, name: str) -> list[Call]:
    return sorted(
        (c for c in world.where(service=RULES) if c.role.startswith(f"{name}-")),
        key=lambda c: int(c.role.rsplit("-", 1)[1]),
    )


def _slot_scope(name: str) -> Scope:
    start, end = slot(name)
    return Scope("default", start, end, services=(RULES,))


def test_every_rule_scenario_is_planted() -> None:
    assert set(RULE_CASES) == set(SCENARIOS)


@pytest.mark.parametrize("per_user", [False, True], ids=["shared", "per-user"])
@pytest.mark.parametrize("name", list(RULE_CASES))
def test_exact_cache_rules(
    name: str, per_user: bool, world: World, conn: duckdb.DuckDBPyConnection
) -> None:
    steps = _scenario(world, name)
    rule = RULE_CASES[name]
    hits = rule.exact_per_user if per_user else rule.exact
    exact = exact_cache_opportunity(conn, _slot_scope(name), CacheRules(per_user=per_user))
    assert exact.num_calls == len(steps)
    assert exact.num_hits == len(hits)
    assert exact.saved_cost_usd == pytest.approx(_cost([steps[i] for i in hits]), rel=1e-12)
    assert exact.num_excluded == (rule.excluded_per_user if per_user else rule.excluded)


@pytest.mark.parametrize("per_user", [False, True], ids=["shared", "per-user"])
@pytest.mark.parametrize("name", list(RULE_CASES))
def test_semantic_cache_rules(
    name: str, per_user: bool, world: World, conn: duckdb.DuckDBPyConnection
) -> None:
    steps = _scenario(world, name)
    rule = RULE_CASES[name]
    hits = rule.semantic_per_user if per_user else rule.semantic
    semantic = semantic_cache_opportunity(
        conn, _slot_scope(name), CacheRules(per_user=per_user), thresholds=(0.99,),
        num_examples=10,
    )  # fmt: skip
    [row] = semantic.by_threshold.to_dicts()
    assert row["num_hits"] == len(hits)
    assert row["saved_cost_usd"] == pytest.approx(_cost([steps[i] for i in hits]), rel=1e-12)
    assert sorted(semantic.examples["trace_id"]) == sorted(steps[i].trace_id for i in hits)


def test_excluded_routes_are_never_cached(world: World, conn: duckdb.DuckDBPyConnection) -> None:
    rules = CacheRules(exclude_routes=("POST /admin*",))
    exact = exact_cache_opportunity(conn, _slot_scope("route"), rules)
    assert (exact.num_calls, exact.num_hits, exact.num_excluded) == (2, 0, {"route": 2})
    # a glob that matches nothing changes nothing
    other = exact_cache_opportunity(
        conn, _slot_scope("route"), CacheRules(exclude_routes=("GET *",))
    )
    assert (other.num_hits, other.num_excluded) == (1, {})
    semantic = semantic_cache_opportunity(conn, _slot_scope("route"), rules, thresholds=(0.5,))
    assert (semantic.num_eligible, semantic.by_threshold["num_hits"][0]) == (0, 0)


def test_a_shorter_time_to_live_misses_the_hour_old_repeat(
    world: World, conn: duckdb.DuckDBPyConnection
) -> None:
    rules = CacheRules(ttl=timedelta(minutes=59))
    assert exact_cache_opportunity(conn, _slot_scope("ttl"), rules).num_hits == 0
    semantic = semantic_cache_opportunity(conn, _slot_scope("ttl"), rules, thresholds=(0.99,))
    assert semantic.by_threshold["num_hits"][0] == 0
    assert semantic.ttl == timedelta(minutes=59)
    with pytest.raises(ValueError, match="time to live"):
        CacheRules(ttl=timedelta(0))


def test_bad_thresholds_and_empty_scopes(conn: duckdb.DuckDBPyConnection) -> None:
    for bad in ((), (0.0,), (1.5,)):
        with pytest.raises(ValueError, match="thresholds"):
            semantic_cache_opportunity(conn, _day(SAME), thresholds=bad)
    empty = Scope(
        "default", datetime(2025, 1, 1, tzinfo=DAY.tzinfo), datetime(2025, 1, 2, tzinfo=DAY.tzinfo)
    )
    exact = exact_cache_opportunity(conn, empty)
    assert (exact.num_calls, exact.num_hits, exact.hit_rate, exact.saved_cost_usd) == (
        0,
        0,
        None,
        0.0,
    )
    semantic = semantic_cache_opportunity(conn, empty, thresholds=(0.9,))
    assert semantic.by_threshold.to_dicts()[0]["num_hits"] == 0
    assert semantic.by_threshold.to_dicts()[0]["hit_rate"] is None
    assert semantic.recommended is None and semantic.examples.height == 0


def test_max_calls_compares_the_most_recent(conn: duckdb.DuckDBPyConnection) -> None:
    semantic = semantic_cache_opportunity(conn, _day(SAME), thresholds=(0.99,), max_calls=10)
    assert (semantic.num_eligible, semantic.num_compared) == (39, 10)
    assert semantic.notes[0].startswith("simulated the most recent 10 of 39 calls")
    # the rates are of the span those 10 calls cover, not of the whole window
    calls = cache_calls(conn, _day(SAME))
    first = calls.filter(pl.col("excluded").is_null())["start_time"].tail(10)[0]
    in_span = calls.filter(pl.col("counted") & (pl.col("start_time") >= first)).height
    row = semantic.by_threshold.row(0, named=True)
    assert row["hit_rate"] == pytest.approx(row["num_hits"] / in_span)


# --- the simulations against one-step-at-a-time references -----------------------------------


def _semantic_reference(
    vectors: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    stores: np.ndarray,
    ttl: int,
    thresholds: list[float],
) -> tuple[list[list[int]], list[list[float]]]:
    """One call at a time, one threshold at a time: the most similar stored entry that is live
    (stored by a miss that ended before the call started, at most ``ttl`` before); a miss that
    may store, stores. The earliest entry on a tie."""
    entries, sims = [], []
    for threshold in thresholds:
        stored: list[int] = []
        entry, sim = [], []
        for i in range(len(vectors)):
            found, best = -1, -np.inf
            for j in stored:
                if ends[j] < starts[i] and starts[i] - ends[j] <= ttl:
                    s = float(np.round(vectors[i] @ vectors[j], 6))
                    if s > best:
                        found, best = j, s
            entry.append(found)
            sim.append(best)
            if not best >= threshold and stores[i]:
                stored.append(i)
        entries.append(entry)
        sims.append(sim)
    return entries, sims


def _exact_reference(
    keys: list[str], starts: np.ndarray, ends: np.ndarray, stores: np.ndarray, ttl: int
) -> list[bool]:
    hits, stored = [], {}
    for i, key in enumerate(keys):
        live = [e for e in stored.get(key, []) if e < starts[i] and starts[i] - e <= ttl]
        hit = bool(live) and starts[i] - max(e for e in stored[key] if e < starts[i]) <= ttl
        hits.append(hit)
        if not hit and stores[i]:
            stored.setdefault(key, []).append(int(ends[i]))
    return hits


def _random_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dims = int(rng.integers(2, 6))
    vectors = rng.normal(size=(n, dims))
    if n > 3:  # some duplicates: ties go to the earliest row
        vectors[rng.integers(0, n, n // 3)] = vectors[0]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    starts = np.sort(rng.integers(0, 400, n))
    # many calls take no time at all; some take long
    durations = np.where(rng.random(n) < 0.3, 0, rng.integers(0, 60, n))
    durations[rng.random(n) < 0.05] = 300
    return vectors, starts.astype(np.int64), (starts + durations).astype(np.int64)


@pytest.mark.parametrize("seed", range(40))
def test_semantic_simulation_equals_a_call_by_call_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([0, 1, 2, 3, 8, 40, 150]))
    vectors, starts, ends = _random_rows(rng, n)
    stores = rng.random(n) > 0.1  # some failed calls: they store nothing
    ttl = int(rng.choice([0, 5, 30, 100, 1000]))
    thresholds = [0.0, 0.5, 0.9, 1.0]
    entries_ref, sims_ref = _semantic_reference(vectors, starts, ends, stores, ttl, thresholds)
    for block in (1, 3, 16, 1024):
        entry, sim = simulate_semantic_cache(
            vectors, starts, ends, stores, ttl, thresholds, block=block
        )
        assert entry.tolist() == entries_ref, (seed, block)
        for got, expected in zip(sim.tolist(), sims_ref, strict=True):
            assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_exact_simulation_equals_a_call_by_call_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.choice([0, 1, 5, 60, 200]))
    _, starts, ends = _random_rows(rng, n)
    keys = [str(k) for k in rng.integers(0, 4, n)]
    stores = rng.random(n) > 0.1
    ttl = int(rng.choice([0, 5, 30, 100, 1000]))
    hits = simulate_exact_cache(keys, starts, ends, stores, ttl)
    assert hits.tolist() == _exact_reference(keys, starts, ends, stores, ttl)


def test_a_hit_does_not_refresh_the_entry() -> None:
    # asked every 50 minutes, a 1-hour time to live: the answer stored at 0:01 serves 0:50 but
    # is too old at 1:40, which misses and stores again
    minute = 60
    starts = np.array([0, 50, 100, 150]) * minute
    ends = starts + minute
    hits = simulate_exact_cache(["q"] * 4, starts, ends, np.ones(4, bool), 60 * minute)
    assert hits.tolist() == [False, True, False, True]
    vectors = np.tile([[1.0, 0.0]], (4, 1))
    entry, _ = simulate_semantic_cache(vectors, starts, ends, np.ones(4, bool), 60 * minute, [0.9])
    assert entry[0].tolist() == [-1, 0, -1, 2]  # the 2:30 call is served 1:40's answer


def test_a_call_is_never_its_own_entry() -> None:
    # calls that took no time: each has "ended" when it starts, but is not earlier than itself
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    starts = np.array([0, 10, 10])
    entry, sim = simulate_semantic_cache(
        vectors, starts, starts.copy(), np.ones(3, bool), 100, [0.9]
    )
    assert entry.tolist() == [[-1, 0, 0]]
    assert sim[0].tolist() == pytest.approx([-np.inf, 0.0, 0.6])
