"""Goodput against SLOs: a hand-worked example, a reference on random traces, and SLO files."""

from __future__ import annotations

import fnmatch
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.cost import install_prices
from analytics.goodput import (
    GOODPUT_DIMENSIONS,
    bad_requests,
    burn_rate,
    burn_rate_by_time,
    goodput_by_dimension,
    goodput_by_time,
    goodput_summary,
    slo_misses,
)
from analytics.scope import Scope
from analytics.slos import SLO, SLOConfig, SLOConfigError, glob_to_regex, load_slo_config
from store.catalog import open_catalog
from tests.analytics import reference_inference as ref
from tests.analytics.lake import T0, random_traces, span, write_lake

# --------------------------------------------------------------------------- hand-worked example

CONFIG = SLOConfig(
    slos=(
        SLO("ttft", "ttft_ms", 1000.0),
        SLO("tpot", "tpot_ms", 50.0),
        SLO("no_error", "error"),
        SLO("chat_latency", "latency_ms", 5000.0, routes=("POST /chat",)),
        SLO("gpt4o_ttft", "ttft_ms", 500.0, models=("gpt-4o-2024-*",)),
    ),
    target=0.9,
)
GPT4O, MINI = "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"

# name: (minutes after T0, route, root duration ms, root status, calls)
# a call: (model, ttft ms or None, duration ms, output tokens)
REQUESTS: dict[str, tuple[int, str, float, str, list[tuple[str, float | None, float, int]]]] = {
    # good: TTFT 400 ≤ 500, TPOT (2400 - 400) / 40 = 50 ≤ 50, 3 s on /chat
    "R1": (5, "POST /chat", 3000.0, "OK", [(GPT4O, 400.0, 2400.0, 41)]),
    # misses gpt4o_ttft only: 800 > 500 (but ≤ 1000 for everyone)
    "R2": (10, "POST /chat", 2000.0, "OK", [(GPT4O, 800.0, 1800.0, 21)]),
    # misses ttft (1200 > 1000) and chat_latency (6 s > 5 s); gpt-4o-mini is not gpt-4o-2024-*
    "R3": (15, "POST /chat", 6000.0, "OK", [(MINI, 1200.0, 3200.0, 101)]),
    # misses tpot ((10300 - 300) / 100 = 100) and no_error; chat_latency is not its route
    "R4": (20, "POST /search", 12000.0, "ERROR", [("claude-3-5-sonnet", 300.0, 10300.0, 101)]),
    # good: no model call, so no TTFT/TPOT SLO judges it
    "R5": (25, "POST /search", 50.0, "OK", []),
    # good: not streamed (no TTFT, no TPOT)
    "R6": (30, "POST /chat", 1000.0, "OK", [(GPT4O, None, 900.0, 30)]),
    # misses tpot on its second call ((1450 - 450) / 10 = 100); one output token has no TPOT
    "R7": (
        35,
        "POST /chat",
        2000.0,
        "OK",
        [("gemini-1.5-flash-002", 200.0, 500.0, 1), (GPT4O, 450.0, 1450.0, 11)],
    ),
    # before the window (in the 6 h burn window only): fails
    "R8": (-120, "POST /chat", 900.0, "ERROR", []),
}
SCOPE = Scope("hand", T0, T0 + timedelta(hours=1))


def _rows() -> tuple[list[dict[str, Any]], dict[str, str]]:
    rows: list[dict[str, Any]] = []
    ids = {}
    for name, (minutes, route, duration, status, calls) in REQUESTS.items():
        start = T0 + timedelta(minutes=minutes)
        root = span(
            project="hand",
            name=route,
            start_time=start,
            duration_ms=duration,
            status_code=status,
            kind="SERVER",
        )
        ids[name] = root["trace_id"]
        rows.append(root)
        for i, (model, ttft, call_ms, tokens) in enumerate(calls):
            rows.append(
                span(
                    project="hand",
                    trace_id=root["trace_id"],
                    parent_span_id=root["span_id"],
                    start_time=start + timedelta(milliseconds=1 + i),
                    duration_ms=call_ms,
                    operation="chat",
                    response_model=model,
                    ttft_ms=ttft,
                    input_tokens=100,
                    output_tokens=tokens,
                )
            )
    rows.append(span(project="elsewhere", name="POST /chat", start_time=T0, status_code="ERROR"))
    return rows, ids


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> tuple[duckdb.DuckDBPyConnection, Any, Any]:
    rows, ids = _rows()
    conn = open_catalog(write_lake(tmp_path_factory.mktemp("hand"), rows))
    return conn, rows, ids


