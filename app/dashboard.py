"""The Streamlit entry point (``streamlit run app/dashboard.py``): page navigation only.

Each page is a script in ``app/pages/`` that draws the shared sidebar filters and calls
``analytics``; adding a page is one line in ``PAGES``.
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

_PAGES_DIR = Path(__file__).resolve().parent / "pages"

PAGES = [
    st.Page(
        _PAGES_DIR / "overview.py", title="Overview", icon=":material/monitoring:", default=True
    ),
    st.Page(_PAGES_DIR / "latency.py", title="Latency & goodput", icon=":material/speed:"),
    st.Page(_PAGES_DIR / "cost.py", title="Cost", icon=":material/payments:"),
    st.Page(_PAGES_DIR / "traces.py", title="Traces", icon=":material/account_tree:"),
]


def main() -> None:
    """Configure the app and run the selected page."""
    st.set_page_config(page_title="Flywheel", page_icon=":material/cyclone:", layout="wide")
    st.navigation(PAGES).run()


main()
