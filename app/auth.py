"""Dashboard sign-in: off by default, a shared password, or OpenID Connect through Streamlit.

* **Password.** ``FLYWHEEL_DASHBOARD_PASSWORD_HASH`` holds a hash made by ``flywheel
  hash-password`` (:mod:`app.passwords`).
* **OIDC.** When Streamlit's secrets have an ``[auth]`` section (Streamlit's own ``st.login``
  configuration: ``redirect_uri``, ``cookie_secret``, and the provider's ``client_id``,
  ``client_secret``, ``server_metadata_url``), the dashboard asks the identity provider instead.

:func:`require_sign_in` runs before any page: until the visitor is signed in it draws the sign-in
form and stops the script, so no page reads data first.
"""

from __future__ import annotations

import time
from typing import Literal

import streamlit as st

from app.passwords import verify_password

__all__ = ["auth_mode", "require_sign_in", "signed_in"]

#: A wrong password costs this much more, which slows guessing through the form.
FAILURE_DELAY_S = 1.0
_SIGNED_IN = "flywheel_signed_in"


def auth_mode(password_hash: str | None) -> Literal["oidc", "password", "off"]:
    """Which sign-in the dashboard uses: OIDC when Streamlit's secrets configure it, else the
    password when a hash is set, else none."""
    try:
        has_oidc = "auth" in st.secrets
    except FileNotFoundError:  # no secrets.toml at all
        has_oidc = False
    if has_oidc:
        return "oidc"
    return "password" if password_hash else "off"


def signed_in(password_hash: str | None) -> bool:
    """Whether the visitor may see pages now (always, when sign-in is off)."""
    mode = auth_mode(password_hash)
    if mode == "oidc":
        return bool(st.user.get("is_logged_in", False))
    return mode == "off" or bool(st.session_state.get(_SIGNED_IN))


def require_sign_in(password_hash: str | None) -> None:
    """Draw the sign-in and stop the script until the visitor is signed in; a sign-out button
    in the sidebar once they are. Does nothing when sign-in is off."""
    mode = auth_mode(password_hash)
    if mode == "off":
        return
    if mode == "oidc":
        if not st.user.get("is_logged_in", False):
            st.title("Flywheel")
            st.write("Sign in to see the dashboard.")
            if st.button("Sign in", type="primary"):
                st.login()
            st.stop()
        st.sidebar.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
        if st.sidebar.button("Sign out"):
            st.logout()
        return
    assert password_hash is not None
    if not st.session_state.get(_SIGNED_IN):
        _, middle, _ = st.columns([1, 2, 1])
        with middle:
            st.title("Flywheel")
            with st.form("sign_in"):
                password = st.text_input("Password", type="password")
                submitted = st.form_submit_button("Sign in", type="primary")
            if submitted:
                if verify_password(password, password_hash):
                    st.session_state[_SIGNED_IN] = True
                    st.rerun()
                time.sleep(FAILURE_DELAY_S)
                st.error("Wrong password.")
        st.stop()
    if st.sidebar.button("Sign out"):
        del st.session_state[_SIGNED_IN]
        st.rerun()
