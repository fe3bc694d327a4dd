"""The ``clickhouse://`` store end to end: URL, clickhouse-connect client, catalog, analytics.

There is no ClickHouse server here: ``tests/clickhouse_http.py`` answers ClickHouse's HTTP
interface on 127.0.0.1 with the process's chdb session, so the client, its handshake, server-side
parameter binding, Arrow results and Arrow inserts are real and only the socket's far end is a
stand-in. The analytics over that engine give the DuckDB catalog's numbers, and the chdb
engine's, on the same lake.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from analytics import cost, latency, overview
from analytics.scope import Scope
from store.catalog import open_catalog
from store.clickhouse.catalog import ClickHouseCatalog, open_clickhouse_catalog
from store.clickhouse.connect import ClickHouseURL, ClientEngine, connect, parse_store_url
from store.clickhouse.transpile import SETTINGS, bind, to_clickhouse
from store.schema import SPAN_SCHEMA
from tests.analytics.lake import T0, random_traces, span, write_lake
from tests.clickhouse_http import PASSWORD, ClickHouseHTTP, clickhouse_http_fixture  # noqa: F401
from tests.clickhouse_lake import open_clickhouse_lake
from tests.clickhouse_session import process_session
from tests.engines import assert_close

PROJECT = "default"

# --- the store URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("clickhouse://ch.internal", ClickHouseURL("ch.internal", 8123, "default")),
        (
            "clickhouses://reader@ch.example.com/flywheel",
            ClickHouseURL("ch.example.com", 8443, "flywheel", "reader", "", secure=True),
        ),
        (
            "clickhouse://svc%2Bflywheel:p%40ss%3Aw%2Frd%25@10.0.0.5:9000/fly_2",
            ClickHouseURL("10.0.0.5", 9000, "fly_2", "svc+flywheel", "p@ss:w/rd%"),
        ),
        ("clickhouses://h:8123/", ClickHouseURL("h", 8123, "default", secure=True)),
    ],
)
def test_a_store_url_names_host_port_database_and_user(url: str, want: ClickHouseURL) -> None:
    assert parse_store_url(url) == want


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgres://u:hunter2@h/db", "use clickhouse://"),
        ("http://h:8123/db", "use clickhouse://"),
        ("clickhouse://u:hunter2@/db", "no host"),
        ("clickhouse://h/my-db", "letters, digits and _ only"),
        ("clickhouse://h/a/b", "letters, digits and _ only"),
        ("clickhouse://h/x;DROP%20TABLE", "letters, digits and _ only"),
        ("clickhouse://h:port/db", "store URL: .*[Pp]ort"),
    ],
)
def test_a_bad_store_url_says_why_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as raised:
        parse_store_url(url)
    assert "hunter2" not in str(raised.value)


def test_the_password_is_not_in_the_repr() -> None:
    where = parse_store_url("clickhouses://admin:hunter2@ch.example.com/flywheel")
    assert where.password == "hunter2"
    assert repr(where) == "ClickHouseURL('clickhouses://admin@ch.example.com:8443/flywheel')"
    assert "hunter2" not in f"{where!r} {where!s} {[where]}"


# --- the client engine over the emulated server -------------------------------------------------


def _url(server: ClickHouseHTTP, database: str, password: str = PASSWORD) -> str:
    return f"clickhouse://default:{quote(password, safe='')}@127.0.0.1:{server.port}/{database}"


@pytest.fixture
def database() -> Iterator[str]:
    """A database name of the test's own (``connect`` creates it), dropped after the test."""
    name = f"t_{secrets.token_hex(6)}"
    yield name
    process_session().query(f"DROP DATABASE IF EXISTS {name}")


def test_connect_authenticates_and_creates_the_database(
    clickhouse_http: ClickHouseHTTP, database: str
) -> None:
    engine = connect(_url(clickhouse_http, database))
    assert isinstance(engine, ClientEngine)
    assert engine.database == database
    assert clickhouse_http.requests[-1].sql == f"CREATE DATABASE IF NOT EXISTS {database}"
    got = engine.query("SELECT currentDatabase() AS name, {n:Int32} + 1 AS n", {"n": "41"})
    assert got.to_pylist() == [{"name": database, "n": 42}]
    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
        connect(_url(clickhouse_http, database, password="not " + PASSWORD))


def test_every_statement_carries_the_settings(
    clickhouse_http: ClickHouseHTTP, database: str
) -> None:
    engine = connect(_url(clickhouse_http, database))
    engine.query("CREATE TABLE t (x Int64) ENGINE = MergeTree ORDER BY x", {})
    engine.insert("t", pa.table({"x": pa.array([], pa.int64())}))
    # an aggregate over no rows is NULL only with the settings (ClickHouse's default is 0)
    got = engine.query("SELECT sum(x) AS total FROM t", {})
    assert got.to_pylist() == [{"total": None}]
    want = {name: str(value) for name, value in SETTINGS.items()}
    ddl, insert, query = clickhouse_http.requests[-3:]
    assert insert.sql == f"INSERT INTO {database}.t (`x`) FORMAT Arrow"
    for request in (ddl, insert, query):
        assert request.database == database
        assert {k: request.settings.get(k) for k in want} == want


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 AS x",
        "  with t AS (SELECT 1 AS x) SELECT x FROM t",
        "/* the transpiler keeps a leading comment */ SELECT 1 AS x",
        "-- a line comment\nSELECT 1 AS x",
        "(SELECT 1 AS x) UNION ALL (SELECT 2 AS x LIMIT 0)",
    ],
)
def test_a_query_returns_its_rows_whatever_it_starts_with(
    clickhouse_http: ClickHouseHTTP, database: str, sql: str
) -> None:
    engine = connect(_url(clickhouse_http, database))
    assert engine.query(sql, {}).to_pylist() == [{"x": 1}]