def test_hand_worked_summary(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, _ = hand
    summary = goodput_summary(conn, SCOPE, CONFIG)
    assert (summary.num_requests, summary.num_good) == (7, 3)  # R1, R5, R6 are good
    assert summary.good_fraction == pytest.approx(3 / 7)
    assert summary.goodput_per_min == pytest.approx(3 / 60)
    assert summary.requests_per_min == pytest.approx(7 / 60)
    # last hour: 4 bad of 7 against a 10% budget; last 6 h adds R8 (bad): 5 of 8
    assert (summary.num_requests_1h, summary.num_bad_1h) == (7, 4)
    assert summary.burn_rate_1h == pytest.approx((4 / 7) / 0.1)
    assert (summary.num_requests_6h, summary.num_bad_6h) == (8, 5)
    assert summary.burn_rate_6h == pytest.approx((5 / 8) / 0.1)


def test_hand_worked_misses_per_slo(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, _ = hand
    got = {row["slo"]: row for row in slo_misses(conn, SCOPE, CONFIG).to_dicts()}
    expected = {
        # slo: (applies to, missed, missed only this)
        "ttft": (5, 1, 0),  # streamed: R1 R2 R3 R4 R7; R3 missed (with chat_latency)
        "tpot": (5, 2, 1),  # R1 R2 R3 R4 R7; R4 (with no_error) and R7 (alone)
        "no_error": (7, 1, 0),  # every request; R4
        "chat_latency": (5, 1, 0),  # /chat: R1 R2 R3 R6 R7; R3
        "gpt4o_ttft": (3, 1, 1),  # streamed gpt-4o-2024-* calls: R1 R2 R7; R2 alone
    }
    assert list(got) == [slo.name for slo in CONFIG.slos]
    for name, (applies, missed, only) in expected.items():
        row = got[name]
        assert (row["num_applicable"], row["num_missed"], row["num_missed_only"]) == (
            applies,
            missed,
            only,
        ), name
        assert row["miss_rate"] == pytest.approx(missed / applies)
    assert got["ttft"]["objective"] == "TTFT ≤ 1,000 ms"
    assert got["gpt4o_ttft"]["objective"] == "TTFT ≤ 500 ms on gpt-4o-2024-*"


def test_hand_worked_bad_requests_say_which_slo_they_missed(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, ids = hand
    bad = bad_requests(conn, SCOPE, CONFIG).to_dicts()
    assert [(row["trace_id"], row["missed_slos"]) for row in bad] == [
        (ids["R7"], ["tpot"]),
        (ids["R4"], ["tpot", "no_error"]),
        (ids["R3"], ["ttft", "chat_latency"]),
        (ids["R2"], ["gpt4o_ttft"]),
    ]
    r7 = bad[0]
    assert r7["worst_ttft_ms"] == 450.0 and r7["worst_tpot_ms"] == pytest.approx(100.0)
    assert r7["route"] == "POST /chat"
    assert len(bad_requests(conn, SCOPE, CONFIG, limit=2)) == 2


def test_hand_worked_goodput_and_burn_over_time(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, _ = hand
    bucket = timedelta(minutes=30)
    series = goodput_by_time(conn, SCOPE, CONFIG, bucket).to_dicts()
    # [0, 30 min): R1-R5, good R1 R5; [30, 60 min): R6 R7, good R6
    assert [(r["requests"], r["good_requests"]) for r in series] == [(5, 2), (2, 1)]
    assert series[0]["goodput_per_min"] == pytest.approx(2 / 30)
    assert series[0]["requests_per_min"] == pytest.approx(5 / 30)
    assert series[1]["good_fraction"] == pytest.approx(0.5)
    burn = burn_rate_by_time(conn, SCOPE, CONFIG, bucket).to_dicts()
    assert [b["window_end"] for b in burn] == [T0 + bucket, T0 + 2 * bucket]
    # at 30 min: the hour before holds R1-R5 (3 bad); six hours add R8 (4 bad of 6)
    assert (burn[0]["requests_1h"], burn[0]["bad_1h"]) == (5, 3)
    assert burn[0]["burn_rate_1h"] == pytest.approx(0.6 / 0.1)
    assert (burn[0]["requests_6h"], burn[0]["bad_6h"]) == (6, 4)
    assert burn[0]["burn_rate_6h"] == pytest.approx((4 / 6) / 0.1)
    assert burn[1]["burn_rate_1h"] == pytest.approx((4 / 7) / 0.1)


def test_hand_worked_goodput_by_route(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, _ = hand
    rows = {r["route"]: r for r in goodput_by_dimension(conn, SCOPE, CONFIG, "route").to_dicts()}
    assert (rows["POST /chat"]["num_requests"], rows["POST /chat"]["num_good"]) == (5, 2)
    assert (rows["POST /search"]["num_requests"], rows["POST /search"]["num_good"]) == (2, 1)
    assert rows["POST /search"]["missed_tpot"] == 1 and rows["POST /search"]["missed_ttft"] == 0
    assert rows["POST /chat"]["burn_rate"] == pytest.approx((3 / 5) / 0.1)


def test_a_model_filter_narrows_requests_and_the_calls_judged(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, _ = hand
    scope = Scope("hand", SCOPE.start, SCOPE.end, models=(GPT4O,))
    summary = goodput_summary(conn, scope, CONFIG)
    assert (summary.num_requests, summary.num_good) == (4, 2)  # R1 R2 R6 R7; bad R2 R7


def test_no_slos_means_every_request_is_good(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, _ = hand
    empty = SLOConfig(slos=(), target=0.99)
    summary = goodput_summary(conn, SCOPE, empty)
    assert summary.num_good == summary.num_requests == 7
    assert slo_misses(conn, SCOPE, empty).is_empty()
    assert bad_requests(conn, SCOPE, empty).is_empty()


def test_an_empty_window(hand) -> None:  # type: ignore[no-untyped-def]
    conn, _, _ = hand
    scope = Scope("hand", T0 + timedelta(days=3), T0 + timedelta(days=3, hours=1))
    summary = goodput_summary(conn, scope, CONFIG)
    assert summary.num_requests == 0 and summary.good_fraction is None
    assert summary.burn_rate_1h is None and summary.burn_rate_6h is None
    assert burn_rate_by_time(conn, scope, CONFIG, timedelta(minutes=30))[
        "burn_rate_6h"
    ].to_list() == [None, None]


# --------------------------------------------------------------------------- reference


REF_CONFIG = SLOConfig(
    slos=(
        SLO("ttft", "ttft_ms", 300.0),
        SLO("tpot", "tpot_ms", 2.5),
        SLO("no_error", "error", routes=("POST /chat",)),
        SLO("search_latency", "latency_ms", 1500.0, routes=("POST /se*",)),
        SLO("sonnet_ttft", "ttft_ms", 200.0, models=("claude-?-5-*",)),
        SLO("mini_errors", "error", models=("gpt-4o-mini*",)),
    ),
    target=0.8,
)


@pytest.fixture(scope="module")
def random_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    rows = random_traces(seed=21, num_traces=200)
    conn = open_catalog(write_lake(tmp_path_factory.mktemp("goodput"), rows))
    install_prices(conn)
    return conn, rows


REF_SCOPES = {
    "all": Scope("default", T0, T0 + timedelta(days=2)),
    "filtered": Scope(
        "default",
        T0 + timedelta(hours=6),
        T0 + timedelta(days=2),
        services=("api",),
        models=("gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"),
    ),
    "route": Scope("default", T0, T0 + timedelta(days=2), routes=("POST /chat",)),
}


@pytest.mark.parametrize("scope", REF_SCOPES.values(), ids=REF_SCOPES.keys())
def test_goodput_equals_the_reference(random_lake, scope: Scope) -> None:  # type: ignore[no-untyped-def]
    conn, rows = random_lake
    want = ref.goodput(rows, scope, REF_CONFIG)
    summary = goodput_summary(conn, scope, REF_CONFIG)
    assert (summary.num_requests, summary.num_good) == (want["num_requests"], want["num_good"])
    assert 0 < want["num_good"] < want["num_requests"]  # the example exercises both
    for row in slo_misses(conn, scope, REF_CONFIG).to_dicts():
        name = row["slo"]
        assert row["num_applicable"] == want["applicable"].get(name, 0), name
        assert row["num_missed"] == want["missed"].get(name, 0), name
        assert row["num_missed_only"] == want["only"].get(name, 0), name
    bad = bad_requests(conn, scope, REF_CONFIG, limit=10_000)
    assert dict(zip(bad["trace_id"], bad["missed_slos"].to_list(), strict=True)) == want["bad"]


@pytest.mark.parametrize("by", GOODPUT_DIMENSIONS)
def test_goodput_by_dimension_adds_up(random_lake, by: str) -> None:  # type: ignore[no-untyped-def]
    conn, rows = random_lake
    scope = REF_SCOPES["all"]
    table = goodput_by_dimension(conn, scope, REF_CONFIG, by)  # type: ignore[arg-type]
    want = ref.goodput(rows, scope, REF_CONFIG)
    if by == "model":  # a request counts under each model it called
        reqs = ref.requests(rows, scope)
        assert table["num_requests"].sum() == sum(max(len(r.models), 1) for r in reqs)
    else:
        assert table["num_requests"].sum() == want["num_requests"]
        assert table["num_good"].sum() == want["num_good"]
        assert table["missed_ttft"].sum() == want["missed"].get("ttft", 0)


def test_burn_rate_formula() -> None:
    assert burn_rate(30, 1000, 0.99) == pytest.approx(3.0)
    assert burn_rate(0, 10, 0.99) == 0.0
    assert burn_rate(5, 0, 0.99) is None


# --------------------------------------------------------------------------- SLO files


def test_the_built_in_slos_load() -> None:
    config = load_slo_config()
    assert {slo.metric for slo in config.slos} >= {"ttft_ms", "tpot_ms", "error"}
    assert 0 < config.target < 1 and config.source.endswith("slos.toml")


def test_a_user_file_replaces_the_built_in_one(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'target = 0.999\n[[slo]]\nname = "fast"\nmetric = "latency_ms"\nmax_ms = 800\n'
        'routes = ["GET /*"]\nmodels = ["gpt-4o*"]\n'
    )
    config = load_slo_config(path)
    assert config.target == 0.999 and config.source == str(path)
    assert config.slos == (SLO("fast", "latency_ms", 800.0, ("GET /*",), ("gpt-4o*",)),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target = 0.9\n[[slo]]\nname = 'x'\nmetric = 'speed'\nmax_ms = 1", "unknown metric"),
        ("target = 0.9\n[[slo]]\nname = 'x'\nmetric = 'error'\nmax_ms = 1", "takes no max_ms"),
        ("target = 0.9\n[[slo]]\nname = 'x'\nmetric = 'ttft_ms'", "max_ms must be a positive"),
        ("target = 0.9\n[[slo]]\nname = 'x'\nmetric = 'ttft_ms'\nmax_ms = -5", "positive"),
        ("target = 0.9\n[[slo]]\nname = 'x'\nmetric = 'error'\nroute = ['a']", "unknown key"),
        ("target = 0.9\n[[slo]]\nmetric = 'error'", "needs a name"),
        ("target = 1.0\n", "between 0 and 1"),
        ("[[slo]]\nname = 'x'\nmetric = 'error'", "target must be a number"),
        (
            "target = 0.9\n[[slo]]\nname='a'\nmetric='error'\n[[slo]]\nname='a'\nmetric='error'",
            "unique",
        ),
        ("target = 0.9\n[[slo]]\nname = 'x'\nmetric = 'error'\nmodels = 'gpt'", "list of"),
        ("target = [", "not valid TOML"),
        ("target = 0.9\nslos = []", "unknown key"),
    ],
)
def test_a_bad_slo_file_says_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "slos.toml"
    path.write_text(text)
    with pytest.raises(SLOConfigError, match=re.escape(str(path))) as error:
        load_slo_config(path)
    assert message in str(error.value)


def test_a_missing_slo_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SLOConfigError, match="cannot read"):
        load_slo_config(tmp_path / "nope.toml")


PATTERNS = ["gpt-4o*", "POST /chat", "claude-?-5-*", "*", "a.b", "x+y(z)", "*mini*", "GET /?"]
NAMES = [
    "gpt-4o",
    "gpt-4o-mini",
    "POST /chat",
    "claude-3-5-sonnet",
    "a.b",
    "axb",
    "x+y(z)",
    "GET /a",
]


def test_globs_match_like_fnmatch() -> None:
    for pattern in PATTERNS:
        compiled = glob_to_regex((pattern,))
        got = duckdb.sql(
            "SELECT name, regexp_full_match(name, ?) FROM unnest(?) AS t(name)",
            params=[compiled, NAMES],
        ).fetchall()
        assert dict(got) == {n: fnmatch.fnmatchcase(n, pattern) for n in NAMES}, pattern
