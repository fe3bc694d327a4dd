"""Every command that writes, on a ClickHouse store (``--store``), stores what it stores in the lake.

A ClickHouse server is emulated on 127.0.0.1 (``tests/clickhouse_http.py``: ClickHouse's HTTP
interface over the real engine, chdb). ``flywheel demo`` loads the sample data into a fresh
database there and into a Parquet lake; then ingest, metric imports, alert checks, annotations
and eval datasets and runs are written to both, and each table is compared row for row (the
rows' keys) or by what the commands print from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import evals.compare  # noqa: F401  (the package, before the Evals page's folder is on sys.path)
from analytics.annotations import annotated_traces_jsonl, new_annotation, write_annotations
from analytics.scope import Scope, data_time_range
from app.cli import main, sample_data_dir
from app.settings import Settings
from app.stores import open_store, open_tables
from ingest.clickhouse_rows import otel_traces_rows
from ingest.guard import Guard
from ingest.otlp import decode_otlp_protobuf
from store.catalog import open_catalog
from store.clickhouse import otel_traces_ddl
from store.clickhouse.catalog import ChdbEngine
from store.clickhouse.writer import ClickHouseTables
from tests.app.test_alerts_cmd import RULES, SPIKE_END
from tests.app.test_clickhouse_store import shown_on_page
from tests.clickhouse_http import PASSWORD, ClickHouseHTTP, clickhouse_http_fixture  # noqa: F401
from tests.clickhouse_session import new_database, process_session
from tests.engines import assert_close, sample_requests

TABLES = ("spans", "feedback", "guardrails", "eval_cases", "eval_runs", "eval_results")
KEYS = {
    "spans": "trace_id, span_id",
    "feedback": "feedback_id",
    "guardrails": "result_id",
    "eval_cases": "dataset, version, case_id",
    "alerts": "alert_id",
    "business_metrics": "metric_id",
    "annotations": "annotation_id",
}


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample data in a Parquet lake, as ``flywheel demo`` loads it."""
    data_dir = tmp_path_factory.mktemp("lake")
    assert main(["demo", "--no-dashboard", "--data-dir", str(data_dir)]) == 0
    return data_dir


