"""Untrusted text stays text: script, HTML and remote-image Markdown from spans never go live.

The payloads (``tests/app/xss_lake.py``) go through ingest into a lake. The AppTest cases check
which elements carry them: plain text (``st.text``, ``st.code``, ``st.json``, dataframe cells)
holds them verbatim, and every Markdown element (titles, captions, labels) holds them escaped.
The browser case checks the DOM: no remote image, no injected script, nothing ran.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from streamlit.testing.v1 import AppTest

from app.untrusted import md_escape, plot_text
from tests.app.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, dashboard
from tests.app.xss_lake import (
    CHAT_ID,
    IMG,
    PAYLOADS,
    REMOTE,
    SCRIPT,
    SESSION_ID,
    TOOL_ID,
    TRACE_ID,
    USER_ID,
    make_xss_lake,
)

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "screens" / "traces.py")
# A payload is live in Markdown if it survives unescaped: an HTML tag, an image, a link, or a
# bare URL (GitHub-flavoured Markdown links those by itself).
LIVE_MARKDOWN = re.compile(
    r"(?<!\\)<(script|img)|(?<!\\)!(?<!\\)\[|(?<!\\)\]\((http|javascript)|https?\\?:(?!\u200b)//"
)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_xss_lake(tmp_path_factory.mktemp("xss"))


def _run(lake: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(lake))
    app = AppTest.from_file(PAGE, default_timeout=60)
    app.query_params["range"] = "all"
    for key, value in params.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _markdown_bodies(app: AppTest) -> list[str]:
    """Every element Streamlit renders as Markdown."""
    kinds = ("markdown", "caption", "title", "header", "subheader", "warning", "info", "success")
    bodies = [str(e.value) for kind in kinds for e in app.get(kind)]
    bodies += [str(m.label) for m in app.metric] + [str(m.value) for m in app.metric]
    return bodies


def _plain_texts(app: AppTest) -> str:
    parts = [t.value for t in app.text] + [c.value for c in app.code]
    parts += [str(j.value) for j in app.json]
    return "\n".join(parts)


def _assert_inert(app: AppTest) -> None:
    for body in _markdown_bodies(app):
        assert not LIVE_MARKDOWN.search(body), body


def test_escaping_helpers() -> None:
    for payload in PAYLOADS:
        assert LIVE_MARKDOWN.search(payload), "the check must catch the raw payload"
        assert not LIVE_MARKDOWN.search(md_escape(payload))
        assert "<" not in plot_text(payload)


def test_trace_view_shows_payloads_as_text(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, trace=TRACE_ID, span=CHAT_ID)
    _assert_inert(app)
    text = _plain_texts(app)
    assert f"question {SCRIPT}" in text and IMG in text and REMOTE in text  # the prompt, verbatim
    assert f"system {SCRIPT}" in text
    assert "answer " in text and "failed " in text  # output and status message
    assert '"q": "![tracking pixel](http://outside.invalid/x.png)"' in text  # tool-call arguments
    # Escaped in Markdown, so the reader still sees the characters.
    assert any(md_escape(f"chat {REMOTE}", 120) in body for body in _markdown_bodies(app))
    # The waterfall's text is HTML-escaped.
    chart = app.get("plotly_chart")[0].proto.spec
    assert "<img" not in chart and "<script" not in chart and "&lt;img" in chart


def test_tool_span_and_attributes_are_inert(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(lake, monkeypatch, trace=TRACE_ID, span=TOOL_ID)
    _assert_inert(app)
    text = _plain_texts(app)
    assert IMG in text and REMOTE in text


def test_list_and_session_views_are_inert(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = _run(lake, monkeypatch)
    _assert_inert(listing)
    table = listing.dataframe[0].value
    assert table["name"][0] == f"POST /chat {IMG}"  # a dataframe cell: drawn as text
    session = _run(lake, monkeypatch, session=SESSION_ID)
    _assert_inert(session)
    assert f"comment {SCRIPT}" in _plain_texts(session)
    user = _run(lake, monkeypatch, user=USER_ID)
    _assert_inert(user)


@pytest.fixture(scope="module")
def browser_page(lake: Path) -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (or run make test-fast)")
    with dashboard(lake) as url, playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if "outside.invalid" in r.url else None)
        page.base_url = url
        page.outside = outside
        yield page
        browser.close()


@pytest.mark.browser
def test_no_payload_goes_live_in_the_browser(browser_page: Any) -> None:
    page = browser_page
    page.goto(f"{page.base_url}/traces?range=all&trace={TRACE_ID}&span={CHAT_ID}")
    page.get_by_text(f"question {SCRIPT}", exact=False).first.wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot", timeout=30_000)
    page.wait_for_timeout(1500)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "traces-xss.png"), full_page=True)
    assert page.locator("img[src='x']").count() == 0
    assert page.locator("img[src*='outside.invalid']").count() == 0
    assert page.locator("a[href^='javascript'], a[href*='outside.invalid']").count() == 0
    injected = page.evaluate(
        "() => [...document.querySelectorAll('script')].filter(s => s.textContent.includes('__xss')).length"
    )
    assert injected == 0
    assert page.evaluate("() => window.__xss") is None
    assert page.outside == []
    # The reader still sees the characters.
    assert page.get_by_text(IMG, exact=False).count() > 0
    page.goto(f"{page.base_url}/traces?range=all&session={quote(SESSION_ID)}")
    page.get_by_text(f"comment {SCRIPT}", exact=False).first.wait_for(timeout=60_000)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("img[src='x'], img[src*='outside.invalid']").count() == 0
