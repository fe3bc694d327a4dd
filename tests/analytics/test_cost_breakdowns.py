"""Spend: hand-computed figures (cached tokens, a dated price change, a reported cost, an unknown
model), every dimension against a reference, the projection, and a user's price file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from analytics.cost import (
    COST_DIMENSIONS,
    PriceFileError,
    cost_by_dimension,
    cost_by_time,
    cost_projection,
    cost_summary,
    install_prices,
    load_price_table,
    monthly_projection,
    most_expensive_traces,
    prices_in_use,
    unpriced_models,
)
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics import reference_inference as ref
from tests.analytics.lake import T0, random_traces, span, write_lake

D1 = datetime(2024, 9, 1, 12, tzinfo=UTC)  # gpt-4o at $5 / $15 per 1M tokens
D2 = datetime(2024, 11, 1, 12, tzinfo=UTC)  # gpt-4o at $2.50 / $10, cached input $1.25
SCOPE = Scope("spend", D1 - timedelta(days=1), D2 + timedelta(days=1))


def _trace(start: datetime, route: str, user: str, calls: list[dict[str, Any]]) -> list[Any]:
    root = span(project="spend", name=route, start_time=start, user_id=user, session_id="s-" + user)
    rows = [root]
    for i, fields in enumerate(calls):
        rows.append(
            span(
                project="spend",
                trace_id=root["trace_id"],
                parent_span_id=root["span_id"],
                start_time=start + timedelta(milliseconds=1 + i),
                operation="chat",
                **{"provider": "openai", **fields},
            )
        )
    return rows


def _rows() -> list[Any]:
    return [
        # A: 1000·$5 + 200·$15 per 1M = $0.008 (before the 2024-10-02 price change)
        *_trace(
            D1,
            "POST /chat",
            "u1",
            [
                {"response_model": "gpt-4o-2024-08-06", "input_tokens": 1000, "output_tokens": 200},
            ],
        ),
        *_trace(
            D2,
            "POST /chat",
            "u2",
            [
                # (1000 − 400)·$2.50 + 400·$1.25 + 200·$10 = $0.004
                {
                    "response_model": "gpt-4o-2024-08-06",
                    "input_tokens": 1000,
                    "output_tokens": 200,
                    "cache_read_tokens": 400,
                },
                # (10000 − 6000 − 2000)·$3 + 6000·$0.30 + 2000·$3.75 + 500·$15 = $0.0228; own user
                {
                    "response_model": "claude-3-5-sonnet-20241022",
                    "provider": "anthropic",
                    "input_tokens": 10_000,
                    "output_tokens": 500,
                    "cache_read_tokens": 6000,
                    "cache_write_tokens": 2000,
                    "user_id": "u3",
                },
            ],
        ),
        *_trace(
            D2 + timedelta(hours=1),
            "POST /search",
            "u1",
            [
                {
                    "response_model": "gpt-4o",
                    "input_tokens": 1000,
                    "output_tokens": 200,
                    "cost_usd": 0.5,
                },  # reported by the span: kept
                {"response_model": "my-finetune-v1", "input_tokens": 1000, "output_tokens": 200},
                {"request_model": "gpt-4o", "status_code": "ERROR"},  # failed, no tokens: no cost
            ],
        ),
    ]


@pytest.fixture(scope="module")
def spend(tmp_path_factory: pytest.TempPathFactory) -> tuple[duckdb.DuckDBPyConnection, Any]:
    rows = _rows()
    conn = open_catalog(write_lake(tmp_path_factory.mktemp("spend"), rows))
    install_prices(conn)
    return conn, rows


def test_summary_equals_hand_arithmetic(spend) -> None:  # type: ignore[no-untyped-def]
    conn, _ = spend
    s = cost_summary(conn, SCOPE)
    assert s.cost_usd == pytest.approx(0.008 + 0.004 + 0.0228 + 0.5)
    assert s.input_cost_usd == pytest.approx(0.005 + 0.0015 + 0.006)
    assert s.cache_read_cost_usd == pytest.approx(0.0005 + 0.0018)
    assert s.cache_write_cost_usd == pytest.approx(0.0075)
    assert s.output_cost_usd == pytest.approx(0.003 + 0.002 + 0.0075)
    assert s.reported_cost_usd == pytest.approx(0.5)
    parts = (
        s.input_cost_usd,
        s.cache_read_cost_usd,
        s.cache_write_cost_usd,
        s.output_cost_usd,
        s.reported_cost_usd,
    )
    assert sum(parts) == pytest.approx(s.cost_usd)
    assert (s.num_llm_calls, s.num_requests, s.num_unpriced_calls, s.num_reported_calls) == (
        6,
        3,
        1,
        1,
    )
    assert s.cost_per_request_usd == pytest.approx(0.5348 / 3)
    # per request: 0.008, 0.0268, 0.5 → p50 0.0268; p95 at rank 1.9
    assert s.cost_per_request_p50_usd == pytest.approx(0.0268)
    assert s.cost_per_request_p95_usd == pytest.approx(0.0268 + 0.9 * (0.5 - 0.0268))
    assert (s.input_tokens, s.uncached_input_tokens, s.cache_read_tokens) == (14_000, 5600, 6400)
    assert (s.cache_write_tokens, s.output_tokens) == (2000, 1300)


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("user", {"u1": 0.508, "u2": 0.004, "u3": 0.0228}),  # the call's own user wins
        ("route", {"POST /chat": 0.0348, "POST /search": 0.5}),
        ("day", {date(2024, 9, 1): 0.008, date(2024, 11, 1): 0.5268}),
        ("session", {"s-u1": 0.508, "s-u2": 0.0268}),
        (
            "model",
            {
                "gpt-4o": 0.5,
                "claude-3-5-sonnet-20241022": 0.0228,
                "gpt-4o-2024-08-06": 0.012,
                "my-finetune-v1": 0.0,
            },
        ),
    ],
)
def test_cost_by_dimension_equals_hand_arithmetic(
    spend, by: str, expected: dict[Any, float]
) -> None:  # type: ignore[no-untyped-def]
    conn, _ = spend
    table = cost_by_dimension(conn, SCOPE, by)  # type: ignore[arg-type]
    got = dict(zip(table[by].to_list(), table["cost_usd"].to_list(), strict=True))
    assert got == pytest.approx(expected)
    assert table["cost_share"].sum() == pytest.approx(1.0)
    if by != "day":
        assert table["cost_usd"].to_list() == sorted(table["cost_usd"].to_list(), reverse=True)


def test_the_unknown_model_is_listed_not_costed_at_zero(spend) -> None:  # type: ignore[no-untyped-def]
    conn, _ = spend
    missing = unpriced_models(conn, SCOPE).to_dicts()
    assert [(m["model"], m["num_calls"], m["input_tokens"]) for m in missing] == [
        ("my-finetune-v1", 1, 1000)
    ]
    by_model = {r["model"]: r for r in cost_by_dimension(conn, SCOPE, "model").to_dicts()}
    assert by_model["my-finetune-v1"]["num_unpriced_calls"] == 1
    assert by_model["gpt-4o"]["num_unpriced_calls"] == 0  # the failed call has no tokens


def test_most_expensive_traces(spend) -> None:  # type: ignore[no-untyped-def]
    conn, _ = spend
    traces = most_expensive_traces(conn, SCOPE, limit=5).to_dicts()
    assert [t["cost_usd"] for t in traces] == pytest.approx([0.5, 0.0268, 0.008])
    top = traces[0]
    assert (top["route"], top["user_id"], top["num_llm_calls"], top["num_unpriced_calls"]) == (
        "POST /search",
        "u1",
        3,
        1,
    )
    assert top["models"] == ["gpt-4o", "my-finetune-v1"]
    assert len(most_expensive_traces(conn, SCOPE, limit=1)) == 1


def test_cost_by_time_adds_up(spend) -> None:  # type: ignore[no-untyped-def]
    conn, _ = spend
    daily = cost_by_time(conn, SCOPE, timedelta(days=1))
    # every UTC day the window touches, empty ones too: it starts and ends at noon
    assert daily.height == (SCOPE.end - SCOPE.start).days + 1
    assert daily["cost_usd"].sum() == pytest.approx(0.5348)
    split = cost_by_time(conn, SCOPE, timedelta(days=1), by="model")
    nov = split.filter(split["bucket_start"] == datetime(2024, 11, 1, tzinfo=UTC))
    assert dict(zip(nov["model"], nov["cost_usd"], strict=True)) == pytest.approx(
        {
            "gpt-4o": 0.5,
            "claude-3-5-sonnet-20241022": 0.0228,
            "gpt-4o-2024-08-06": 0.004,
            "my-finetune-v1": 0.0,
        }
    )


def test_projection_from_the_last_seven_days(spend) -> None:  # type: ignore[no-untyped-def]
    conn, _ = spend
    projection = cost_projection(conn, SCOPE)
    assert projection.recent_start == SCOPE.end - timedelta(days=7)
    assert projection.recent_cost_usd == pytest.approx(0.5268)  # B and C, not A
    assert projection.daily_cost_usd == pytest.approx(0.5268 / 7)
    assert projection.projected_monthly_usd == pytest.approx(0.5268 / 7 * 30)
    assert projection.num_unpriced_calls == 1
    short = Scope("spend", D2, D2 + timedelta(days=2))  # shorter than a week: all of it
    assert cost_projection(conn, short).recent_days == pytest.approx(2.0)
    assert monthly_projection(10.0, 2.0) == pytest.approx(150.0)


def test_prices_in_use_show_the_price_change(spend) -> None:  # type: ignore[no-untyped-def]
    conn, _ = spend
    table = prices_in_use(conn, SCOPE)
    gpt4o = table.filter(table["model"] == "gpt-4o-2024-08-06")
    assert gpt4o["input_usd_per_mtok"].to_list() == [5.0, 2.5]
    finetune = table.filter(table["model"] == "my-finetune-v1").to_dicts()
    assert finetune[0]["price_model"] is None and finetune[0]["input_usd_per_mtok"] is None
    later = prices_in_use(conn, Scope("spend", D2 - timedelta(hours=1), SCOPE.end))
    assert later.filter(later["model"] == "gpt-4o-2024-08-06")["input_usd_per_mtok"].to_list() == [
        2.5
    ]


# --------------------------------------------------------------------------- reference


@pytest.fixture(scope="module")
def random_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[Any]]:
    rows = random_traces(seed=31, num_traces=150)
    conn = open_catalog(write_lake(tmp_path_factory.mktemp("cost"), rows))
    install_prices(conn)
    return conn, rows


@pytest.mark.parametrize("by", COST_DIMENSIONS)
def test_cost_by_dimension_equals_the_reference(random_lake, by: str) -> None:  # type: ignore[no-untyped-def]
    conn, rows = random_lake
    scope = Scope("default", T0, T0 + timedelta(days=2), routes=("POST /chat", "POST /search"))
    want = ref.cost_by(rows, scope, by)
    got = {r[by]: r for r in cost_by_dimension(conn, scope, by).to_dicts()}  # type: ignore[arg-type]
    assert set(got) == set(want)
    for key, expected in want.items():
        row = got[key]
        for name in ("num_llm_calls", "num_requests", "num_unpriced_calls"):
            assert row[name] == expected[name], (key, name)
        for name in ("cost_usd", "input_cost_usd", "cache_read_cost_usd", "output_cost_usd"):
            assert row[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (key, name)
    total = cost_summary(conn, scope)
    assert total.cost_usd == pytest.approx(sum(w["cost_usd"] for w in want.values()))


# --------------------------------------------------------------------------- price files

USER_PRICES = """
[[price]]
model = "my-finetune"
effective_from = 2024-01-01
input = 1.0
output = 2.0

