"""Explicit feedback on a seeded world with known effects: counts match the generator, the
seeded effects are found with the right sign and an interval that excludes zero, and the
features without an effect are not."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from analytics.feedback import (
    feedback_by_segment,
    feedback_by_time,
    feedback_summary,
    newcombe_interval,
    thumbs_down_drivers,
    thumbs_votes,
)
from analytics.scope import Scope
from analytics.traces import TraceFilter, list_traces
from store.catalog import open_catalog
from tests.analytics.feedback_world import (
    DAYS,
    PROMPT_CHANGE_DAY,
    START,
    World,
    ingest_world,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    data_dir = tmp_path_factory.mktemp("feedback") / "lake"
    return ingest_world(data_dir), data_dir


def _scope(first: int = 0, last: int = DAYS) -> Scope:
    return Scope("default", START + timedelta(days=first), START + timedelta(days=last))


def _prompt_hashes(data_dir: Path) -> tuple[str, str]:
    """The system prompt hashes before and after the change, as the lake has them."""
    votes = thumbs_votes(open_catalog(data_dir), _scope())
    change = START + timedelta(days=PROMPT_CHANGE_DAY)
    [v1] = votes.filter(pl.col("start_time") < change)["system_prompt_hash"].unique()
    [v2] = votes.filter(pl.col("start_time") >= change)["system_prompt_hash"].unique()
    return v1, v2


def test_the_summary_counts_what_was_generated(world: tuple[World, Path]) -> None:
    generated, data_dir = world
    summary = feedback_summary(open_catalog(data_dir), _scope())
    votes = [t.thumbs for t in generated.turns if t.thumbs is not None]
    assert summary.num_requests == len(generated.turns)
    assert summary.thumbs_up == votes.count(1) and summary.thumbs_down == votes.count(-1)
    assert summary.num_edits == sum(t.edit is not None for t in generated.turns)
    with_feedback = {t.trace_id for t in generated.turns if t.thumbs or t.edit}
    assert summary.num_with_feedback == len(with_feedback)
    assert summary.thumbs_down_rate == pytest.approx(votes.count(-1) / len(votes))
    low, high = summary.thumbs_down_interval or (0, 0)
    assert low < summary.thumbs_down_rate < high


def test_late_votes_count_for_the_day_of_their_trace(world: tuple[World, Path]) -> None:
    generated, data_dir = world
    by_day = feedback_by_time(open_catalog(data_dir), _scope(), timedelta(days=1))
    assert by_day.height == DAYS
    expected = [0] * DAYS
    for turn in generated.turns:
        if turn.thumbs == -1:
            expected[(turn.start - START).days] += 1
    assert by_day["thumbs_down"].to_list() == expected
    assert by_day["requests"].sum() == len(generated.turns)


def test_the_prompt_change_raises_the_thumbs_down_rate(world: tuple[World, Path]) -> None:
    _, data_dir = world
    segments = feedback_by_segment(open_catalog(data_dir), _scope(), "prompt")
    rows = {r["segment"]: r for r in segments.iter_rows(named=True)}
    v1_hash, v2_hash = _prompt_hashes(data_dir)
    v1, v2 = rows[v1_hash], rows[v2_hash]
    assert v2["diff_vs_rest"] > 0 and v2["diff_low"] > 0
    assert v1["diff_high"] < 0
    # the daily series moves on the change day too
    by_day = feedback_by_time(open_catalog(data_dir), _scope(), timedelta(days=1))
    before = by_day[:PROMPT_CHANGE_DAY]
    after = by_day[PROMPT_CHANGE_DAY:]
    rate = lambda f: f["thumbs_down"].sum() / (f["thumbs_down"].sum() + f["thumbs_up"].sum())  # noqa: E731
    assert rate(after) > rate(before) + 0.1


def test_the_two_models_do_not_differ(world: tuple[World, Path]) -> None:
    _, data_dir = world
    segments = feedback_by_segment(open_catalog(data_dir), _scope(), "model")
    assert segments.height == 2
    for row in segments.iter_rows(named=True):
        assert row["diff_low"] < 0 < row["diff_high"], row


def test_segment_rates_match_a_count_of_the_votes(world: tuple[World, Path]) -> None:
    generated, data_dir = world
    segments = feedback_by_segment(open_catalog(data_dir), _scope(), "route")
    for row in segments.iter_rows(named=True):
        votes = [t.thumbs for t in generated.turns if t.route == row["segment"] and t.thumbs]
        assert row["votes"] == len(votes)
        assert row["thumbs_down"] == votes.count(-1)


def test_newcombe_interval_against_a_published_example() -> None:
    # Newcombe (1998), Table II, example (a): 56/70 − 48/80 → 0.0524 to 0.3339
    low, high = newcombe_interval(56, 70, 48, 80) or (0, 0)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    assert newcombe_interval(0, 0, 1, 2) is None


def test_ttft_and_the_prompt_drive_thumbs_down_and_tokens_and_model_do_not(
    world: tuple[World, Path],
) -> None:
    _, data_dir = world
    drivers = thumbs_down_drivers(open_catalog(data_dir), _scope())
    effects = {r["feature"]: r for r in drivers.effects.iter_rows(named=True)}
    ttft = effects["ttft_ms"]
    assert ttft["odds_ratio"] > 1 and ttft["low"] > 1 and ttft["supported"]
    v1_hash, v2_hash = _prompt_hashes(data_dir)
    # one-hot against the most common prompt: whichever is the reference, the other's odds
    # of a thumbs-down point the seeded way
    if f"system_prompt_hash = {v2_hash}" in effects:
        assert effects[f"system_prompt_hash = {v2_hash}"]["low"] > 1
    else:
        assert effects[f"system_prompt_hash = {v1_hash}"]["high"] < 1
    for null in ("input_tokens", "model = model-b", "model = model-a"):
        if null in effects:
            assert effects[null]["low"] < 1 < effects[null]["high"], effects[null]
    assert drivers.roc_auc is not None and drivers.roc_auc > 0.6
    assert drivers.num_train + drivers.num_test == len(
        thumbs_votes(open_catalog(data_dir), _scope())
    )


def test_the_ttft_effect_matches_a_direct_fit(world: tuple[World, Path]) -> None:
    # the seeded log-odds per standard deviation of log TTFT is TTFT_LOGIT; a point-biserial
    # check that the votes carry it, computed without the driver model
    _, data_dir = world
    votes = thumbs_votes(open_catalog(data_dir), _scope())
    log_ttft = np.log(votes["ttft_ms"].to_numpy())
    rho, p = stats.spearmanr(log_ttft, votes["down"].to_numpy())
    assert rho > 0.1 and p < 1e-6
    assert votes.filter(pl.col("ttft_ms").is_null()).height == 0
    assert math.isfinite(log_ttft.mean())


def test_the_trace_list_filters_by_system_prompt(world: tuple[World, Path]) -> None:
    # where a segment's "thumbs-down traces" link leads: requests that used that prompt
    generated, data_dir = world
    _, v2_hash = _prompt_hashes(data_dir)
    page = list_traces(
        open_catalog(data_dir), _scope(), TraceFilter(system_prompt=v2_hash), limit=10_000
    )
    expected = {t.trace_id for t in generated.turns if t.prompt == "v2"}
    assert set(page.rows["trace_id"].to_list()) == expected and page.num_total == len(expected)
    down = list_traces(
        open_catalog(data_dir),
        _scope(),
        TraceFilter(system_prompt=v2_hash, feedback=("thumbs_down",)),
        limit=10_000,
    )
    assert set(down.rows["trace_id"].to_list()) == {
        t.trace_id for t in generated.turns if t.prompt == "v2" and t.thumbs == -1
    }
