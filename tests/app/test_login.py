"""Dashboard sign-in: off by default; with a password hash or OIDC, no page runs before sign-in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.passwords import PasswordHashError, hash_password, parse_hash, verify_password
from app.settings import Settings, SettingsError
from tests.analytics.lake import random_traces, write_lake

DASHBOARD = str(Path(__file__).resolve().parents[2] / "app" / "dashboard.py")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture
def dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password_hash: str) -> AppTest:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(write_lake(tmp_path, random_traces(seed=3))))
    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", password_hash)
    monkeypatch.setattr("app.auth.FAILURE_DELAY_S", 0.0)
    return AppTest.from_file(DASHBOARD, default_timeout=60)


def _shows_data(app: AppTest) -> bool:
    return bool(app.metric or app.dataframe or app.get("plotly_chart"))


def test_a_hash_checks_its_own_password_only(password_hash: str) -> None:
    assert verify_password(PASSWORD, password_hash)
    assert not verify_password(PASSWORD + " ", password_hash)
    assert not verify_password("", password_hash)
    other = hash_password(PASSWORD)
    assert other != password_hash  # a fresh salt each time
    assert parse_hash(other)[1:4] == parse_hash(password_hash)[1:4] == (2**15, 8, 1)


@pytest.mark.parametrize(
    "text",
    ["hunter2", "scrypt$16384$8$1$c2FsdA==", "scrypt$1000$8$1$c2FsdA==$a2V5", "bcrypt$x$y$z$s$k"],
)
def test_a_malformed_hash_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(PasswordHashError):
        parse_hash(text)
    with pytest.raises(SettingsError, match="FLYWHEEL_DASHBOARD_PASSWORD_HASH"):
        Settings.from_env({"FLYWHEEL_DASHBOARD_PASSWORD_HASH": text})


def test_nothing_is_shown_before_the_password(dashboard: AppTest) -> None:
    app = dashboard.run()
    assert not app.exception, [e.value for e in app.exception]
    assert not _shows_data(app)
    assert [t.value for t in app.title] == ["Flywheel"]
    assert app.text_input[0].label == "Password"


def test_a_wrong_password_is_refused(dashboard: AppTest) -> None:
    app = dashboard.run()
    app.text_input[0].input("not it")
    app.button[0].click().run()
    assert [e.value for e in app.error] == ["Wrong password."]
    assert not _shows_data(app)


def test_the_right_password_opens_the_overview_and_sign_out_closes_it(dashboard: AppTest) -> None:
    app = dashboard.run()
    app.text_input[0].input(PASSWORD)
    app.button[0].click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title[0].value == "Overview"
    assert {m.label for m in app.metric} >= {"Requests", "Error rate"}
    next(b for b in app.sidebar.button if b.label == "Sign out").click().run()
    assert not _shows_data(app) and app.text_input[0].label == "Password"


def test_oidc_secrets_ask_the_identity_provider_instead(
    dashboard: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Streamlit's [auth] secrets the gate offers st.login (the provider itself cannot run
    here), and shows nothing before it."""
    monkeypatch.delenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH")
    dashboard.secrets["auth"] = {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "flywheel",
        "client_secret": "secret",
        "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
    }
    app = dashboard.run()
    assert not app.exception, [e.value for e in app.exception]
    assert not _shows_data(app)
    assert [b.label for b in app.button] == ["Sign in"]
    assert not app.text_input


def test_without_settings_the_dashboard_is_open(
    dashboard: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH")
    app = dashboard.run()
    assert app.title[0].value == "Overview" and _shows_data(app)


def test_hash_password_command_reads_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "hash-password"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert verify_password(PASSWORD, result.stdout.strip())
    empty = subprocess.run(
        [sys.executable, "-m", "app.cli", "hash-password"],
        input="\n",
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2 and "empty password" in empty.stderr


@pytest.mark.browser
def test_a_real_browser_sees_the_sign_in_then_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password_hash: str
) -> None:
    from playwright.sync_api import sync_playwright

    from tests.app.browser import CHROMIUM, CHROMIUM_ARGS, dashboard

    monkeypatch.setenv("FLYWHEEL_DASHBOARD_PASSWORD_HASH", password_hash)
    lake = write_lake(tmp_path, random_traces(seed=3))
    with dashboard(lake) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{url}/cost")  # a deep link is gated too
            field = page.get_by_label("Password", exact=True)
            field.wait_for(timeout=60_000)
            assert page.locator('[data-testid="stMetric"]').count() == 0
            field.fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="Cost").wait_for(timeout=60_000)
            page.locator('[data-testid="stMetric"]').first.wait_for(timeout=60_000)
        finally:
            browser.close()
