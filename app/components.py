"""Pieces every dashboard page shares: the catalog connection, the sidebar filters (kept in the
URL so a link reproduces the view) and number formatters.

Pages render, they do not query: they get a connection and a :class:`analytics.scope.Scope`
from here and hand both to ``analytics`` functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import streamlit as st

from analytics.alerts import AlertConfig, AlertResult, evaluate_alerts, load_alert_config
from analytics.changes import ChangeEvent, change_events
from analytics.cost import install_prices
from analytics.scope import (
    Scope,
    data_time_range,
    list_models,
    list_projects,
    list_routes,
    list_services,
)
from analytics.slos import SLOConfig, load_slo_config
from app.report import duration_text
from app.settings import Settings
from app.stores import open_store, open_tables, where_stored
from store.lake import Lake

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


def cache_key() -> tuple[str, str | None]:
    """The data directory and price file: the first arguments of a page's ``st.cache_data``
    functions, so a cached result is never served for another lake or price table."""
    config = settings()
    return str(config.data_dir), None if config.price_file is None else str(config.price_file)


def _open_catalog(data_dir: str, price_file: str | None) -> duckdb.DuckDBPyConnection:
    return _open_store(data_dir, price_file, settings().store)


@st.cache_resource(ttl=timedelta(minutes=1), show_spinner=False)
def _open_store(
    data_dir: str, price_file: str | None, store: str | None
) -> duckdb.DuckDBPyConnection:
    # Reopened every minute so model names that arrive later get mapped to prices too.
    conn: duckdb.DuckDBPyConnection = open_store(replace(settings(), data_dir=Path(data_dir)))
    install_prices(conn, price_file)
    return conn


@st.cache_resource(show_spinner=False)
def _open_tables(data_dir: str, store: str | None) -> Lake:
    return open_tables(replace(settings(), data_dir=Path(data_dir), store=store))


def tables() -> Lake:
    """Where the dashboard's writes go (annotations, alerts, eval datasets): the lake, or
    ClickHouse's tables with ``FLYWHEEL_STORE`` (``app.stores.open_tables``)."""
    config = settings()
    return _open_tables(str(config.data_dir), config.store)


def catalog() -> duckdb.DuckDBPyConnection:
    """A cursor on the shared catalog connection for this script run (cursors are thread-safe
    to use one per thread; the connection itself is not)."""
    return _open_catalog(*cache_key()).cursor()


@st.cache_data(ttl=timedelta(minutes=1), show_spinner=False)
def _slo_config(path: str | None) -> SLOConfig:
    return load_slo_config(None if path is None else Path(path))


def slo_config() -> SLOConfig:
    """The SLOs: ``FLYWHEEL_SLO_FILE`` when set, else the built-in ``analytics/slos.toml``."""
    path = settings().slo_file
    return _slo_config(None if path is None else str(path))


def alert_config() -> AlertConfig:
    """The alert rules: ``FLYWHEEL_ALERTS_FILE`` when set, else ``analytics/alerts.toml``."""
    return load_alert_config(settings().alerts_file)


@st.cache_data(ttl=timedelta(minutes=1), show_spinner=False)
def _active_alerts(
    data_dir: str, price_file: str | None, project: str, at: datetime, rules: AlertConfig,
    slos: SLOConfig,
) -> list[AlertResult]:  # fmt: skip
    conn = _open_catalog(data_dir, price_file).cursor()
    return evaluate_alerts(conn, project, at, rules, slos)


def active_alerts(scope: Scope) -> list[AlertResult]:
    """Every rule evaluated at the end of the scope's range (project only: rules watch the
    whole project), cached for a minute."""
    config = settings()
    price_file = None if config.price_file is None else str(config.price_file)
    return _active_alerts(
        str(config.data_dir), price_file, scope.project, scope.end, alert_config(), slo_config()
    )


def evidence_link(scope: Scope, result: AlertResult) -> str:
    """Where a person looks next for an alert: the pages and traces behind its value."""
    window = {"from": iso(result.start), "to": iso(result.end)}
    if result.rule.metric == "error_rate":
        return traces_link(scope, **window, status="error")
    if result.rule.metric == "burn_rate":
        return traces_link(scope, **window, missed_slo="any")
    if result.rule.metric == "guardrail_spikes":
        spikes = result.evidence.get("spikes") or [{}]
        first = spikes[0]
        return traces_link(
            scope,
            **window,
            gr=first.get("guardrail"),
            gr_stage=first.get("stage"),
            gr_category=first.get("category"),
        )
    if result.rule.metric == "cost_per_day":
        return traces_link(scope, **window, sort="cost")
    return traces_link(scope, **window)


@st.cache_data(ttl=timedelta(minutes=1), show_spinner=False)
def _change_events(
    data_dir: str, price_file: str | None, scope: Scope
) -> list[ChangeEvent]:  # fmt: skip
    return change_events(_open_catalog(data_dir, price_file).cursor(), scope)


