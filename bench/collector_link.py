"""The Collector's spans on ClickHouse: what the link into ``spans`` costs and what it saves.

Input: the ingest benchmark's 250k-span file (:func:`bench.ingest_file.ensure_inputs`), turned
into the exporter's ``otel_traces`` rows (``ingest.clickhouse_rows``) once, outside the timing.
In a fresh chdb database (ClickHouse 26.9 in-process, the machine's cores):

* ``insert_plain_s``: inserting the rows into ``otel_traces`` with nothing linked, as the
  exporter's inserts cost on their own;
* ``insert_linked_s``: the same rows into a second database whose ``otel_traces`` feeds
  ``spans`` through the materialized view (``store.clickhouse.link``): normalizing on insert;
* ``link_copy_s``: linking a database that already holds the rows (the one-time copy);
* per query, ``SELECT count(), sum(input_tokens) FROM spans`` (what the analytics read now)
  against the same over the plain view ``otel_spans`` (normalizing at read time, what a view
  over ``otel_traces`` costs each query); the median of 5 after a warm-up.

    python -m bench collector
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ingest_file import ensure_inputs
from bench.report import OUT_DIR, Figure

NAME = "collector_link"
QUERY = "SELECT count() AS n, sum(input_tokens) AS tokens FROM {db}.{relation}"


def _median_s(call: Callable[[], object], repeat: int = 5) -> float:
    call()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Time the exporter's inserts with and without the link, the copy, and one query."""
    import pyarrow as pa
    from chdb import session as chdb_session

    from ingest.clickhouse_rows import otel_traces_rows
    from ingest.clickhouse_spans import spans_select_sql
    from sample_data.formats import read_otlp_pb
    from store.clickhouse import otel_traces_ddl
    from store.clickhouse.catalog import ChdbEngine, create_tables
    from store.clickhouse.link import link_collector
    from store.lake import DEFAULT_SPECS

    source = Path(ensure_inputs(out_dir, log)["files"]["250k"]["path"])
    log(f"collector: reading {source.name} into otel_traces rows …")
    rows = pa.concat_tables(otel_traces_rows(r) for r in read_otlp_pb(source))
    path = out_dir / "chdb-collector"
    shutil.rmtree(path, ignore_errors=True)
    session = chdb_session.Session(str(path))
    engines: dict[str, Any] = {}
    for name in ("plain", "linked", "copied"):
        session.query(f"CREATE DATABASE {name}")
        engine = engines[name] = ChdbEngine(session, name)
        engine.query(otel_traces_ddl(name), {})
        create_tables(engine, name, DEFAULT_SPECS)
    details: dict[str, Any] = {"num_spans": rows.num_rows, "source": str(source)}

    def timed(call: Callable[[], object]) -> float:
        began = time.perf_counter()
        call()
        return time.perf_counter() - began

    log("collector: inserting without and with the link …")
    details["insert_plain_s"] = timed(lambda: engines["plain"].insert("otel_traces", rows))
    link_collector(engines["linked"], "linked", spans_select_sql("linked.otel_traces"))
    details["insert_linked_s"] = timed(lambda: engines["linked"].insert("otel_traces", rows))
    engines["copied"].insert("otel_traces", rows)
    details["link_copy_s"] = timed(
        lambda: link_collector(engines["copied"], "copied", spans_select_sql("copied.otel_traces"))
    )
    stored = engines["linked"].query("SELECT count() AS n FROM linked.spans", {})["n"][0].as_py()
    assert stored == rows.num_rows, (stored, rows.num_rows)
    log("collector: one query over spans and over the otel_spans view …")
    for relation in ("spans", "otel_spans"):
        sql = QUERY.format(db="linked", relation=relation)
        details[f"query_{relation}_s"] = _median_s(lambda sql=sql: engines["linked"].query(sql, {}))
    session.close()
    shutil.rmtree(path, ignore_errors=True)
    n = rows.num_rows
    overhead = details["insert_linked_s"] - details["insert_plain_s"]
    details["normalize_spans_per_s"] = n / overhead if overhead > 0 else None
    figures = [
        Figure(NAME, "exporter insert, 250k spans, no link", details["insert_plain_s"], "s"),
        Figure(NAME, "exporter insert, 250k spans, linked into spans", details["insert_linked_s"], "s"),
        Figure(NAME, "one-time copy when linking 250k stored spans", details["link_copy_s"], "s"),
        Figure(NAME, "query over spans (linked)", details["query_spans_s"], "s"),
        Figure(NAME, "query over the otel_spans view", details["query_otel_spans_s"], "s"),
    ]  # fmt: skip
    return figures, details
