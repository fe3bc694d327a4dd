"""Real-browser flows (headless Chromium via Playwright) on the committed sample data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, dashboard

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def sample_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.cli import load_sample_data
    from app.settings import Settings

    data_dir = tmp_path_factory.mktemp("lake")
    assert load_sample_data(Settings(data_dir=data_dir))
    return data_dir


@pytest.fixture(scope="module")
def page(sample_lake: Path) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (or run make test-fast)")
    with dashboard(sample_lake) as url, playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(url)
        page.base_url = url  # type: ignore[attr-defined]
        yield page
        browser.close()


def _metric(page: object, label: str) -> str:
    tile = page.locator('[data-testid="stMetric"]', has_text=label).first  # type: ignore[attr-defined]
    return str(tile.locator('[data-testid="stMetricValue"]').inner_text())


def test_overview_shows_the_sample_numbers(page: object) -> None:
    page.get_by_text("Requests", exact=True).first.wait_for(timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)  # type: ignore[attr-defined]
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "overview.png"), full_page=True)  # type: ignore[attr-defined]
    # the default range is the last 7 days of data, so fewer than all 3,000 sample requests
    shown = _metric(page, "Requests")
    assert shown.endswith("k") and 1.0 < float(shown[:-1]) < 3.0
    assert "ms" in _metric(page, "Latency p95") or " s" in _metric(page, "Latency p95")


def test_choosing_all_time_shows_every_request_and_lands_in_the_url(page: object) -> None:
    url = page.base_url  # type: ignore[attr-defined]
    page.goto(f"{url}/?range=all")  # type: ignore[attr-defined]
    page.get_by_text("Requests", exact=True).first.wait_for(timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')].some(e => e.innerText === '3.00k')",
        timeout=30_000,
    )
    assert _metric(page, "Requests") == "3.00k"
    page.wait_for_selector('[data-testid="stDataFrame"] canvas', timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_timeout(1000)  # type: ignore[attr-defined]  # the grid paints after it mounts
    page.screenshot(path=str(SCREENSHOTS / "overview-all.png"), full_page=True)  # type: ignore[attr-defined]


def test_guardrails_page_finds_the_injection_spike_and_opens_its_traces(page: object) -> None:
    url = page.base_url  # type: ignore[attr-defined]
    day = "range=custom&start=2026-11-19&end=2026-11-19"
    page.goto(f"{url}/guardrails?{day}")  # type: ignore[attr-defined]
    banner = page.get_by_text("Spike: prompt_injection on Amazon Bedrock Guardrails").first  # type: ignore[attr-defined]
    banner.wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_selector('[data-testid="stDataFrame"] canvas', timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_timeout(1500)  # type: ignore[attr-defined]  # the grids paint after they mount
    page.screenshot(path=str(SCREENSHOTS / "guardrails.png"), full_page=True)  # type: ignore[attr-defined]
    assert _metric(page, "Truncated").endswith("%")
    # the banner's link (a new tab) opens the traces behind the spike, and says what they are
    link = page.get_by_role("link", name="Open these traces").first  # type: ignore[attr-defined]
    href = str(link.get_attribute("href"))
    page.goto(href if href.startswith("http") else url + href)  # type: ignore[attr-defined]
    page.get_by_text(  # type: ignore[attr-defined]
        "Showing requests with a triggered result of guardrail Amazon Bedrock Guardrails"
    ).first.wait_for(timeout=60_000)
    assert "gr_category=prompt_injection" in page.url  # type: ignore[attr-defined]
    page.wait_for_selector('[data-testid="stDataFrame"] canvas', timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_timeout(1000)  # type: ignore[attr-defined]
    page.screenshot(path=str(SCREENSHOTS / "guardrails-traces.png"), full_page=True)  # type: ignore[attr-defined]


def test_evals_page_compares_the_sample_runs(page: object) -> None:
    url = page.base_url  # type: ignore[attr-defined]
    page.goto(f"{url}/evals")  # type: ignore[attr-defined]
    page.get_by_text("Cases, regressed first").first.wait_for(timeout=60_000)  # type: ignore[attr-defined]
    page.wait_for_selector('[data-testid="stDataFrame"] canvas', timeout=30_000)  # type: ignore[attr-defined]
    page.wait_for_timeout(1500)  # type: ignore[attr-defined]  # the grids paint after they mount
    page.screenshot(path=str(SCREENSHOTS / "evals.png"), full_page=True)  # type: ignore[attr-defined]
    # the simulated two-sentence candidate no longer matches what production said
    assert _metric(page, "Regressed evaluators") == "1"
    assert page.get_by_text("--- baseline").count() == 1  # type: ignore[attr-defined]


def test_traces_list_saves_its_filter_as_an_eval_dataset(page: object) -> None:
    url = page.base_url  # type: ignore[attr-defined]
    page.goto(f"{url}/traces?q=export&status=ok")  # type: ignore[attr-defined]
    link = page.get_by_role("link", name="Save as an eval dataset →")  # type: ignore[attr-defined]
    link.wait_for(timeout=60_000)
    href = link.get_attribute("href")
    assert "tab=Datasets" in href and "filter=" in href
    page.goto(href if href.startswith("http") else f"{url}{href}")  # type: ignore[attr-defined]
    name = page.get_by_role("textbox", name="Name")  # type: ignore[attr-defined]
    name.wait_for(timeout=60_000)
    assert page.get_by_role("textbox", name="Traces filter").input_value() == "q=export&status=ok"  # type: ignore[attr-defined]
    name.fill("exports")
    page.get_by_role("button", name="Create dataset").click()  # type: ignore[attr-defined]
    page.get_by_text("Wrote exports@1").first.wait_for(timeout=60_000)  # type: ignore[attr-defined]