def changes(scope: Scope) -> list[ChangeEvent]:
    """The change events in the scope's range (analytics.changes), cached for a minute."""
    config = settings()
    price_file = None if config.price_file is None else str(config.price_file)
    return _change_events(str(config.data_dir), price_file, scope)


CHANGE_COLORS = {
    "model_version": "#9467bd",
    "system_prompt": "#8c564b",
    "new_route": "#7f7f7f",
    "new_tool": "#7f7f7f",
    "price": "#bcbd22",
}


#: The first customdata item of a change marker: selections leave markers out by it.
CHANGE_MARKER = "change-marker"


def mark_changes(figure: Any, events: Sequence[ChangeEvent]) -> Any:
    """A dashed vertical line, labelled on hover, at each change event on a time-series chart.

    The hover label is a marker point at the foot of the line; :func:`selected_points` leaves
    those points out, so selecting on a chart selects only its data.
    """
    for event in events:
        figure.add_vline(
            x=event.time,
            line_dash="dash",
            line_width=1,
            line_color=CHANGE_COLORS.get(event.kind, "#7f7f7f"),
        )
        figure.add_scatter(
            x=[event.time],
            y=[0],
            mode="markers",
            marker={"symbol": "triangle-up", "size": 9, "color": CHANGE_COLORS.get(event.kind)},
            name=event.kind.replace("_", " "),
            hovertext=[f"{event.time:%Y-%m-%d %H:%M} UTC · {event.label}"],
            hoverinfo="text",
            customdata=[[CHANGE_MARKER, event.kind]],
            showlegend=False,
        )
    return figure


def embedding_progress(what: str = "texts") -> Callable[[int, int], None]:
    """A progress bar for an embedding job (``analytics.embeddings.Progress``): it appears with
    the first batch that has to be embedded and goes when the job is done."""
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        text = f"Embedding {done:,} of {total:,} {what} (once: they are cached in the lake)…"
        if bar is None:
            bar = st.progress(0.0, text=text)
        bar.progress(min(done / max(total, 1), 1.0), text=text)
        if done >= total:
            bar.empty()
            bar = None

    return update


def show_empty_lake() -> None:
    """Tell the user the store is empty and how to fill it."""
    st.info(
        f"No spans yet in `{where_stored(settings())}`.\n\n"
        "Load some data, then reload this page:\n\n"
        "- `flywheel demo` — generate the sample data set and open the dashboard on it\n"
        "- `flywheel ingest PATH` — load OTLP (`.pb`, `.json`) or JSONL files, or a folder\n"
        "- `flywheel serve` — receive spans from instrumented apps over OTLP/HTTP\n\n"
        "Set `FLYWHEEL_DATA_DIR` (or `--data-dir`), or `FLYWHEEL_STORE` for ClickHouse, if "
        "your data lives elsewhere.",
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
_KEY_ROUTES = "filter_routes"
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
            "route": params.get_all("route"),
        }
    remembered: dict[str, Any] = st.session_state[_KEY_REMEMBERED]
    return remembered


def _only(values: Sequence[str], options: Sequence[str]) -> list[str]:
    allowed = set(options)
    return [value for value in values if value in allowed]


