"""The Cost page renders on a small lake and shows exactly what the analytics return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from analytics.cost import (
    cost_by_dimension,
    cost_projection,
    cost_summary,
    install_prices,
    most_expensive_traces,
)
from analytics.scope import Scope, data_time_range
from app import components as ui
from store.catalog import open_catalog
from tests.analytics.lake import random_traces, write_lake

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "cost.py")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # random_traces calls "my-finetune-v1", which has no price
    rows = random_traces(seed=7, num_traces=150, span_hours=24 * 10)
    return write_lake(tmp_path_factory.mktemp("cost-page"), rows)


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=60)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _scope(data_dir: Path, preset: str, price_file: Path | None = None) -> tuple[Any, Scope]:
    conn = open_catalog(data_dir)
    install_prices(conn, price_file)
    first, last = data_time_range(conn, "default")
    assert first is not None and last is not None
    window = ui.preset_window(preset, first, last)
    return conn, Scope("default", window.start, window.end)


def _tiles(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def test_page_shows_the_cost_numbers(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, range="all")
    conn, scope = _scope(lake, "all")
    summary = cost_summary(conn, scope)
    projection = cost_projection(conn, scope)
    tiles = _tiles(app)
    assert tiles["Cost"] == ui.format_usd(summary.cost_usd)
    assert tiles["Cost / request"] == ui.format_usd(summary.cost_per_request_usd)
    assert tiles["Projected / month"] == ui.format_usd(projection.projected_monthly_usd)
    assert tiles["Unpriced calls"] == ui.format_count(summary.num_unpriced_calls)
    assert tiles["Cached input tokens"] == ui.format_count(summary.cache_read_tokens)
    # the unknown model is named, not costed at zero
    warning = " ".join(w.value for w in app.warning)
    assert "my-finetune-v1" in warning and "not counted as free" in warning
    assert len(app.get("plotly_chart")) == 2  # cost over time, split by token type
    tables = [frame.value for frame in app.dataframe]
    unpriced, breakdown, expensive = tables[0], tables[1], tables[2]
    # random_traces also makes calls that name no model: unpriced too
    assert list(unpriced["model"]) == [None, "my-finetune-v1"]
    by_model = cost_by_dimension(conn, scope, "model")
    assert list(breakdown["cost_usd"]) == pytest.approx(by_model["cost_usd"].to_list())
    top = most_expensive_traces(conn, scope, limit=20)
    assert [link.split("trace=")[1][:32] for link in expensive["link"]] == top["trace_id"].to_list()


def test_the_breakdown_comes_from_the_url(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, range="all", cost_by="user")
    conn, scope = _scope(lake, "all")
    breakdown = app.dataframe[1].value
    expected = cost_by_dimension(conn, scope, "user")
    assert "user" in breakdown.columns
    assert list(breakdown["cost_usd"]) == pytest.approx(expected["cost_usd"].to_list())
    links = [link for link in breakdown["traces"] if link]
    assert links and all("user=" in link and "sort=cost" in link for link in links)
    assert app.query_params.get("cost_by") in ("user", ["user"])


def test_a_user_price_file_prices_the_unknown_model(
    lake: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nmodel = "my-finetune"\neffective_from = 2024-01-01\ninput = 1.0\noutput = 2.0\n'
    )
    monkeypatch.setenv("FLYWHEEL_PRICE_FILE", str(prices))
    app = _run(lake, monkeypatch, range="all")
    conn, scope = _scope(lake, "all", prices)
    summary = cost_summary(conn, scope)
    assert _tiles(app)["Unpriced calls"] == ui.format_count(summary.num_unpriced_calls)
    assert _tiles(app)["Cost"] == ui.format_usd(summary.cost_usd)
    warning = " ".join(w.value for w in app.warning)
    assert "my-finetune-v1" not in warning and "calls naming no model" in warning


def test_empty_lake_explains_how_to_load_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _run(tmp_path / "nothing-here", monkeypatch)
    assert "flywheel ingest" in " ".join(info.value for info in app.info)
    assert not app.metric
