"""Pieces every dashboard page shares: the catalog connection, the sidebar filters (kept in the
URL so a link reproduces the view) and number formatters.

Pages render, they do not query: they get a connection and a :class:`analytics.scope.Scope`
from here and hand both to ``analytics`` functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import streamlit as st

from analytics.cost import install_prices
from analytics.scope import Scope, data_time_range, list_models, list_projects, list_services
from app.settings import Settings
from store.catalog import open_catalog

EMPTY = "—"

# --------------------------------------------------------------------------- formatting


def format_ms(ms: float | None) -> str:
    """Milliseconds for people: ``850 ms``, ``4.2 ms``, ``1.25 s``, ``2.5 min``."""
    if ms is None or math.isnan(ms):
        return EMPTY
    if abs(ms) < 10:
        return f"{ms:.1f} ms"
    if round(abs(ms)) < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    if round(abs(seconds), 2) < 60:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def format_usd(usd: float | None) -> str:
    """Dollars with sensible precision: ``$1,234.56``, ``$0.42``, ``$0.0042``, ``$0.00``."""
    if usd is None or math.isnan(usd):
        return EMPTY
    if usd == 0:
        return "$0.00"
    sign = "-" if usd < 0 else ""
    value = abs(usd)
    if value >= 0.01:
        return f"{sign}${value:,.2f}"
    # Below a cent, two significant digits: per-call costs are often fractions of a cent.
    decimals = -math.floor(math.log10(value)) + 1
    return f"{sign}${value:.{decimals}f}"


def format_count(n: float | None) -> str:
    """Counts: ``950``, ``12.3k``, ``4.56M``, ``1.2B``."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return EMPTY
    value = abs(n)
    sign = "-" if n < 0 else ""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        # 0.9995: the value that the next smaller unit would round up to "1000".
        if value >= threshold * 0.9995:
            scaled = value / threshold
            digits = 2 if scaled < 10 else 1 if scaled < 100 else 0
            return f"{sign}{scaled:.{digits}f}{suffix}"
    return f"{sign}{value:.0f}" if float(value).is_integer() else f"{sign}{value:.1f}"


def format_percent(fraction: float | None) -> str:
    """A fraction as a percentage: ``12.3%``, ``0.45%``, ``0%``."""
    if fraction is None or math.isnan(fraction):
        return EMPTY
    if fraction == 0:
        return "0%"
    percent = fraction * 100
    return f"{percent:.1f}%" if abs(percent) >= 1 else f"{percent:.2f}%"


# --------------------------------------------------------------------------- data access


def settings() -> Settings:
    """The dashboard's settings, read from ``FLYWHEEL_*`` environment variables."""
    return Settings.from_env()


@st.cache_resource(ttl=timedelta(minutes=1), show_spinner=False)
def _open_catalog(data_dir: str) -> duckdb.DuckDBPyConnection:
    # Reopened every minute so model names that arrive later get mapped to prices too.
    conn = open_catalog(Path(data_dir))
    install_prices(conn)
    return conn


def catalog() -> duckdb.DuckDBPyConnection:
    """A cursor on the shared catalog connection for this script run (cursors are thread-safe
    to use one per thread; the connection itself is not)."""
    return _open_catalog(str(settings().data_dir)).cursor()


def show_empty_lake(data_dir: Path) -> None:
    """Tell the user the lake is empty and how to fill it."""
    st.info(
        f"No spans yet in `{data_dir}`.\n\n"
        "Load some data, then reload this page:\n\n"
        "- `flywheel demo` — generate the sample data set and open the dashboard on it\n"
        "- `flywheel ingest PATH` — load OTLP (`.pb`, `.json`) or JSONL files, or a folder\n"
        "- `flywheel serve` — receive spans from instrumented apps over OTLP/HTTP\n\n"
        "Set `FLYWHEEL_DATA_DIR` (or `--data-dir`) if your data lives elsewhere.",
        icon=":material/inbox:",
    )


# --------------------------------------------------------------------------- filters

#: Time range presets: URL value → (label, width; ``None`` means all data).
TIME_PRESETS: dict[str, tuple[str, timedelta | None]] = {
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
    "all": ("All time", None),
    "custom": ("Custom", None),
}
DEFAULT_PRESET = "7d"

# Widget keys, and the URL parameter each one is kept in.
_KEY_PROJECT = "filter_project"
_KEY_RANGE = "filter_range"
_KEY_DATES = "filter_dates"
_KEY_SERVICES = "filter_services"
_KEY_MODELS = "filter_models"
# The last filters chosen, kept outside widget state so they survive a page switch
# (Streamlit forgets the state of widgets that a run does not draw, and clears the URL).
_KEY_REMEMBERED = "filter_remembered"


@dataclass(frozen=True)
class TimeWindow:
    """The window the filters select, and the data's own extent (for captions)."""

    start: datetime
    end: datetime


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def preset_window(preset: str, first: datetime, last: datetime) -> TimeWindow:
    """The window of a preset, ending just after the latest data (so sample data shows)."""
    end = _floor_minute(last) + timedelta(minutes=1)
    width = TIME_PRESETS[preset][1]
    start = _floor_minute(first) if width is None else end - width
    return TimeWindow(start=start, end=end)


