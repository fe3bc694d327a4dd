"""Prices: the table parses, model names map by longest prefix, read-time cost is hand arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from analytics.cost import install_prices, load_price_table, match_price_model
from analytics.overview import overview_summary
from analytics.scope import Scope
from store.catalog import open_catalog
from tests.analytics.lake import span, write_lake

REQUIRED_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-sonnet-4",
    "gemini-1.5-pro",
    "gemini-1.5-flash",
    "gemini-2.0-flash",
    "text-embedding-3-small",
)


def test_price_table_has_the_required_models_with_sane_prices() -> None:
    table = load_price_table()
    assert set(REQUIRED_MODELS) <= table.price_models
    for row in table.prices.to_pylist():
        assert row["input_usd_per_mtok"] >= 0 and row["output_usd_per_mtok"] >= 0, row
        assert row["cache_read_usd_per_mtok"] <= row["input_usd_per_mtok"], row
        assert row["effective_from"].tzinfo is not None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("GPT-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o3-2025-04-16", "o3"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet"),
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.0-flash-lite", "gemini-2.0-flash-lite"),
        ("text-embedding-3-small", "text-embedding-3-small"),
        ("gpt-4omni", None),  # a prefix must end at a boundary
        ("gpt-4.5-preview", None),  # "." is not a boundary: gpt-4 does not price gpt-4.5
        ("my-finetune", None),
    ],
)
def test_model_names_map_by_longest_prefix(name: str, expected: str | None) -> None:
    assert match_price_model(name) == expected


D1 = datetime(2024, 9, 1, 12, tzinfo=UTC)  # gpt-4o at $5 / $15 per 1M
D2 = datetime(2024, 11, 1, 12, tzinfo=UTC)  # gpt-4o at $2.50 / $10, cached input $1.25


def _call(start: datetime, model: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "project": "cost",
        "start_time": start,
        "operation": "chat",
        "provider": "openai",
        "request_model": model,
        "response_model": model,
    }
    return span(**{**row, **fields})


# (call, hand-computed cost in USD)
CASES: list[tuple[dict[str, object], float | None]] = [
    # Before the 2024-10-02 price change: 1000·5 + 200·15 per 1M.
    (_call(D1, "gpt-4o-2024-08-06", input_tokens=1000, output_tokens=200), 0.005 + 0.003),
    # After it, with cached input: (1000 - 400)·2.50 + 400·1.25 + 200·10 per 1M.
    (
        _call(D2, "gpt-4o-2024-08-06", input_tokens=1000, output_tokens=200, cache_read_tokens=400),
        0.0015 + 0.0005 + 0.002,
    ),
    # The 2024-05-13 snapshot keeps its launch price after the alias moved.
    (_call(D2, "gpt-4o-2024-05-13", input_tokens=1000, output_tokens=200), 0.005 + 0.003),
    # Anthropic cache read and write: (10000 - 6000 - 2000)·3 + 6000·0.30 + 2000·3.75 + 500·15.
    (
        _call(
            D2,
            "claude-3-5-sonnet-20241022",
            provider="anthropic",
            input_tokens=10_000,
            output_tokens=500,
            cache_read_tokens=6000,
            cache_write_tokens=2000,
        ),
        0.006 + 0.0018 + 0.0075 + 0.0075,
    ),
    # A provider prefix is stripped: gpt-4o-mini, 2000·0.15 + 1000·0.60.
    (_call(D2, "openai/gpt-4o-mini-2024-07-18", input_tokens=2000, output_tokens=1000), 0.0009),
    # Embeddings: 1M tokens of text-embedding-3-small cost $0.02.
    (
        span(
            project="cost",
            start_time=D2,
            operation="embeddings",
            request_model="text-embedding-3-small",
            input_tokens=1_000_000,
        ),
        0.02,
    ),
    # A span that carries its own cost keeps it.
    (_call(D2, "gpt-4o", input_tokens=1000, output_tokens=200, cost_usd=0.5), 0.5),
    # An unknown model has no cost.
    (_call(D2, "my-finetune-v1", input_tokens=1000, output_tokens=200), None),
]


@pytest.fixture(scope="module")
def priced_catalog(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    data_dir = write_lake(tmp_path_factory.mktemp("cost"), [call for call, _ in CASES])
    conn = open_catalog(Path(data_dir))
    mapping = install_prices(conn)
    return conn, mapping


def test_install_prices_maps_each_data_model(priced_catalog) -> None:  # type: ignore[no-untyped-def]
    _, mapping = priced_catalog
    pairs = dict(zip(mapping["model"].to_pylist(), mapping["price_model"].to_pylist(), strict=True))
    assert pairs["gpt-4o-2024-08-06"] == "gpt-4o"
    assert pairs["openai/gpt-4o-mini-2024-07-18"] == "gpt-4o-mini"
    assert pairs["claude-3-5-sonnet-20241022"] == "claude-3-5-sonnet"
    assert pairs["my-finetune-v1"] is None  # looked at, matches no price


@pytest.mark.parametrize("index", range(len(CASES)))
def test_cost_at_read_time_equals_hand_arithmetic(priced_catalog, index: int) -> None:  # type: ignore[no-untyped-def]
    conn, _ = priced_catalog
    call, expected = CASES[index]
    got = conn.execute(
        "SELECT total_cost_usd FROM llm_calls WHERE span_id = ?", [call["span_id"]]
    ).fetchone()
    assert got is not None
    if expected is None:
        assert got[0] is None
    else:
        assert got[0] == pytest.approx(expected, rel=1e-12)


def test_overview_total_cost_is_the_sum_of_priced_calls(priced_catalog) -> None:  # type: ignore[no-untyped-def]
    conn, _ = priced_catalog
    scope = Scope("cost", D1 - timedelta(days=1), D2 + timedelta(days=1))
    summary = overview_summary(conn, scope)
    assert summary.total_cost_usd == pytest.approx(
        sum(cost for _, cost in CASES if cost is not None), rel=1e-12
    )
    assert summary.num_unpriced_calls == 1
    assert summary.num_llm_calls == len(CASES)
