"""The dashboard and the reports on ClickHouse (``--store`` / ``FLYWHEEL_STORE``), unchanged.

A ClickHouse server is emulated on 127.0.0.1 (``tests/clickhouse_http.py``: ClickHouse's HTTP
interface over the real engine, chdb); the lake's rows are copied into a database there, and
the Overview page and ``flywheel report`` are pointed at it with a ``clickhouse://`` URL. They
show exactly what they show over the lake.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from streamlit.testing.v1 import AppTest

import evals.compare  # noqa: F401  (the package, before the Evals page's folder is on sys.path)
from app import components as ui
from app.cli import main
from tests.analytics.lake import random_traces, write_lake
from tests.app.test_overview_page import PAGE, _expected, _expected_tiles, _shown_tiles
from tests.clickhouse_http import PASSWORD, ClickHouseHTTP, clickhouse_http_fixture  # noqa: F401
from tests.clickhouse_lake import open_clickhouse_lake
from tests.engines import assert_close


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = random_traces(seed=15, num_traces=150, span_hours=24 * 10)
    rows += random_traces(seed=16, num_traces=12, project="other")
    return write_lake(tmp_path_factory.mktemp("ch-store"), rows)


@pytest.fixture
def store_url(lake: Path, clickhouse_http: ClickHouseHTTP) -> str:
    """A ``clickhouse://`` URL of a database holding the lake's rows."""
    catalog = open_clickhouse_lake(lake)
    catalog.execute("SELECT count(*) FROM spans").fetchall()  # copies the lake's segments
    password = quote(PASSWORD, safe="")
    return f"clickhouse://default:{password}@127.0.0.1:{clickhouse_http.port}/{catalog.database}"


def test_the_overview_page_on_clickhouse_shows_the_lakes_numbers(
    lake: Path, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_STORE", store_url)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "cache"))  # not the lake
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(PAGE, default_timeout=120)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    expected = _expected(lake, ui.DEFAULT_PRESET)
    assert expected.num_requests > 0
    assert _shown_tiles(app) == _expected_tiles(expected)
    assert len(app.get("plotly_chart")) == 3
    captions = [caption.value for caption in app.sidebar.caption]
    assert any("Data: `clickhouse://default@127.0.0.1:" in c for c in captions), captions
    assert not any(quote(PASSWORD, safe="") in c or PASSWORD in c for c in captions)


@pytest.mark.parametrize("kind", ["latency", "cost", "goodput"])
def test_reports_on_clickhouse_equal_the_reports_on_the_lake(
    kind: str, lake: Path, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["report", kind, "--since", "2025-01-01", "--format", "json", "--by", "model"]
    assert main([*common, "--data-dir", str(lake)]) == 0
    on_lake = json.loads(capsys.readouterr().out)
    assert main([*common, "--data-dir", str(tmp_path), "--store", store_url]) == 0
    on_clickhouse = json.loads(capsys.readouterr().out)
    assert on_lake  # the report has numbers
    assert on_clickhouse.keys() == on_lake.keys()
    assert_close(on_clickhouse, on_lake)


def test_a_bad_store_url_is_refused_with_the_variable_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["report", "cost", "--store", "mysql://db/x"]) == 2
    err = capsys.readouterr().err
    assert "--store" in err and "clickhouse://" in err


SCREENS = Path(PAGE).parent


def shown_on_page(
    page: str, store: str | None, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], int, list[tuple[int, int]]]:
    """What a page shows over ``store`` (None: the lake in ``data_dir``): its metrics, how many
    charts, and its tables' shapes."""
    if store is None:
        monkeypatch.delenv("FLYWHEEL_STORE", raising=False)
    else:
        monkeypatch.setenv("FLYWHEEL_STORE", store)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FLYWHEEL_PROJECT", raising=False)
    app = AppTest.from_file(str(SCREENS / page), default_timeout=180)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return (
        {metric.label: metric.value for metric in app.metric},
        len(app.get("plotly_chart")),
        [frame.value.shape for frame in app.dataframe],
    )


@pytest.mark.parametrize(
    "page",
    [
        "latency.py",
        "cost.py",
        "guardrails.py",
        "traces.py",
        "feedback.py",
        "alerts.py",
        "drift.py",
        "opportunities.py",
        "evals.py",
    ],
)
def test_every_page_renders_on_clickhouse_as_on_the_lake(
    page: str, lake: Path, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_lake = shown_on_page(page, None, lake, monkeypatch)
    assert shown_on_page(page, store_url, tmp_path / "cache", monkeypatch) == on_lake
