"""The committed sample data's feedback scenarios, recovered by the feedback analytics: the
"be concise" system prompt (day 11) raises the thumbs-down rate, and regenerations follow bad
answers (scenario 4 and the users of sample_data/README.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics.feedback import feedback_by_segment, feedback_summary
from analytics.implicit import implicit_rates, implicit_turns
from analytics.scope import Scope
from ingest.loader import ingest_paths
from store.catalog import open_catalog
from store.writer import LakeWriter

DATA = Path(__file__).resolve().parents[2] / "sample_data" / "data"
DAY0 = datetime(2026, 11, 13, tzinfo=UTC)
V1, V2 = "cafea20f13a747cf", "adf60cd49aad9692"  # rag-chat's system prompts (README)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("sample-feedback")
    with LakeWriter(data_dir) as writer:
        reports = ingest_paths([DATA / "traces.pb.gz", DATA / "feedback.jsonl.gz"], writer)
    assert not any(r.errors for r in reports)
    return data_dir


def _all() -> Scope:
    return Scope("default", DAY0, DAY0 + timedelta(days=14), services=("rag-chat",))


def test_the_concise_prompt_raises_the_thumbs_down_rate(lake: Path) -> None:
    segments = feedback_by_segment(open_catalog(lake), _all(), "prompt")
    rows = {r["segment"]: r for r in segments.iter_rows(named=True)}
    assert set(rows) == {V1, V2}
    assert rows[V2]["thumbs_down_rate"] > rows[V1]["thumbs_down_rate"]
    assert rows[V2]["diff_low"] > 0  # the interval excludes zero


def test_the_feedback_file_is_counted(lake: Path) -> None:
    summary = feedback_summary(
        open_catalog(lake), Scope("default", DAY0, DAY0 + timedelta(days=14))
    )
    # every thumbs, rating, comment, edit, copy, share and report of the committed file
    total = (
        summary.thumbs_up + summary.thumbs_down + summary.num_ratings + summary.num_comments
        + summary.num_edits + summary.num_copies + summary.num_shares + summary.num_reports
    )  # fmt: skip
    assert total == 732  # `flywheel demo` reports 732 feedback records for the file


def test_regenerations_follow_bad_answers(lake: Path) -> None:
    # after a bad answer a user regenerates 25% of the time; bad answers are about 15%
    turns = implicit_turns(open_catalog(lake), _all(), embed=False)
    rate = implicit_rates(turns).row(0, named=True)["regenerated_rate"]
    assert 0.02 < rate < 0.08
