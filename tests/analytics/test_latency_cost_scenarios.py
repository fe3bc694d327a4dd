"""The seeded sample-data scenarios show in latency, goodput and cost (sample_data/README.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from analytics.cost import cost_by_dimension, install_prices, load_price_table
from analytics.goodput import goodput_summary, slo_misses
from analytics.latency import latency_by_dimension, latency_by_time
from analytics.scope import Scope
from analytics.slos import load_slo_config
from app.cli import load_sample_data
from app.settings import Settings
from store.catalog import open_catalog

DAY0 = datetime(2026, 11, 13, tzinfo=UTC)
DAYS_0_8 = Scope("default", DAY0, DAY0 + timedelta(days=9))
DAYS_9_13 = Scope("default", DAY0 + timedelta(days=9), DAY0 + timedelta(days=14))
ALL = Scope("default", DAY0, DAY0 + timedelta(days=14))
GPT4O_OLD, GPT4O_NEW = "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    data_dir: Path = tmp_path_factory.mktemp("sample")
    assert load_sample_data(Settings(data_dir=data_dir))
    conn = open_catalog(data_dir)
    install_prices(conn)
    return conn


def _ttft(conn: duckdb.DuckDBPyConnection, scope: Scope, model: str) -> dict[str, float]:
    table = latency_by_dimension(conn, scope, "ttft", "model")
    row = table.filter(table["model"] == model).to_dicts()
    assert row, f"no {model} in {scope}"
    return row[0]


def test_the_model_version_change_raises_p95_ttft_from_day_9(sample) -> None:  # type: ignore[no-untyped-def]
    before = _ttft(sample, DAYS_0_8, GPT4O_OLD)
    after = _ttft(sample, DAYS_9_13, GPT4O_NEW)
    # the facts table: 672 calls, p95 1036.4 ms; then 473 calls, p95 2165.9 ms
    assert (before["n"], round(before["p95_ms"], 1)) == (672, 1036.4)
    assert (after["n"], round(after["p95_ms"], 1)) == (473, 2165.9)
    assert round(before["p50_ms"], 1) == 545.2 and round(after["p50_ms"], 1) == 1064.8
    # the old version never answers after day 9, the new one never before
    assert GPT4O_NEW not in latency_by_dimension(sample, DAYS_0_8, "ttft", "model")["model"]
    assert GPT4O_OLD not in latency_by_dimension(sample, DAYS_9_13, "ttft", "model")["model"]


def test_the_daily_ttft_line_steps_up_on_day_9(sample) -> None:  # type: ignore[no-untyped-def]
    scope = Scope("default", ALL.start, ALL.end, models=(GPT4O_OLD, GPT4O_NEW))
    daily = latency_by_time(sample, scope, "ttft", timedelta(days=1)).to_dicts()
    assert len(daily) == 14 and all(day["enough_samples"] for day in daily)
    before = [day["p95_ms"] for day in daily[:9]]
    after = [day["p95_ms"] for day in daily[9:]]
    assert min(after) > max(before)


def test_goodput_drops_with_the_slower_model(sample) -> None:  # type: ignore[no-untyped-def]
    config = load_slo_config()
    ttft_before = (
        slo_misses(sample, DAYS_0_8, config).filter(pl.col("slo") == "ttft").row(0, named=True)
    )
    ttft_after = (
        slo_misses(sample, DAYS_9_13, config).filter(pl.col("slo") == "ttft").row(0, named=True)
    )
    assert ttft_after["miss_rate"] > 3 * ttft_before["miss_rate"]
    good_before = goodput_summary(sample, DAYS_0_8, config).good_fraction
    good_after = goodput_summary(sample, DAYS_9_13, config).good_fraction
    assert good_before is not None and good_after is not None
    # 98.4% good before, 95.1% after: the default 97% objective is met, then missed
    assert good_before > config.target > good_after


# calls / input / output / cache-read tokens by response model, failed calls excluded
USAGE = {
    "claude-3-5-haiku-20241022": (215, 164_333, 60_780, 0),
    "claude-3-5-sonnet-20241022": (944, 1_860_586, 166_033, 215_552),
    "gemini-1.5-flash-002": (545, 214_930, 8646, 0),
    GPT4O_OLD: (814, 1_575_743, 168_836, 272_640),
    GPT4O_NEW: (565, 1_120_404, 73_087, 206_720),
    "gpt-4o-mini-2024-07-18": (899, 1_608_781, 157_261, 239_104),
}
PRICE_MODEL = {
    "claude-3-5-haiku-20241022": "claude-3-5-haiku",
    "claude-3-5-sonnet-20241022": "claude-3-5-sonnet",
    "gemini-1.5-flash-002": "gemini-1.5-flash",
    GPT4O_OLD: "gpt-4o",
    GPT4O_NEW: "gpt-4o",
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
}


def _hand_cost(model: str) -> float:
    _, input_tokens, output_tokens, cached = USAGE[model]
    rows = [p for p in load_price_table().prices.to_pylist() if p["model"] == PRICE_MODEL[model]]
    price = max(rows, key=lambda p: p["effective_from"])  # 2026 is after every price change
    return (
        (input_tokens - cached) * price["input_usd_per_mtok"]
        + cached * price["cache_read_usd_per_mtok"]
        + output_tokens * price["output_usd_per_mtok"]
    ) / 1e6


def test_the_price_differences_show(sample) -> None:  # type: ignore[no-untyped-def]
    table = {row["model"]: row for row in cost_by_dimension(sample, ALL, "model").to_dicts()}
    for model, (calls, input_tokens, output_tokens, cached) in USAGE.items():
        row = table[model]
        # failed calls carry no tokens, so token sums equal the facts; calls include failures
        assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (
            input_tokens,
            output_tokens,
            cached,
        )
        assert row["num_llm_calls"] >= calls
        assert row["cost_usd"] == pytest.approx(_hand_cost(model), rel=1e-9), model
    per_call = {m: table[m]["cost_usd"] / USAGE[m][0] for m in USAGE}
    # Sonnet answers cost most per call and Flash query rewrites least; mini is far below 4o.
    assert max(per_call, key=per_call.__getitem__) == "claude-3-5-sonnet-20241022"
    assert min(per_call, key=per_call.__getitem__) == "gemini-1.5-flash-002"
    assert per_call["gpt-4o-mini-2024-07-18"] < per_call[GPT4O_OLD] / 10
    assert table["text-embedding-3-small"]["cost_usd"] < 0.001
    assert all(row["num_unpriced_calls"] == 0 for row in table.values())
