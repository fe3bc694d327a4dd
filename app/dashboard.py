"""The Streamlit entry point (``streamlit run app/dashboard.py``): page navigation only.

Each page is a script in ``app/screens/`` that draws the shared sidebar filters and calls
``analytics``; adding a page is one line in ``PAGES``. (Not ``app/pages/``: Streamlit still
treats a ``pages/`` folder beside the entry script as the old automatic navigation and shows
its file names in the sidebar when a page is opened by its URL.)

Sign-in (:mod:`app.auth`) runs before navigation, so no page runs until the visitor is in.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run app/dashboard.py` puts app/ on sys.path, not the project root, so a source
# checkout that is not pip-installed could not import `app`, `analytics` or `store`.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from app.auth import require_sign_in, signed_in  # noqa: E402 (needs the path above)
from app.settings import Settings  # noqa: E402

_PAGES_DIR = Path(__file__).resolve().parent / "screens"

PAGES = [
    st.Page(
        _PAGES_DIR / "overview.py", title="Overview", icon=":material/monitoring:", default=True
    ),
    st.Page(_PAGES_DIR / "latency.py", title="Latency & goodput", icon=":material/speed:"),
    st.Page(_PAGES_DIR / "cost.py", title="Cost", icon=":material/payments:"),
    st.Page(_PAGES_DIR / "guardrails.py", title="Guardrails & quality", icon=":material/shield:"),
    st.Page(_PAGES_DIR / "drift.py", title="Drift", icon=":material/trending_flat:"),
    st.Page(
        _PAGES_DIR / "feedback.py", title="Feedback & business", icon=":material/thumbs_up_down:"
    ),
    st.Page(_PAGES_DIR / "evals.py", title="Evals", icon=":material/fact_check:"),
    st.Page(_PAGES_DIR / "opportunities.py", title="Opportunities", icon=":material/savings:"),
    st.Page(_PAGES_DIR / "traces.py", title="Traces", icon=":material/account_tree:"),
    st.Page(_PAGES_DIR / "alerts.py", title="Alerts", icon=":material/notifications:"),
]


def main() -> None:
    """Configure the app and run the selected page."""
    st.set_page_config(page_title="Flywheel", page_icon=":material/cyclone:", layout="wide")
    password_hash = Settings.from_env().dashboard_password_hash
    # Navigation first, so a deep link (/cost?…) still opens its page after signing in; its
    # menu stays hidden, and the page does not run, until then.
    page = st.navigation(PAGES, position="sidebar" if signed_in(password_hash) else "hidden")
    require_sign_in(password_hash)
    page.run()


main()