[[price]]
# replaces the built-in gpt-4o row of the same date
model = "gpt-4o"
effective_from = 2024-10-02
input = 3.0
output = 12.0

[aliases]
"house-model" = "my-finetune"
"""


def test_a_user_price_file_adds_and_replaces_rows(spend, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, rows = spend
    path = tmp_path / "prices.toml"
    path.write_text(USER_PRICES)
    conn = open_catalog(write_lake(tmp_path / "lake", rows))
    install_prices(conn, path)
    by_model = {
        r["model"]: r["cost_usd"] for r in cost_by_dimension(conn, SCOPE, "model").to_dicts()
    }
    assert by_model["my-finetune-v1"] == pytest.approx((1000 * 1.0 + 200 * 2.0) / 1e6)
    # b1 at the user's price; no cache_read given, so cached input costs the input price
    assert by_model["gpt-4o-2024-08-06"] == pytest.approx(0.008 + (1000 * 3.0 + 200 * 12.0) / 1e6)
    assert cost_summary(conn, SCOPE).num_unpriced_calls == 0
    table = load_price_table(path)
    assert table.aliases["house-model"] == "my-finetune"
    assert load_price_table().aliases.get("house-model") is None  # the built-in is untouched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[price]]\nmodel = "m"\neffective_from = 2024-01-01\noutput = 1.0', "input must be"),
        ('[[price]]\nmodel = "m"\neffective_from = "soon"\ninput = 1\noutput = 1', "TOML date"),
        ("[[price]]\neffective_from = 2024-01-01\ninput = 1\noutput = 1", "needs a model"),
        ('[aliases]\n"x" = "no-such-model"', "unknown model"),
        ("[[price]\n", "not valid TOML"),
    ],
)
def test_a_bad_price_file_says_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceFileError, match=message):
        load_price_table(path)
    with pytest.raises(PriceFileError, match="cannot read"):
        load_price_table(tmp_path / "missing.toml")
