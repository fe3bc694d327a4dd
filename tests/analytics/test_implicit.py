"""Each implicit-signal rule against hand-built sessions, and the rates on the seeded world."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from analytics.implicit import (
    CORRECTION_PATTERN,
    ImplicitRules,
    implicit_rates,
    implicit_turns,
    same_message,
)
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics.feedback_world import DAYS, REGEN_ROUTE, START, World, ingest_world
from tests.analytics.guardrails_lake import ingest_lines

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # flat span time zero
_NS = 1_000_000_000


class Sessions:
    """Turns of hand-built sessions as flat span lines (a root and one chat call each)."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.ids: dict[str, str] = {}
        self._next = 1

    def turn(
        self,
        name: str,
        session: str,
        at_s: float,
        text: str,
        *,
        finish: str = "stop",
        answer_s: float = 2.0,
    ) -> None:
        n = self._next
        self._next += 1
        trace = f"{n:032x}"
        self.ids[name] = trace
        start = int((T0.timestamp() + at_s) * _NS)
        end = start + int(answer_s * _NS)
        common = {"trace_id": trace, "kind": "INTERNAL", "service_name": "app",
                  "status_code": "UNSET", "type": "span"}  # fmt: skip
        self.lines.append(common | {
            "span_id": f"{2 * n:016x}", "parent_span_id": None, "name": "POST /chat",
            "start_time": start, "end_time": end + 1000,
            "attributes": {"session.id": session, "user.id": f"user-{session}"},
        })  # fmt: skip
        messages = [{"role": "user", "parts": [{"type": "text", "content": text}]}]
        output = [{"role": "assistant", "parts": [{"type": "text", "content": "An answer."}]}]
        self.lines.append(common | {
            "span_id": f"{2 * n + 1:016x}", "parent_span_id": f"{2 * n:016x}",
            "name": "chat m", "start_time": start + 1000, "end_time": end,
            "attributes": {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                "gen_ai.input.messages": json.dumps(messages),
                "gen_ai.output.messages": json.dumps(output),
                "gen_ai.response.finish_reasons": [finish],
            },
        })  # fmt: skip

    def thumbs_up(self, name: str, at_s: float) -> None:
        self.lines.append({
            "type": "feedback", "trace_id": self.ids[name], "kind": "thumbs", "value": 1,
            "time": int((T0.timestamp() + at_s) * _NS),
        })  # fmt: skip


@pytest.fixture(scope="module")
def turns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    s = Sessions()
    # a: re-sent within 30 s (regenerated), then "no, I meant" (a correction)
    s.turn("a1", "a", 0, "How do I export my data?")
    s.turn("a2", "a", 12, "How do I export my data?")
    s.turn("a3", "a", 60, "no, I meant the CSV export")
    s.turn("a4", "a", 120, "thanks, that works great!")
    # b: the same question in other words (rephrased), then the session ends: abandoned
    s.turn("b1", "b", 1000, "What is the price of the pro plan?")
    s.turn("b2", "b", 1040, "How much does the pro plan cost?")
    # c: one turn with a thumbs up: not abandoned
    s.turn("c1", "c", 2000, "Summarize my invoice")
    s.thumbs_up("c1", 2010)
    # d: a cancelled stream is abandoned even if the user goes on; the same message 5 min
    # later is not a regeneration; a correction that the lexicon misses but reads like one
    s.turn("d1", "d", 3000, "Write a haiku about rain", finish="cancelled")
    s.turn("d2", "d", 3300, "Write a haiku about rain")
    s.turn("d3", "d", 3330, "This reply is incorrect.")
    # e: the last turn, 10 minutes before the window ends: undetermined
    s.turn("e1", "e", 86_400 - 600, "What time is it in Tokyo?")
    data_dir = ingest_lines(tmp_path_factory.mktemp("implicit") / "lake", s.lines)
    scope = Scope("default", T0, T0 + timedelta(days=1))
    frame = implicit_turns(open_catalog(data_dir), scope)
    by_trace = {row["trace_id"]: row for row in frame.iter_rows(named=True)}
    return {name: by_trace[trace] for name, trace in s.ids.items()}