def custom_window(first_day: date, last_day: date) -> TimeWindow:
    """The window from the start of ``first_day`` to the end of ``last_day``, in UTC."""
    start = datetime.combine(first_day, time(), tzinfo=UTC)
    end = datetime.combine(last_day, time(), tzinfo=UTC) + timedelta(days=1)
    return TimeWindow(start=start, end=end)


def _parse_day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _seed(key: str, value: Any) -> None:
    # Widgets get their first value from session state (seeded from the URL), never a default,
    # so Streamlit does not warn about two sources of truth.
    if key not in st.session_state:
        st.session_state[key] = value


def _remembered() -> dict[str, Any]:
    """Filters from the URL when the session starts, else the last ones chosen."""
    if _KEY_REMEMBERED not in st.session_state:
        params = st.query_params
        st.session_state[_KEY_REMEMBERED] = {
            "project": params.get("project"),
            "range": params.get("range"),
            "start": params.get("start"),
            "end": params.get("end"),
            "service": params.get_all("service"),
            "model": params.get_all("model"),
        }
    remembered: dict[str, Any] = st.session_state[_KEY_REMEMBERED]
    return remembered


def _only(values: Sequence[str], options: Sequence[str]) -> list[str]:
    allowed = set(options)
    return [value for value in values if value in allowed]


def sidebar_filters(conn: duckdb.DuckDBPyConnection) -> Scope | None:
    """Draw the shared sidebar filters and return the scope they select (None: empty lake).

    The filters are project, time range (presets ending at the latest data, or custom dates),
    services and models; they are mirrored into ``st.query_params`` so a link shows the same view.
    """
    projects = list_projects(conn)
    if not projects:
        return None
    remembered = _remembered()
    sidebar = st.sidebar
    sidebar.header("Filters")

    default_project = settings().project
    wanted = remembered["project"]
    fallback = default_project if default_project in projects else projects[0]
    _seed(_KEY_PROJECT, wanted if wanted in projects else fallback)
    if st.session_state[_KEY_PROJECT] not in projects:
        st.session_state[_KEY_PROJECT] = fallback
    project: str = sidebar.selectbox("Project", projects, key=_KEY_PROJECT)

    first, last = data_time_range(conn, project)
    if first is None or last is None:  # a project listed but without spans: a race, be calm
        return None
    presets = list(TIME_PRESETS)
    wanted_range = remembered["range"]
    _seed(_KEY_RANGE, wanted_range if wanted_range in presets else DEFAULT_PRESET)
    preset: str = sidebar.selectbox(
        "Time range",
        presets,
        key=_KEY_RANGE,
        format_func=lambda value: TIME_PRESETS[value][0],
        help="Presets end at the latest span in the data, so older data sets still show.",
    )
    if preset == "custom":
        first_day = _parse_day(remembered["start"]) or (last - timedelta(days=7)).date()
        last_day = _parse_day(remembered["end"]) or last.date()
        _seed(_KEY_DATES, (first_day, last_day))
        picked = sidebar.date_input("Dates (UTC)", key=_KEY_DATES)
        days = [day for day in (picked if isinstance(picked, tuple) else (picked,)) if day]
        # While the user is between the two clicks of a range, show the first day alone.
        window = (
            custom_window(days[0], days[-1]) if days else custom_window(last.date(), last.date())
        )
    else:
        window = preset_window(preset, first, last)
    sidebar.caption(f"{window.start:%Y-%m-%d %H:%M} → {window.end:%Y-%m-%d %H:%M} UTC")

    services = list_services(conn, project)
    _seed(_KEY_SERVICES, _only(remembered["service"], services))
    st.session_state[_KEY_SERVICES] = _only(st.session_state[_KEY_SERVICES], services)
    chosen_services: list[str] = sidebar.multiselect(
        "Services", services, key=_KEY_SERVICES, placeholder="All services"
    )
    models = list_models(conn, project)
    _seed(_KEY_MODELS, _only(remembered["model"], models))
    st.session_state[_KEY_MODELS] = _only(st.session_state[_KEY_MODELS], models)
    chosen_models: list[str] = sidebar.multiselect(
        "Models", models, key=_KEY_MODELS, placeholder="All models"
    )
    sidebar.caption(f"Data: `{settings().data_dir}`")

    chosen: dict[str, Any] = {
        "project": project,
        "range": preset,
        "start": window.start.date().isoformat() if preset == "custom" else None,
        "end": (window.end - timedelta(days=1)).date().isoformat() if preset == "custom" else None,
        "service": chosen_services,
        "model": chosen_models,
    }
    st.session_state[_KEY_REMEMBERED] = chosen
    _write_query_params(chosen)
    return Scope(
        project=project,
        start=window.start,
        end=window.end,
        services=tuple(chosen_services),
        models=tuple(chosen_models),
    )


def _write_query_params(chosen: dict[str, Any]) -> None:
    params = {key: value for key, value in chosen.items() if value not in (None, [])}
    if params != {key: _url_value(key) for key in params} or set(st.query_params) - set(params):
        st.query_params.from_dict(params)


def _url_value(key: str) -> str | list[str] | None:
    values = st.query_params.get_all(key)
    if key in ("service", "model"):
        return values
    return values[0] if values else None
