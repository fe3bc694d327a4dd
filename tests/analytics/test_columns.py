"""Column drift on the sample data: the seeded changes drift in the right columns, quiet days
do not, and each number matches a test computed directly with scipy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.spatial import distance

from analytics.columns import (
    CATEGORICAL,
    NUMERICAL,
    column_drift,
    detect_language,
    sample_calls,
)
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics.guardrails_lake import flat_span, ingest_lines, ingest_sample

DAY0 = datetime(2026, 11, 13, tzinfo=UTC)


def _days(first: int, last: int) -> Scope:
    return Scope(
        "default", DAY0 + timedelta(days=first), DAY0 + timedelta(days=last), services=("rag-chat",)
    )


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("column-drift"))


def _by_column(frame: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {row["column"]: row for row in frame.iter_rows(named=True)}


def test_the_model_version_and_the_shorter_prompt_drift_and_input_length_does_not(
    lake: Path,
) -> None:
    # days 0-8 against 9-13: gpt-4o's new version (day 9, twice the TTFT) and the "be
    # concise" system prompt (day 11, answers 40% shorter); questions are asked as before
    drift = column_drift(open_catalog(lake), _days(0, 9), _days(9, 14))
    columns = _by_column(drift.columns)
    for drifted in ("model", "ttft_ms", "output_chars", "output_tokens"):
        assert columns[drifted]["drift_detected"] is True, columns[drifted]
    for quiet in ("input_chars", "language", "route"):
        assert columns[quiet]["drift_detected"] is False, columns[quiet]
    # every column was tested; drifted ones are listed first
    assert drift.columns["method"].null_count() == 0
    flags = drift.columns["drift_detected"].to_list()
    assert flags == sorted(flags, reverse=True)
    # samples above 1,000 rows: Evidently uses distances, not p-values
    assert columns["ttft_ms"]["method"] == "Wasserstein distance (normed)"
    assert columns["model"]["method"] == "Jensen-Shannon distance"


def test_quiet_days_do_not_drift(lake: Path) -> None:
    # days 0-2 against 3-5: nothing seeded changes (the injection spike is day 6)
    drift = column_drift(open_catalog(lake), _days(0, 3), _days(3, 6))
    assert not any(drift.columns["drift_detected"].to_list()), drift.columns
    columns = _by_column(drift.columns)
    # fewer than 1,000 calls a window: Kolmogorov-Smirnov p-values
    assert columns["duration_ms"]["method"] == "K-S p_value"


def test_scores_match_scipy_on_the_same_samples(lake: Path) -> None:
    conn = open_catalog(lake)
    reference, current = _days(0, 3), _days(3, 6)
    drift = column_drift(conn, reference, current)
    columns = _by_column(drift.columns)
    ref, cur = sample_calls(conn, reference), sample_calls(conn, current)
    assert drift.samples.filter(pl.col("window") == "current").height == cur.height
    for column in ("duration_ms", "input_tokens"):
        expected = stats.ks_2samp(ref[column].drop_nulls(), cur[column].drop_nulls()).pvalue
        assert columns[column]["score"] == pytest.approx(expected, rel=1e-6)
        assert columns[column]["num_current"] == cur[column].drop_nulls().len()
    # Jensen-Shannon distance of the two windows' model shares (base 2, as Evidently)
    values = sorted(set(ref["model"].drop_nulls()) | set(cur["model"].drop_nulls()))
    shares = [
        np.array([frame["model"].drop_nulls().to_list().count(v) for v in values], dtype=float)
        for frame in (ref, cur)
    ]
    expected = distance.jensenshannon(shares[0] / shares[0].sum(), shares[1] / shares[1].sum())
    assert columns["model"]["score"] == pytest.approx(expected, abs=0.02)
    median = ref["duration_ms"].median()
    assert columns["duration_ms"]["reference"] == f"median {median:,.4g}"


def test_a_new_language_drifts_and_a_column_without_values_is_not_tested(tmp_path: Path) -> None:
    english = ["How do I reset my password on the mobile app?", "Where can I download my invoice?"]
    german = ["Wie kann ich mein Passwort in der App zurücksetzen?", "Wo finde ich meine Rechnung?"]
    lines = []
    for i in range(200):
        day = 0 if i < 100 else 1
        text = (german if day and i % 2 else english)[i % 2]
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.input.messages": f'[{{"role": "user", "parts": [{{"type": "text", "content": "{text}"}}]}}]',
            "gen_ai.usage.output_tokens": 50 + i % 7,
        }
        lines.append(flat_span(i + 1, 1, day * 86_400 + i * 60.0, attributes))
    data_dir = ingest_lines(tmp_path / "lake", lines)
    start = datetime(2026, 1, 1, tzinfo=UTC)  # flat_span's time zero
    scope = Scope("default", start, start + timedelta(days=1))
    later = Scope("default", start + timedelta(days=1), start + timedelta(days=2))
    drift = column_drift(open_catalog(data_dir), scope, later)
    columns = _by_column(drift.columns)
    assert columns["language"]["drift_detected"] is True
    assert columns["language"]["reference"] == "en 100%"
    assert columns["language"]["current"] == "de 50%" or columns["language"]["current"] == "en 50%"
    assert columns["ttft_ms"]["method"] is None and columns["ttft_ms"]["note"]
    assert columns["output_tokens"]["drift_detected"] is False
    assert set(drift.columns["column"]) == set(NUMERICAL) | set(CATEGORICAL)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Summarize this ticket: the customer cannot log in after the update", "en"),
        ("Wie kann ich mein Passwort zurücksetzen?", "de"),
        ("Comment réinitialiser mon mot de passe ?", "fr"),
        ("ok", "und"),
        ("   ", None),
        (None, None),
    ],
)
def test_detect_language(text: str | None, language: str | None) -> None:
    assert detect_language(text) == language