def sidebar_filters(conn: duckdb.DuckDBPyConnection) -> Scope | None:
    """Draw the shared sidebar filters and return the scope they select (None: empty lake).

    The filters are project, time range (presets ending at the latest data, or custom dates),
    services, models and routes (root span names, see :mod:`analytics.scope`); they are
    mirrored into ``st.query_params`` so a link shows the same view.
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
    routes = list_routes(conn, project)
    _seed(_KEY_ROUTES, _only(remembered.get("route", []), routes))
    st.session_state[_KEY_ROUTES] = _only(st.session_state[_KEY_ROUTES], routes)
    chosen_routes: list[str] = sidebar.multiselect(
        "Routes",
        routes,
        key=_KEY_ROUTES,
        placeholder="All routes",
        help="A request's route is its root span's name, e.g. `POST /chat`.",
    )
    sidebar.caption(f"Data: `{where_stored(settings())}`")

    chosen: dict[str, Any] = {
        "project": project,
        "range": preset,
        "start": window.start.date().isoformat() if preset == "custom" else None,
        "end": (window.end - timedelta(days=1)).date().isoformat() if preset == "custom" else None,
        "service": chosen_services,
        "model": chosen_models,
        "route": chosen_routes,
    }
    st.session_state[_KEY_REMEMBERED] = chosen
    _write_query_params(chosen)
    return Scope(
        project=project,
        start=window.start,
        end=window.end,
        services=tuple(chosen_services),
        models=tuple(chosen_models),
        routes=tuple(chosen_routes),
    )


#: The URL parameters the sidebar filters own; a page may add its own (a tab, a measure).
FILTER_PARAMS = ("project", "range", "start", "end", "service", "model", "route")
_MULTI_PARAMS = ("service", "model", "route")


def _write_query_params(chosen: dict[str, Any]) -> None:
    # Only the filter keys are touched: a page's own parameters (its tab, say) stay.
    for key in FILTER_PARAMS:
        value = chosen.get(key)
        if value in (None, []):
            if key in st.query_params:
                del st.query_params[key]
        elif value != _url_value(key):
            st.query_params[key] = value


def _url_value(key: str) -> str | list[str] | None:
    values = st.query_params.get_all(key)
    if key in _MULTI_PARAMS:
        return values
    return values[0] if values else None


def url_choice(
    widget: Any,
    label: str,
    options: Sequence[str],
    key: str,
    format_func: Any = str,
    **kwargs: Any,
) -> str:
    """A page's own single-choice control (``st.selectbox``, ``st.segmented_control``…) whose
    value lives in the URL under ``key`` as the option itself (short, stable), not its label.

    The first option is the default and is left out of the URL.
    """
    if key not in st.session_state or st.session_state[key] not in options:
        wanted = st.query_params.get(key)
        st.session_state[key] = wanted if wanted in options else options[0]
    value = widget(label, list(options), key=key, format_func=format_func, **kwargs)
    chosen = value if value in options else options[0]
    if chosen == options[0]:
        if key in st.query_params:
            del st.query_params[key]
    elif st.query_params.get(key) != chosen:
        st.query_params[key] = chosen
    return str(chosen)


# --------------------------------------------------------------------------- deep links

#: The Traces page. Links follow its URL contract (``app/trace_links.py``): the sidebar's filter
#: parameters plus ``from``/``to`` (an exact UTC window, ISO 8601, overriding ``range``),
#: ``status``, ``op``, ``user``, ``missed_slo`` (an SLO name or ``any``), ``sort`` (``start``,
#: ``duration``, ``ttft``, ``cost``, ``tokens``), and ``trace`` with ``t`` (its start) or
#: ``session`` to open one.
TRACES_PAGE = "/traces"

#: A group of a breakdown table → the Traces parameter that selects it (provider has none).
_GROUP_PARAMS = {
    "model": "model",
    "service": "service",
    "route": "route",
    "operation": "op",
    "user": "user",
    "session": "session",
    "prompt": "prompt",
}


def traces_link(scope: Scope, **extra: str | Sequence[str] | None) -> str:
    """A link to the Traces list with this page's filters (from the URL) and drill-down ones.

    ``extra`` keys replace filter parameters of the same name (``model="gpt-4o"`` narrows the
    models); ``None`` drops one.
    """
    params: dict[str, Any] = {
        key: _url_value(key) for key in FILTER_PARAMS if _url_value(key) not in (None, [])
    }
    params.setdefault("project", scope.project)
    for key, value in extra.items():
        if value is None or value == []:
            params.pop(key, None)
        else:
            params[key] = value if isinstance(value, str) else list(value)
    return f"{TRACES_PAGE}?{urlencode(params, doseq=True)}"


def group_link(scope: Scope, by: str, value: Any, **extra: str) -> str | None:
    """A Traces link narrowed to one group of a breakdown (a model, a route, a UTC day…);
    ``None`` when the Traces list cannot select that group."""
    if value is None:
        return None
    if by == "day":
        start = datetime.combine(value, time()).replace(tzinfo=UTC)
        return traces_link(
            scope, **{"from": iso(start), "to": iso(start + timedelta(days=1))}, **extra
        )
    param = _GROUP_PARAMS.get(by)
    return None if param is None else traces_link(scope, **{param: str(value)}, **extra)


def trace_link(scope: Scope, trace_id: str, start: datetime | None = None) -> str:
    """A link that opens one trace in the Traces page (``t``: its start, so it opens fast)."""
    return traces_link(scope, trace=trace_id, t=None if start is None else iso(start))


def iso(moment: datetime) -> str:
    """A UTC timestamp for a URL: ``2026-11-22T00:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- charts


def bucket_label(bucket: timedelta) -> str:
    """A time bucket in words, for "per …": ``hour``, ``3 hours``, ``day``, ``15 minutes``."""
    return duration_text(bucket).removeprefix("1 ")


def chart_layout(figure: Any, title: str, height: int = 340) -> Any:
    """The layout every page chart shares: a title, a compact margin, the legend below."""
    figure.update_layout(
        title=title,
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.18},
        hovermode="x unified",
    )
    return figure


def selected_points(event: Any) -> list[dict[str, Any]]:
    """The points a user selected (clicked or boxed) on a chart drawn with ``on_select``,
    without the change markers (:func:`mark_changes`)."""
    try:
        points = event.selection.points
    except AttributeError:
        return []
    return [p for p in points or [] if (p.get("customdata") or [None])[0] != CHANGE_MARKER]


def drill_down(label: str, url: str, help_text: str | None = None) -> None:
    """A link into the Traces list (the page arrives with its own issue)."""
    st.markdown(f"[{label} →]({url})", help=help_text)
