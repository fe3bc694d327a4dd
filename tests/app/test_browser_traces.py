"""The Traces page in headless Chromium on the sample data: deep links open what they name."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
import pytest

from analytics.cost import install_prices
from analytics.scope import Scope
from analytics.trace_detail import TraceDetail, read_trace
from analytics.traces import TraceFilter, list_traces
from app.trace_links import iso_time
from store.catalog import open_catalog
from tests.app.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, dashboard

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")

SAMPLE_WINDOW = Scope(
    "default", datetime(2026, 11, 13, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC)
)


@pytest.fixture(scope="module")
def sample_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.cli import load_sample_data
    from app.settings import Settings

    data_dir = tmp_path_factory.mktemp("lake")
    assert load_sample_data(Settings(data_dir=data_dir))
    return data_dir


@pytest.fixture(scope="module")
def picked(sample_lake: Path) -> TraceDetail:
    """A rag-chat request with a tool call and feedback: the richest kind of trace."""
    conn = open_catalog(sample_lake)
    install_prices(conn)
    rows = list_traces(
        conn, SAMPLE_WINDOW, TraceFilter(operations=("execute_tool",)), limit=500
    ).rows
    row = rows.filter(pl.col("session_id").is_not_null()).row(0, named=True)
    trace = read_trace(conn, "default", row["trace_id"], row["start_time"])
    assert trace is not None
    return trace


@pytest.fixture(scope="module")
def page(sample_lake: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (or run make test-fast)")
    with dashboard(sample_lake) as url, playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 2600})
        page.base_url = url
        yield page
        browser.close()


def _shot(page: Any, name: str) -> None:
    page.wait_for_timeout(1500)  # grids paint after they mount
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _tick_labels(page: Any) -> list[str]:
    return [str(t) for t in page.locator(".js-plotly-plot .ytick text").all_text_contents()]


def test_a_deep_link_opens_the_trace_and_shows_its_spans(page: Any, picked: TraceDetail) -> None:
    url = f"{page.base_url}/traces?trace={picked.trace_id}&t={quote(iso_time(picked.start_time))}"
    page.goto(url)
    page.wait_for_selector(".js-plotly-plot .ytick text", timeout=60_000)
    ticks = _tick_labels(page)
    names = picked.tree["name"].to_list()
    assert len(ticks) == len(names)
    for tick, name in zip(ticks, names, strict=True):
        assert tick.rstrip("…") and name.startswith(tick.rstrip("…"))
    # The default span is the answer: its prompt is shown as a chat.
    page.get_by_text("Prompt", exact=True).first.wait_for(timeout=30_000)
    assert page.locator('[data-testid="stChatMessage"]').count() >= 2
    assert page.get_by_role("heading", name=picked.root.name or "").count() >= 1
    # Opened by its URL, the sidebar still lists the pages by title (not by file name).
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Latency & goodput" in nav and "dashboard" not in nav
    _shot(page, "traces-trace")


def test_a_span_link_opens_its_detail(page: Any, picked: TraceDetail) -> None:
    tool = picked.tree.filter(pl.col("category") == "tool").row(0, named=True)
    page.goto(
        f"{page.base_url}/traces?trace={picked.trace_id}&t={quote(iso_time(picked.start_time))}"
        f"&span={tool['span_id']}"
    )
    page.get_by_role("heading", name=tool["name"]).wait_for(timeout=60_000)
    page.get_by_role("tab", name="Tool call").click()
    page.get_by_text("Arguments", exact=True).wait_for(timeout=30_000)
    _shot(page, "traces-span-tool")


def test_the_list_and_a_session(page: Any, picked: TraceDetail) -> None:
    page.goto(f"{page.base_url}/traces?range=all")
    page.get_by_text("3.00k requests", exact=False).first.wait_for(timeout=60_000)
    page.wait_for_selector('[data-testid="stDataFrame"] canvas', timeout=30_000)
    _shot(page, "traces-list")
    session = next(s.session_id for s in picked.spans if s.session_id)
    page.goto(f"{page.base_url}/traces?session={session}&t={quote(iso_time(picked.start_time))}")
    page.get_by_role("heading", name="Conversation").wait_for(timeout=60_000)
    page.get_by_text("Turn 1 ", exact=False).first.wait_for(timeout=30_000)
    _shot(page, "traces-session")


def test_the_random_sample_button(page: Any) -> None:
    page.goto(f"{page.base_url}/traces?range=all")
    page.get_by_role("button", name="Read 10 random traces").click()
    page.get_by_text("10 random requests", exact=False).wait_for(timeout=60_000)
    assert "sample=" in page.url
    _shot(page, "traces-sample")
