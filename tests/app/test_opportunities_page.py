"""The Opportunities page on the planted cache and routing worlds: each tab shows what the
analytics compute (the planted exact hits, the semantic table, the routing recommendation)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analytics.cache import CacheRules, exact_cache_opportunity
from analytics.cost import install_prices
from analytics.scope import Scope
from analytics.semantic_cache import semantic_cache_opportunity
from store.catalog import open_catalog
from tests.analytics.opportunity_world import (
    CHEAP,
    DAY,
    EXPENSIVE,
    ROUTING_DAYS,
    ROUTING_START,
    SAME,
    cache_world,
    ingest_world,
    routing_world,
)

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "opportunities.py")
CACHE_DAY = {
    "range": "custom",
    "start": f"{DAY:%Y-%m-%d}",
    "end": f"{DAY:%Y-%m-%d}",
    "service": SAME,
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    worlds = cache_world(), routing_world(first_trace=100_000)
    return ingest_world(tmp_path_factory.mktemp("opportunities-page") / "lake", *worlds)


def _run(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=180)
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _scope(lake: Path) -> tuple[object, Scope]:
    conn = open_catalog(lake)
    install_prices(conn)
    return conn, Scope("default", DAY, DAY.replace(day=DAY.day + 1), services=(SAME,))


def test_exact_tab_shows_the_planted_repeats(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, scope = _scope(lake)
    exact = exact_cache_opportunity(conn, scope, CacheRules())  # type: ignore[arg-type]
    assert exact.num_hits == 7
    app = _run(lake, monkeypatch, **CACHE_DAY)
    tiles = {m.label: m.value for m in app.metric}
    assert tiles["Calls answered from cache"] == f"7 of {exact.num_calls}"
    repeats = app.dataframe[0].value
    assert list(repeats["num_hits"]) == list(exact.repeats["num_hits"])


def test_semantic_tab_shows_every_threshold(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn, scope = _scope(lake)
    semantic = semantic_cache_opportunity(conn, scope)  # type: ignore[arg-type]
    app = _run(lake, monkeypatch, tab="Semantic cache", **CACHE_DAY)
    shown = app.dataframe[0].value
    assert list(shown["threshold"]) == list(semantic.by_threshold["threshold"])
    assert list(shown["num_hits"]) == list(semantic.by_threshold["num_hits"])
    assert any(semantic.trade_off == w.value for w in app.warning)  # nothing recommended
    assert len(app.get("plotly_chart")) == 1


def test_routing_tab_recommends_the_planted_intent(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = ROUTING_START.replace(day=ROUTING_START.day + ROUTING_DAYS - 1)
    window = {"range": "custom", "start": f"{ROUTING_START:%Y-%m-%d}", "end": f"{last:%Y-%m-%d}"}
    app = _run(lake, monkeypatch, tab="Routing", intents="3", margin="0.15", **window)
    tiles = {m.label: m.value for m in app.metric}
    assert (tiles["Intents"], tiles["Intents to route"]) == ("3", "1")
    [recommended] = app.dataframe[0].value.to_dict("records")
    assert (recommended["from_model"], recommended["to_model"]) == (EXPENSIVE, CHEAP)
    assert "password" in recommended["examples"].lower()
    models = app.dataframe[2].value  # the recommendation, the intents, their models
    assert set(models["model"]) == {EXPENSIVE, CHEAP} and len(models) == 6
    # with the default 5-point margin, 60 votes a model cannot show it: nothing to route
    strict = _run(lake, monkeypatch, tab="Routing", intents="3", **window)
    assert {m.label: m.value for m in strict.metric}["Intents to route"] == "0"