def _flagged(turns: dict[str, dict[str, Any]], signal: str) -> set[str]:
    return {name for name, row in turns.items() if row[signal]}


def test_regeneration_is_the_same_message_soon_after(turns: dict[str, dict[str, Any]]) -> None:
    assert _flagged(turns, "regenerated") == {"a1"}
    assert turns["d1"]["gap_s"] == pytest.approx(298.0)


def test_rephrase_means_the_same_in_other_words(turns: dict[str, dict[str, Any]]) -> None:
    assert _flagged(turns, "rephrased") == {"b1"}
    assert turns["b1"]["similarity"] > 0.8
    assert turns["a1"]["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_corrections_by_lexicon_and_by_similarity(turns: dict[str, dict[str, Any]]) -> None:
    assert _flagged(turns, "corrected") == {"a2", "d2"}
    assert CORRECTION_PATTERN.search("This reply is incorrect.") is None  # found by meaning


def test_abandonment(turns: dict[str, dict[str, Any]]) -> None:
    assert _flagged(turns, "abandoned") == {"a4", "b2", "d1", "d3"}
    assert turns["c1"]["abandoned"] is False  # a thumbs up on the last turn
    assert turns["e1"]["abandoned"] is None  # the window ends before the session could
    assert turns["a1"]["abandoned"] is False


def test_follow_up_sentiment_and_turn_numbers(turns: dict[str, dict[str, Any]]) -> None:
    assert turns["a3"]["followup_sentiment"] > 0.5  # "thanks, that works great!"
    assert turns["a4"]["followup_sentiment"] is None
    assert [turns[f"a{i}"]["turn"] for i in range(1, 5)] == [1, 2, 3, 4]
    assert turns["a1"]["session_turns"] == 4


def test_the_rules_are_tunable(tmp_path: Path) -> None:
    s = Sessions()
    s.turn("x1", "x", 0, "Plan prices?")
    s.turn("x2", "x", 50, "Plan prices?")
    data_dir = ingest_lines(tmp_path / "lake", s.lines)
    scope = Scope("default", T0, T0 + timedelta(days=1))
    default = implicit_turns(open_catalog(data_dir), scope, embed=False)
    assert not default["regenerated"][0]  # 48 s after the answer
    wider = ImplicitRules(regenerate_within=timedelta(minutes=1))
    assert implicit_turns(open_catalog(data_dir), scope, wider, embed=False)["regenerated"][0]


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("How do I reset my key?", "how do i reset my key?", True),
        ("How do I reset my key?\nContext: doc 1", "How do I reset my key?\nContext: doc 2", True),
        ("How do I reset my key?", "How do I reset my keys?", True),
        ("How do I reset my key?", "Where is the billing page?", False),
        (None, "x", False),
    ],
)
def test_same_message(first: str | None, second: str | None, same: bool) -> None:
    assert same_message(first, second) is same


def test_regenerations_cluster_in_the_seeded_route(tmp_path: Path) -> None:
    world: World = ingest_world(tmp_path / "lake", num_sessions=600)
    scope = Scope("default", START, START + timedelta(days=DAYS))
    turns = implicit_turns(open_catalog(tmp_path / "lake"), scope, embed=False)
    expected = {t.trace_id for t in world.turns if t.regenerated}
    assert set(turns.filter(pl.col("regenerated"))["trace_id"]) == expected
    rates = {r["route"]: r for r in implicit_rates(turns, "route").iter_rows(named=True)}
    others = [r["regenerated_rate"] for route, r in rates.items() if route != REGEN_ROUTE]
    assert rates[REGEN_ROUTE]["regenerated_rate"] > 3 * max(others)
    # a bounded sample of sessions
    sampled = implicit_turns(open_catalog(tmp_path / "lake"), scope, embed=False, max_sessions=50)
    assert sampled["session_id"].n_unique() == 50
