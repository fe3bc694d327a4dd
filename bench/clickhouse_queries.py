"""The analytics functions on 10M spans: ClickHouse (chdb, in-process) next to DuckDB.

The same 10M-span lake as the analytics benchmark (:func:`bench.overview_queries.ensure_lake`)
is copied once into a ClickHouse database (chdb, ``bench/out/chdb-10m``): every lake table into
the ClickHouse catalog's tables (``store.clickhouse.catalog``), the spans with one
``INSERT … SELECT … FROM file('…/*.parquet')``. Then, in a fresh process per engine, each
function of :mod:`bench.analytics_queries` runs as the pages call it over the "Last 7 days"
window and all 30 days: one warm-up, the median of up to 5 (``_time``), each written as soon
as it is measured; an engine gets at most ``BUDGET_S`` for all of them. DuckDB reads the lake
with its kept per-segment work (``store.derived``); ClickHouse computes everything from the
spans table each time (there is no kept work on ClickHouse).

Both engines use the machine's cores (2 here). chdb is ClickHouse 26.9 in the benchmark's
process, which is the same engine a ClickHouse server runs, without the network.

    python -m bench clickhouse
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.analytics_queries import _analytics_calls, _explorer_calls
from bench.overview_queries import _time, _windows, ensure_lake
from bench.report import OUT_DIR, Figure

NAME = "clickhouse_queries"
DATABASE = "flywheel"
TARGET_S = 1.0
#: Time one engine may take for every function and window (the slowest ClickHouse functions
#: take minutes each on 10M spans); the functions not reached by then are left out.
BUDGET_S = 15 * 60


def _chdb_dir(out_dir: Path) -> Path:
    return out_dir / "chdb-10m"


def _engine(path: Path) -> Any:
    from chdb import session as chdb_session

    from store.clickhouse.catalog import ChdbEngine

    return ChdbEngine(chdb_session.Session(str(path)), DATABASE)


def _load(lake: Path, path: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Copy the lake into a fresh chdb database; return the row counts and time taken."""
    from store.catalog import quote_identifier
    from store.clickhouse.catalog import open_clickhouse_catalog
    from store.lake import DEFAULT_SPECS

    if path.exists():
        shutil.rmtree(path)
    engine = _engine(path)
    open_clickhouse_catalog(engine, DATABASE)
    counts = {}
    began = time.perf_counter()
    for spec in DEFAULT_SPECS:
        files = sorted((lake / spec.name).glob("date=*/*.parquet"))
        if not files:
            continue
        columns = ", ".join(quote_identifier(n) for n in spec.schema.names)
        glob = str((lake / spec.name).resolve()) + "/date=*/*.parquet"
        log(f"clickhouse: loading {spec.name} ({len(files)} files) …")
        engine.query(
            f"INSERT INTO {DATABASE}.{quote_identifier(spec.name)} ({columns}) "
            f"SELECT {columns} FROM file('{glob}', Parquet)",
            {},
        )
        counts[spec.name] = engine.query(
            f"SELECT count() AS n FROM {DATABASE}.{quote_identifier(spec.name)}", {}
        )["n"][0].as_py()
    seconds = time.perf_counter() - began
    engine.session.close()
    return {"rows": counts, "load_s": seconds}


def child_main(argv: list[str]) -> int:
    """Time every function on one engine in this process; print JSON."""
    from datetime import timedelta

    from analytics.cost import install_prices
    from analytics.scope import Scope, data_time_range
    from store import derived
    from store.catalog import open_catalog
    from store.clickhouse.catalog import ClickHouseCatalog, open_clickhouse_catalog

    engine_name = argv[argv.index("--engine") + 1]
    lake = Path(argv[argv.index("--lake") + 1])
    conn: Any
    if engine_name == "duckdb":
        derived.DAY_SETTLE = timedelta(0)  # the synthetic lake's past days have settled
        conn = open_catalog(lake)
    else:
        engine = _engine(Path(argv[argv.index("--chdb") + 1]))
        conn = open_clickhouse_catalog(engine, DATABASE)
        assert isinstance(conn, ClickHouseCatalog)
    install_prices(conn)
    first, last = data_time_range(conn, "default")
    assert first is not None and last is not None, "the lake is empty"
    progress = Path(argv[argv.index("--progress") + 1])
    with progress.open("w") as out:
        for window, (start, end) in _windows(first, last).items():
            scope = Scope("default", start, end)
            calls = {**_analytics_calls(scope), **_explorer_calls(conn, scope)}
            for name, call in calls.items():
                timing = _time(lambda call=call: call(conn))
                out.write(json.dumps({"window": window, "name": name, **timing}) + "\n")
                out.flush()
    return 0


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Load the lake into chdb (once per lake), time both engines, return figures."""
    manifest = ensure_lake(out_dir, log)
    lake = Path(manifest["path"])
    path = _chdb_dir(out_dir)
    marker = path / "loaded-from.json"
    loaded: dict[str, Any]
    if marker.exists() and json.loads(marker.read_text()).get("lake") == manifest:
        loaded = json.loads(marker.read_text())["load"]
    else:
        loaded = _load(lake, path, log)
        marker.write_text(json.dumps({"lake": manifest, "load": loaded}))
    log(f"clickhouse: {loaded['rows'].get('spans', 0):,} spans in chdb ({loaded['load_s']:.0f} s)")
    timings: dict[str, dict[str, dict[str, Any]]] = {}
    for engine in ("duckdb", "clickhouse"):
        log(f"clickhouse: timing the analytics on {engine} (at most {BUDGET_S / 60:.0f} min) …")
        progress = out_dir / f"clickhouse-timings-{engine}.jsonl"
        command = [sys.executable, "-m", "bench.clickhouse_queries", "--engine", engine]
        command += ["--lake", str(lake), "--chdb", str(path), "--progress", str(progress)]
        try:
            subprocess.run(command, cwd=Path(__file__).parent.parent, timeout=BUDGET_S, check=True)
        except subprocess.TimeoutExpired:
            log(f"clickhouse: {engine} ran out of its time; the functions not reached are missing")
        timings[engine] = {"7d": {}, "all": {}}
        for line in progress.read_text().splitlines():
            row = json.loads(line)
            timings[engine][row.pop("window")][row.pop("name")] = row
    figures = []
    for window, label in (("7d", "last 7 days"), ("all", "all 30 days")):
        for name, ch in timings["clickhouse"][window].items():
            duck = timings["duckdb"][window].get(name, {}).get("median_s", float("nan"))
            median = ch["median_s"]
            figures.append(
                Figure(
                    f"ClickHouse (chdb), 10M spans, {label}",
                    name,
                    median,
                    "s",
                    f"< {TARGET_S:g} s",
                    median < TARGET_S,
                    f"DuckDB {duck:.2f} s; median of {len(ch['runs_s'])}",
                )
            )
            log(f"clickhouse:   {name}, {label}: chdb {median:.3f} s, DuckDB {duck:.3f} s")
    return figures, {"lake": manifest, "load": loaded, "timings": timings}


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
