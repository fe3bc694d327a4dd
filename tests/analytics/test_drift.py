"""Embedding drift on the sample data: the new topic is drift, ordinary weeks and a shuffled
split are not, and embeddings are reused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from analytics.drift import (
    compare_embeddings,
    drift_by_day,
    embedding_drift,
    sample_texts,
    topic_shift,
)
from analytics.embeddings import embed_texts
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import ingest_sample

DAY0 = datetime(2026, 11, 13, tzinfo=UTC)


def _days(first: int, last: int) -> Scope:
    # rag-chat's user questions: where the sample's new topic (day 10) arrives
    return Scope(
        "default", DAY0 + timedelta(days=first), DAY0 + timedelta(days=last), services=("rag-chat",)
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("drift"))


def test_the_new_topic_is_drift_in_its_window_only(lake: Path) -> None:
    conn = open_catalog(lake)
    steps: list[tuple[int, int]] = []
    topic = embedding_drift(
        conn, _days(3, 10), _days(11, 14), progress=lambda d, t: steps.append((d, t))
    )
    assert topic.drift_detected, topic
    # progress follows the texts embedded, batch by batch, to the end of each window's job
    assert steps and all(0 < d <= t for d, t in steps) and steps[-1][0] == steps[-1][1]
    assert topic.method == "mmd" and topic.num_reference == 1000 and topic.num_current > 900
    assert topic.reference_self_score is not None
    assert topic.threshold == pytest.approx(max(3 * topic.reference_self_score, 0.002))
    ordinary = embedding_drift(conn, _days(0, 4), _days(5, 9))
    assert not ordinary.drift_detected, ordinary
    assert topic.score > 3 * ordinary.score
    # the texts of the first comparison were embedded then; a second run embeds none
    again = embedding_drift(
        conn, _days(3, 10), _days(11, 14), progress=lambda d, t: steps.append((-1, -1))
    )
    assert (-1, -1) not in steps  # nothing to embed: no progress to show
    assert again.num_embedded == 0 and again.score == pytest.approx(topic.score)


def test_a_shuffled_split_of_one_window_is_not_drift(lake: Path) -> None:
    conn = open_catalog(lake)
    texts = sample_texts(conn, _days(11, 14), sample_size=2000)
    vectors = embed_texts(texts, lake).vectors
    order = np.random.default_rng(3).permutation(len(vectors))
    half = len(order) // 2
    score, threshold, own = compare_embeddings(vectors[order[:half]], vectors[order[half:]])
    assert own is not None and score <= threshold


def test_a_fixed_threshold_and_unknown_methods(lake: Path) -> None:
    rng = np.random.default_rng(0)
    same = rng.normal(size=(200, 8))
    shifted = rng.normal(loc=1.0, size=(200, 8))
    score, threshold, own = compare_embeddings(same, shifted, "distance", calibrate=False)
    assert (
        own is None
        and threshold == 0.2
        and score == pytest.approx(np.linalg.norm(shifted.mean(axis=0) - same.mean(axis=0)))
    )
    with pytest.raises(ValueError, match="method must be one of"):
        compare_embeddings(same, shifted, "psi")


def test_the_topic_that_appeared_is_named_by_its_examples(lake: Path) -> None:
    shift = topic_shift(open_catalog(lake), _days(3, 10), _days(11, 14))
    grown = shift.clusters.row(0, named=True)
    assert grown["share_reference"] < 0.01 and grown["share_current"] > 0.1
    assert all("vector" in text.lower() for text in grown["examples"]), grown["examples"]
    assert shift.clusters["change"].sum() == pytest.approx(0.0, abs=1e-9)
    assert shift.points.height == grown["num_current"] + grown["num_reference"] + sum(
        r["num_reference"] + r["num_current"] for r in shift.clusters.slice(1).iter_rows(named=True)
    )


def test_the_daily_series_turns_when_the_topic_grows(lake: Path) -> None:
    series = drift_by_day(open_catalog(lake), _days(0, 7), _days(7, 14))
    by_day = {
        (row["day"] - DAY0).days: row["drift_detected"] for row in series.iter_rows(named=True)
    }
    assert [by_day[d] for d in (7, 8, 9)] == [False, False, False]
    assert by_day[12] and by_day[13]
