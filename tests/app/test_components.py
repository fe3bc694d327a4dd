"""Number formatters and time windows shared by the dashboard pages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest

from analytics.changes import ChangeEvent
from app import components as ui
from app.components import (
    EMPTY,
    custom_window,
    format_count,
    format_ms,
    format_percent,
    format_usd,
    preset_window,
)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, EMPTY),
        (float("nan"), EMPTY),
        (0.42, "0.4 ms"),
        (4.25, "4.2 ms"),
        (850.0, "850 ms"),
        (999.4, "999 ms"),
        (999.6, "1.00 s"),
        (1250.0, "1.25 s"),
        (59_990.0, "59.99 s"),
        (90_000.0, "1.5 min"),
    ],
)
def test_format_ms(ms: float | None, text: str) -> None:
    assert format_ms(ms) == text


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (None, EMPTY),
        (0.0, "$0.00"),
        (1234.5678, "$1,234.57"),
        (0.42, "$0.42"),
        (0.01, "$0.01"),
        (0.0042, "$0.0042"),
        (0.000012345, "$0.000012"),
        (-3.5, "-$3.50"),
    ],
)
def test_format_usd(usd: float | None, text: str) -> None:
    assert format_usd(usd) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, EMPTY),
        (0, "0"),
        (950, "950"),
        (1000, "1.00k"),
        (12_345, "12.3k"),
        (999_999, "1.00M"),
        (999_400, "999k"),
        (4_560_000, "4.56M"),
        (1_200_000_000, "1.20B"),
    ],
)
def test_format_count(n: int | None, text: str) -> None:
    assert format_count(n) == text


@pytest.mark.parametrize(
    ("fraction", "text"),
    [(None, EMPTY), (0.0, "0%"), (0.123, "12.3%"), (0.0045, "0.45%"), (1.0, "100.0%")],
)
def test_format_percent(fraction: float | None, text: str) -> None:
    assert format_percent(fraction) == text


def test_presets_end_just_after_the_latest_data() -> None:
    first = datetime(2025, 1, 1, 8, 30, 15, tzinfo=UTC)
    last = datetime(2025, 1, 20, 12, 0, 0, tzinfo=UTC)
    window = preset_window("7d", first, last)
    assert window.end == datetime(2025, 1, 20, 12, 1, tzinfo=UTC) > last
    assert window.end - window.start == timedelta(days=7)
    everything = preset_window("all", first, last)
    assert everything.start <= first and everything.end > last


def test_custom_window_covers_whole_days() -> None:
    window = custom_window(date(2025, 1, 1), date(2025, 1, 2))
    assert window.start == datetime(2025, 1, 1, tzinfo=UTC)
    assert window.end == datetime(2025, 1, 3, tzinfo=UTC)


def test_a_selection_leaves_the_change_markers_out() -> None:
    figure = go.Figure()
    figure.add_scatter(x=[1, 2], y=[3, 4], customdata=[["a"], ["b"]])
    event = ChangeEvent(
        kind="model_version",
        subject="gpt-4o",
        before="gpt-4o-2024-08-06",
        after="gpt-4o-2024-11-20",
        time=datetime(2026, 11, 22, tzinfo=UTC),
    )
    ui.mark_changes(figure, [event])
    marker = figure.data[-1]
    assert list(marker.customdata[0]) == [ui.CHANGE_MARKER, "model_version"]
    data_point = {"x": 1, "y": 3, "customdata": ["a"]}
    marker_point = {"x": event.time.isoformat(), "y": 0, "customdata": list(marker.customdata[0])}
    bare_point = {"x": 2, "y": 4}
    points = [data_point, marker_point, bare_point]
    selection = SimpleNamespace(selection=SimpleNamespace(points=points))
    assert ui.selected_points(selection) == [data_point, bare_point]
    assert ui.selected_points(None) == []