@pytest.fixture(scope="module")
def store(clickhouse_http: ClickHouseHTTP) -> Iterator[str]:
    """A ``clickhouse://`` URL of a fresh database (dropped after the module)."""
    database = new_database()
    yield (
        f"clickhouse://default:{quote(PASSWORD, safe='')}@127.0.0.1:"
        f"{clickhouse_http.port}/{database}"
    )
    process_session().query("USE default")
    process_session().query(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store's local folder: write-ahead logs and caches only."""
    return tmp_path_factory.mktemp("store-local")


@pytest.fixture(scope="module")
def demo(store: str, local: Path, lake: Path) -> str:
    """The sample data loaded by ``flywheel demo --store`` (after the lake's, for the order)."""
    assert main(["demo", "--no-dashboard", "--store", store, "--data-dir", str(local)]) == 0
    return store


def _keys(conn: object, table: str) -> set[tuple[object, ...]]:
    rows = conn.execute(f"SELECT {KEYS[table]} FROM {table}").fetchall()  # type: ignore[attr-defined]
    return set(rows)


def _count(conn: object, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[attr-defined]


def _on(store: str | None, data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, store=store)


def test_the_demo_stores_the_same_rows_in_clickhouse_as_in_the_lake(
    demo: str, local: Path, lake: Path
) -> None:
    on_lake, on_clickhouse = open_catalog(lake), open_store(_on(demo, local))
    for table in TABLES:
        expected = _count(on_lake, table)
        assert expected > 0, table
        assert _count(on_clickhouse, table) == expected, table
    for table in ("spans", "feedback", "guardrails", "eval_cases"):
        assert _keys(on_clickhouse, table) == _keys(on_lake, table), table
    # Nothing went to a lake in the local folder: it holds only the (emptied) write-ahead logs.
    assert not list(local.glob("*/date=*/*.parquet"))
    assert not [p for p in local.rglob("wal/*") if p.is_file()]


def test_the_demo_does_not_load_twice_into_clickhouse(
    demo: str, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--no-dashboard", "--store", demo, "--data-dir", str(local)]) == 0
    assert "already has spans; not loading the sample data again" in capsys.readouterr().out
    assert _count(open_store(_on(demo, local)), "eval_runs") == 2


def test_reingesting_into_clickhouse_adds_nothing(
    demo: str, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = open_store(_on(demo, local))
    before, guardrails = _count(conn, "spans"), _count(conn, "guardrails")
    traces = sample_data_dir() / "traces.pb.gz"
    assert main(["ingest", str(traces), "--store", demo, "--data-dir", str(local)]) == 0
    out = capsys.readouterr().out
    assert f"({before + guardrails:,} already present, skipped)" in out
    assert "clickhouse://default@127.0.0.1:" in out and PASSWORD not in out
    assert _count(open_store(_on(demo, local)), "spans") == before


def test_ingesting_a_new_file_into_clickhouse_gives_the_lakes_report(
    demo: str, local: Path, lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spans the demo did not have, ingested into both: the cost report over them agrees."""
    generated = tmp_path / "more"
    assert main(["sample-data", "--traces", "40", "--seed", "99", "--out", str(generated),
                 "--formats", "jsonl"]) == 0  # fmt: skip
    capsys.readouterr()
    for where in (["--data-dir", str(lake)], ["--store", demo, "--data-dir", str(local)]):
        assert main(["ingest", str(generated), *where]) == 0
    assert capsys.readouterr().out.count("ingested ") == 2
    report = ["report", "cost", "--since", "2020-01-01", "--format", "json", "--by", "model"]
    assert main([*report, "--data-dir", str(lake)]) == 0
    on_lake = json.loads(capsys.readouterr().out)
    assert main([*report, "--store", demo, "--data-dir", str(local)]) == 0
    on_clickhouse = json.loads(capsys.readouterr().out)
    assert on_lake["cost_by_model"] and on_clickhouse.keys() == on_lake.keys()
    for mine, theirs in zip(on_clickhouse["cost_by_model"], on_lake["cost_by_model"], strict=True):
        assert mine["model"] == theirs["model"]
        assert mine["num_requests"] == theirs["num_requests"]
        assert mine["cost_usd"] == pytest.approx(theirs["cost_usd"], rel=1e-9)


def test_imported_metrics_land_in_clickhouse_once(
    demo: str, local: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(
        "date,metric,value\n2026-11-10,dau,120\n2026-11-11,dau,131\n2026-11-12,dau,n/a\n"
    )
    command = ["import-metrics", str(path), "--store", demo, "--data-dir", str(local)]
    assert main(command) == 1  # one row rejected, the two valid ones stored
    assert "2 values (2 new), 1 rejected" in capsys.readouterr().out
    assert main(command) == 1
    assert "2 values (0 new)" in capsys.readouterr().out
    rows = (
        open_store(_on(demo, local))
        .execute("SELECT metric, value FROM business_metrics ORDER BY value")
        .fetchall()
    )
    assert rows == [("dau", 120.0), ("dau", 131.0)]


def test_alerts_checked_on_clickhouse_are_recorded_there_once(
    demo: str, local: Path, lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text(RULES)
    check = ["alerts", "check", "--rules", str(rules), "--at", SPIKE_END, "--format", "json"]
    for where in (["--data-dir", str(lake)], ["--store", demo, "--data-dir", str(local)]):
        for _ in range(2):  # the same moment twice is recorded once
            assert main([*check, *where]) == 1  # the spike rule fired
    on_lake, on_clickhouse = open_catalog(lake), open_store(_on(demo, local))
    assert _count(on_lake, "alerts") == 1
    assert _keys(on_clickhouse, "alerts") == _keys(on_lake, "alerts")


def test_an_annotation_written_to_clickhouse_is_read_back_with_its_trace(
    demo: str, local: Path
) -> None:
    settings = _on(demo, local)
    conn = open_store(settings)
    trace_id = conn.execute(
        "SELECT min(trace_id) FROM spans WHERE parent_span_id IS NULL"
    ).fetchone()[0]
    tables = open_tables(settings)
    assert isinstance(tables, ClickHouseTables)
    note = new_annotation("default", trace_id, "wrong  citation", score=0.25, author="qa")
    assert write_annotations(tables, [note]) == 1
    assert write_annotations(tables, [note]) == 0  # the same annotation again adds nothing
    first, last = data_time_range(conn, "default")
    assert first is not None and last is not None
    lines = list(annotated_traces_jsonl(conn, Scope("default", first, last), "wrong citation"))
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["trace_id"] == trace_id
    assert [(a["label"], a["score"], a["author"]) for a in record["annotations"]] == [
        ("wrong citation", 0.25, "qa")
    ]
    assert record["spans"] and all(s["trace_id"] == trace_id for s in record["spans"])


def test_an_eval_run_on_clickhouse_compares_as_on_the_lake(
    demo: str, local: Path, lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's two runs, compared on each store: the same cases, scores and verdicts."""
    shown = {}
    for name, where in (("lake", ["--data-dir", str(lake)]),
                        ("clickhouse", ["--store", demo, "--data-dir", str(local)])):  # fmt: skip
        assert main(["eval", "runs", *where]) == 0
        runs = re.findall(
            r"^(run-\S+)\s+sample-support@1\s+recorded: (\w+)", capsys.readouterr().out, re.M
        )
        by_source = {source: run for run, source in runs}
        assert main(["eval", "compare", by_source["simulated"], "--baseline", by_source["reference"],
                     "--format", "json", *where]) == 0  # fmt: skip
        shown[name] = json.loads(capsys.readouterr().out)
    for report in shown.values():
        del report["candidate"], report["baseline"]  # run ids: new ones on each store
    assert shown["lake"]["evaluators"] and shown["lake"]["performance"]["num_pairs"] == 200
    assert_close(shown["clickhouse"], shown["lake"])


def test_a_dataset_created_on_clickhouse_gets_the_next_version(
    demo: str, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--store", demo, "--data-dir", str(local)]
    create = [
        "eval",
        "dataset",
        "create",
        "sample-support",
        "--since",
        "2020-01-01",
        "--limit",
        "5",
    ]
    assert main([*create, *where]) == 0
    written = re.search(r"wrote sample-support@(\d+): (\d+) cases", capsys.readouterr().out)
    assert written is not None and written.group(1) == "2"
    rows = (
        open_store(_on(demo, local))
        .execute(
            "SELECT version, count(*) FROM eval_cases WHERE dataset = 'sample-support' "
            "GROUP BY version ORDER BY version"
        )
        .fetchall()
    )
    assert rows == [(1, 200), (2, int(written.group(2)))]
    assert 0 < int(written.group(2)) <= 5


def test_compact_and_backfill_say_what_they_do_on_clickhouse(
    demo: str, local: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--store", demo, "--data-dir", str(local)]
    assert main(["compact", *where]) == 0
    assert "nothing to compact: ClickHouse merges its own parts" in capsys.readouterr().out
    assert main(["backfill-guardrails", *where]) == 0  # the Collector stored nothing here
    assert "0 guardrail results and 0 feedback records read from 0 spans" in capsys.readouterr().out


def test_an_unreachable_store_is_a_clear_error_and_writes_nothing_locally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces = sample_data_dir() / "traces.pb.gz"
    store = "clickhouse://default:secret@127.0.0.1:9/flywheel"  # the discard port: refused
    assert main(["ingest", str(traces), "--store", store, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot open clickhouse://default@127.0.0.1:9/flywheel" in err and "secret" not in err
    assert not list(tmp_path.rglob("*.parquet"))


def test_clickhouse_tables_report_whether_a_table_has_rows(demo: str, local: Path) -> None:
    tables = open_tables(_on(demo, local))
    assert tables.has_data("spans")
    assert not tables.has_data("embeddings")


def _with_feedback_events() -> ExportTraceServiceRequest:
    """A sample request whose model calls carry a thumbs-down event with a comment, the way
    an app records feedback on its traces (``[feedback]`` in ``ingest/conventions.toml``)."""
    request = sample_requests()[0]
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                event = span.events.add(
                    name="user_feedback", time_unix_nano=span.end_time_unix_nano
                )
                for key, text in (("feedback.kind", "thumbs_down"), ("feedback.comment", "stale")):
                    event.attributes.add(key=key).value.string_value = text
    return request


@pytest.fixture(scope="module")
def collector_store(clickhouse_http: ClickHouseHTTP) -> Iterator[str]:
    """A database holding the sample traces only in the Collector's ``otel_traces`` table (the
    first request with feedback events on its spans)."""
    database = new_database()
    engine = ChdbEngine(process_session(), database)
    engine.query(otel_traces_ddl(database), {})  # as the exporter creates it
    requests = [_with_feedback_events(), *sample_requests()[1:]]
    engine.insert("otel_traces", pa.concat_tables(otel_traces_rows(r) for r in requests))
    yield (
        f"clickhouse://default:{quote(PASSWORD, safe='')}@127.0.0.1:"
        f"{clickhouse_http.port}/{database}"
    )
    process_session().query("USE default")
    process_session().query(f"DROP DATABASE IF EXISTS {database}")


def test_guardrails_and_feedback_of_collector_spans_are_written_once(
    collector_store: str, lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Collector's spans get the guardrail results and span feedback the lake's ingest
    derived from the same traces, and a second pass adds nothing."""
    where = ["--store", collector_store, "--data-dir", str(tmp_path)]
    conn = open_store(_on(collector_store, tmp_path))
    assert _count(conn, "guardrails") == 0  # nothing derives them on the way in
    assert main(["backfill-guardrails", *where]) == 0
    out = capsys.readouterr().out
    # The lake holds the sample's traces (and, by now, others): compare on the sample's.
    traces = {row[0] for row in conn.execute("SELECT DISTINCT trace_id FROM spans").fetchall()}
    on_lake = open_catalog(lake)
    guardrails = "SELECT trace_id, result_id FROM guardrails"
    mine = set(conn.execute(guardrails).fetchall())
    assert mine and mine == {r for r in on_lake.execute(guardrails).fetchall() if r[0] in traces}
    # The feedback events: what Flywheel's own decoder and guard make of the same request.
    decoded = decode_otlp_protobuf(_with_feedback_events().SerializeToString())
    expected = Guard().apply(decoded.spans).feedback
    assert expected.num_rows == decoded.spans.num_rows  # one per span
    stored = conn.execute(
        "SELECT feedback_id, trace_id, span_id, kind, value, text FROM feedback"
    ).fetchall()
    assert set(stored) == set(
        zip(*(expected.column(c).to_pylist() for c in
              ("feedback_id", "trace_id", "span_id", "kind", "value", "text")), strict=True)
    )  # fmt: skip
    assert {(row[3], row[4], row[5]) for row in stored} == {("thumbs", -1.0, "stale")}
    new = _count(conn, "guardrails") + _count(conn, "feedback")
    assert new > 0 and out.rstrip().endswith(f"{new:,} new")
    assert main(["backfill-guardrails", *where, "--since", "2d"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(" 0 new")
    assert main(["backfill-guardrails", "--since", "2d", "--data-dir", str(lake)]) == 2


@pytest.mark.parametrize("page", ["evals.py", "guardrails.py"])
def test_the_pages_show_the_demo_on_clickhouse_as_on_the_lake(
    page: str, demo: str, local: Path, lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Evals page (the demo's runs, written to ClickHouse) and the Guardrails page (results
    derived at ingest) show what they show over the lake."""
    on_lake = shown_on_page(page, None, lake, monkeypatch)
    assert on_lake[0] and on_lake[2]  # the page has numbers and tables
    assert shown_on_page(page, demo, local, monkeypatch) == on_lake