def test_a_server_error_raises_with_its_text(
    clickhouse_http: ClickHouseHTTP, database: str
) -> None:
    engine = connect(_url(clickhouse_http, database))
    with pytest.raises(DatabaseError, match="UNKNOWN_FUNCTION"):
        engine.query("SELECT no_such_function(1) AS x", {})
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        engine.insert("missing", pa.table({"x": [1]}))


# --- the catalog and the analytics --------------------------------------------------------------


def _rows() -> list[dict[str, Any]]:
    rows = random_traces(7, num_traces=80, span_hours=40.0, project=PROJECT)
    rows += random_traces(8, num_traces=10, project="other")
    # text the transport must keep exactly: quotes, backslashes, tabs, newlines, non-ASCII
    rows.append(span(project=PROJECT, name="say 'hi'\\n\tC:\\temp\nλ", start_time=T0))
    return rows


@pytest.fixture(scope="module")
def catalogs(
    clickhouse_http: ClickHouseHTTP, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, ClickHouseCatalog, ClickHouseCatalog]]:
    """The same lake in DuckDB's catalog, chdb's, and a catalog over the client engine."""
    rows = _rows()
    data_dir = write_lake(Path(tmp_path_factory.mktemp("lake")), rows)
    duck = open_catalog(data_dir)
    chdb = open_clickhouse_lake(data_dir)
    name = f"t_{secrets.token_hex(6)}"
    client = open_clickhouse_catalog(connect(_url(clickhouse_http, name)), name)
    client.load("spans", pa.Table.from_pylist(rows, schema=SPAN_SCHEMA))
    catalogs: tuple[Any, ...] = (duck, chdb, client)
    for catalog in catalogs:
        cost.install_prices(catalog)
    yield duck, chdb, client
    process_session().query(f"DROP DATABASE IF EXISTS {name}")


def _same(results: list[Any]) -> None:
    """The client engine's result (last) equals DuckDB's (first) and chdb's."""
    want = results[0]
    for got in results[1:]:
        if isinstance(want, pl.DataFrame):
            assert got.columns == want.columns
            assert_close(got.to_dicts(), want.to_dicts())
        else:
            assert_close(asdict(got), asdict(want))


SCOPES = [
    Scope(PROJECT, T0, T0 + timedelta(days=2)),
    Scope(PROJECT, T0 + timedelta(hours=6), T0 + timedelta(hours=30)),
    Scope(PROJECT, T0, T0 + timedelta(days=2), models=("gpt-4o-2024-08-06",)),
]


def test_the_client_catalog_holds_the_rows_loaded(catalogs: Any) -> None:
    _, chdb, client = catalogs
    sql = "SELECT * FROM spans ORDER BY span_id"
    want = chdb.execute(sql).to_arrow_table()
    got = client.execute(sql).to_arrow_table()
    assert got.num_rows == len(_rows())
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()


@pytest.mark.parametrize("scope", SCOPES, ids=["all", "window", "model"])
def test_the_analytics_match_duckdb_and_chdb(catalogs: Any, scope: Scope) -> None:
    _same([overview.overview_summary(c, scope) for c in catalogs])
    assert overview.overview_summary(catalogs[0], scope).num_requests > 0
    _same([overview.top_models(c, scope) for c in catalogs])
    _same([overview.requests_by_time(c, scope, timedelta(hours=6)) for c in catalogs])
    _same([latency.latency_percentiles(c, scope) for c in catalogs])
    _same([latency.latency_percentiles(c, scope, "ttft_ms", "scoped_llm_calls") for c in catalogs])
    for by in ("model", "service", "day"):
        _same([cost.cost_by_dimension(c, scope, by) for c in catalogs])


# --- what goes over the wire --------------------------------------------------------------------

SCOPED_SQL = """
SELECT time_bucket($width, start_time) AS bucket_start, count(*) AS num_spans,
       any_value($note) AS note, any_value($models) AS models
FROM spans_between($start, $end)
WHERE project = $project AND (list_contains($models, response_model) OR name = $note)
GROUP BY bucket_start
ORDER BY bucket_start
"""


def test_the_sql_and_parameters_sent_are_the_transpilers_verbatim(
    catalogs: Any, clickhouse_http: ClickHouseHTTP
) -> None:
    duck, _, client = catalogs
    params = {
        "width": timedelta(hours=4),
        "note": "say 'hi'\\n\tC:\\temp\nλ",
        "models": ["gpt-4o-2024-08-06", "claude-3-5-sonnet-20241022", "it's \\ odd"],
        "start": T0,
        "end": T0 + timedelta(hours=20),
        "project": PROJECT,
    }
    text, bound = to_clickhouse(SCOPED_SQL, params, client.macros, client.database)
    assert bound == bind(params)
    assert bound["note"] == "say 'hi'\\\\n\\tC:\\\\temp\\nλ"  # ClickHouse's escaped format
    assert bound["models"] == (
        "['gpt-4o-2024-08-06','claude-3-5-sonnet-20241022','it\\'s \\\\ odd']"
    )
    assert bound["start"] == "2025-03-01 00:00:00.000000"
    assert bound["width"] == str(4 * 3600 * 10**6)

    got = client.execute(SCOPED_SQL, params).fetchall()
    sent = clickhouse_http.requests[-1]
    assert sent.sql == text + "\n FORMAT Arrow"
    assert sent.params == bound
    assert sent.database == client.database

    want = duck.execute(SCOPED_SQL, params).fetchall()
    assert len(want) > 1
    assert got == want
    assert got[0][2] == params["note"] and got[0][3] == params["models"]
