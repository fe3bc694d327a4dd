"""``flywheel report opportunities``: the Markdown shows the planted exact and semantic hits, the
routing recommendation and the rejected ones with their reasons; ``--no-embeddings`` prints the
exact cache alone; bad options exit 2 with a message."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

import pytest

from app.cli import main
from tests.analytics.opportunity_world import (
    CHEAP,
    DAY,
    EXPENSIVE,
    REPEATS,
    ROUTING_DAYS,
    ROUTING_START,
    SAME,
    World,
    cache_world,
    ingest_world,
    paraphrase_similarity,
    routing_world,
)

CACHE_WINDOW = ["--since", f"{DAY:%Y-%m-%d}", "--until", "2026-03-03", "--service", SAME]
ROUTING_WINDOW = ["--since", f"{ROUTING_START:%Y-%m-%d}", "--until", "2026-04-09"]


@pytest.fixture(scope="module")
def worlds() -> tuple[World, World]:
    return cache_world(), routing_world(first_trace=100_000)


@pytest.fixture(scope="module")
def lake(worlds: tuple[World, World], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_world(tmp_path_factory.mktemp("opportunities") / "lake", *worlds)


def _report(lake: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", "opportunities", "--data-dir", str(lake), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _sections(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("#")]


def test_the_report_shows_the_planted_hits(
    lake: Path, worlds: tuple[World, World], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _report(lake, capsys, *CACHE_WINDOW, "--intents", "3")
    assert code == 0 and "flywheel report" not in err
    assert _sections(out) == [
        "# Opportunities: default, 2026-03-02 00:00 to 2026-03-03 00:00 UTC",
        "## Exact cache",
        "## Semantic cache",
        "## Routing",
    ]
    world = worlds[0]
    calls = world.where(service=SAME)
    repeats = world.where(service=SAME, role="repeat")
    saved = sum(c.cost_usd for c in repeats)
    assert (
        f"Time to live 1 hour: **7 of 43 calls (16.3%)** repeat an identical earlier request, "
        f"saving ${saved:,.4f} (${saved * 30:,.4f} a month)"
    ) in out
    assert "Excluded: 2 time-sensitive, 2 user-specific." in out
    # the repeats table: the question asked three times first
    assert "| How do I reset a forgotten password in the mobile app? | gpt-4o | 3 | 2 |" in out
    assert out.count("| gpt-4o | 2 | 1 |") == len(REPEATS) - 1
    # the semantic table: at 0.80 the repeats and the paraphrases at least that similar
    sims = paraphrase_similarity(lake)
    paraphrases = world.where(service=SAME, role="paraphrase")
    hits = repeats + [p for p in paraphrases if sims[p.family] >= 0.8]
    monthly = sum(c.cost_usd for c in hits) * 30
    assert f"| 0.80 | {len(hits)} | {len(hits) / len(calls):.1%} | ${monthly:,.2f} | " in out
    assert f"| 0.99 | 7 | 16.3% | ${saved * 30:,.4f} | 0.0% (" in out
    # 21 hits, one disagreeing: not enough to show 5% with 95% confidence
    assert "**Recommendation.** No threshold has enough hits to show" in out
    code, tolerant, _ = _report(lake, capsys, *CACHE_WINDOW, "--intents", "3", "--max-risk", "0.25")
    assert code == 0
    assert "**Recommendation.** At similarity 0.80 a semantic cache would have answered" in tolerant
    # one model only: nothing to route to
    assert "3 intents from 43 sampled of 43 calls" in out
    assert "No intent has a cheaper model that does as well" in out


def test_no_embeddings_prints_the_exact_cache_only(
    lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _report(lake, capsys, *CACHE_WINDOW, "--no-embeddings")
    assert code == 0
    assert _sections(out)[1:] == ["## Exact cache"]
    assert "**7 of 43 calls (16.3%)**" in out


def test_cache_options_reach_the_caches(lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a cache per user keeps "my invoice" (asked twice by the same user: one more hit)
    code, out, _ = _report(lake, capsys, *CACHE_WINDOW, "--no-embeddings", "--per-user")
    assert code == 0 and "**8 of 43 calls (18.6%)**" in out and "Excluded: 2 time-sensitive." in out
    # repeats come about 58 s after their question ended, the second repeat 28 s after the
    # first: a 30-second time to live keeps only that one
    code, out, _ = _report(lake, capsys, *CACHE_WINDOW, "--no-embeddings", "--ttl-minutes", "0.5")
    assert code == 0 and "Time to live 30 seconds: **1 of 43 calls (2.3%)**" in out
    code, out, _ = _report(
        lake, capsys, *CACHE_WINDOW, "--no-embeddings", "--exclude-route", "POST /ch*"
    )
    assert code == 0 and "**0 of 43 calls (0.0%)**" in out and "Excluded: 43 route." in out


def test_the_routing_section_recommends_the_planted_intent(
    lake: Path, worlds: tuple[World, World], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*ROUTING_WINDOW, "--intents", "3", "--margin", "0.15", "--eval-metric", ""]
    code, out, err = _report(lake, capsys, *args)
    assert code == 0 and "flywheel report" not in err
    routing = out[out.index("## Routing") :]
    assert "3 intents from 360 sampled of 360 calls" in routing
    assert "at most 15% worse (95% interval)." in routing  # no eval metric named

    def saving(intent: str) -> float:
        calls = worlds[1].where(role=intent)
        per_call = mean(c.cost_usd for c in calls if c.model == EXPENSIVE) - mean(
            c.cost_usd for c in calls if c.model == CHEAP
        )
        return per_call * 60 * 30 / ROUTING_DAYS

    [row] = [line for line in routing.splitlines() if "| gpt-4o | gpt-4o-mini |" in line]
    assert "password" in row and f"| ${saving('password'):,.2f} | +0.0% (" in row
    rejected = [line for line in routing.splitlines() if line.startswith("- intent ")]
    assert len(rejected) == 2
    [invoice] = [line for line in rejected if f"(${saving('invoice'):,.2f} a month)" in line]
    assert ": thumbs-down rate +30.0% (95% up to" in invoice
    [kubernetes] = [line for line in rejected if line is not invoice]
    assert kubernetes.endswith(": fewer than 20 votes or eval scores on each model")


def test_an_empty_window_reports_nothing_to_compute(
    lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _report(lake, capsys, "--since", "2025-01-01", "--until", "2025-01-02")
    assert code == 0
    assert "**0 of 0 calls (—)**" in out
    assert "## Routing\n\nNot computed: 0 calls are too few for 8 intents." in out


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--ttl-minutes", "0"], "the time to live must be positive"),
        (["--threshold", "95"], "thresholds must be in (0, 1]"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    lake: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    code, out, err = _report(lake, capsys, *CACHE_WINDOW, *option)
    assert (code, out) == (2, "")
    assert err.startswith("flywheel report: ") and message in err


def test_exclusion_patterns_are_options(lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # no exclusions at all: the time-sensitive and "my invoice" questions are kept (each asked
    # twice, so one more hit each)
    code, out, _ = _report(
        lake, capsys, *CACHE_WINDOW, "--no-embeddings", "--time-pattern", "", "--user-pattern", ""
    )
    assert code == 0 and "**9 of 43 calls (20.9%)**" in out and "Excluded: none." in out
    code, _, err = _report(lake, capsys, *CACHE_WINDOW, "--no-embeddings", "--time-pattern", "(")
    assert code == 2 and "time-sensitive pattern '('" in err
