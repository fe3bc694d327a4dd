"""Overview analytics on a 10M-span lake: time per query, full window and last 7 days.

The lake (``bench/out/lake-10m``) is built once by :mod:`bench.synth` through
``store.lake.Lake.write`` in chunks of 50,000 spans (the ``LakeWriter``'s flush size, so the
lake has the segment layout a large ``flywheel ingest`` leaves, ~7 segments a day), and reused
while the synthesizer's code and parameters are unchanged.

The queries run in a fresh process with DuckDB's default threads (all cores), exactly as the
Overview page calls them: ``open_catalog`` + ``install_prices`` (page load), the filter lists
(``data_time_range``, ``list_services``, ``list_models``), then for each window
``overview_summary``, ``requests_by_time`` (the page's bucket, ``choose_bucket``),
``top_models`` (limit 10) and ``latency_percentiles`` on ``scoped_traces``. Each is run once to
warm up and then 5 times; the median counts. A query whose median misses the 1 s target is
run once more with DuckDB's JSON profiler (what ``EXPLAIN ANALYZE`` shows) and its costliest
operators are recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR, Figure, run_in_fresh_process

NAME = "overview_queries"
LAKE_NAME = "lake-10m"
MANIFEST = "bench-manifest.json"
CHUNK_TRACES = 6_250  # x 8 spans = 50,000 spans a segment write
RUNS = 5
#: A slow query gets fewer timed runs (at least MIN_RUNS) once they add up to this: a 15 s
#: query misses the target whatever its spread, and the whole ``make bench`` must stay short.
MAX_TIMED_S = 12.0
MIN_RUNS = 2
TARGET_S = 1.0
_REPO = Path(__file__).resolve().parent.parent


# --- the lake ---------------------------------------------------------------------------------


def _synth_hash() -> str:
    """A hash of the synthesizer's code and the span schema: either changes, a new lake."""
    from store.schema import SPAN_SCHEMA

    digest = hashlib.sha256((_REPO / "bench" / "synth.py").read_bytes())
    digest.update(SPAN_SCHEMA.to_string(show_schema_metadata=False).encode())
    return digest.hexdigest()[:10]


def ensure_lake(out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Build the 10M-span lake once; return its manifest."""
    from bench.synth import SynthSpec, generate_tables
    from ingest.guard import Guard
    from store.lake import Lake

    spec = SynthSpec()
    lake_dir = out_dir.resolve() / LAKE_NAME
    key = {
        "num_traces": spec.num_traces,
        "days": spec.days,
        "seed": spec.seed,
        "end": spec.end.isoformat(),
        "chunk_traces": CHUNK_TRACES,
        "synth_hash": _synth_hash(),
        "guardrails": "ingest.guard.Guard() per chunk",
    }
    manifest_path = lake_dir / MANIFEST
    if manifest_path.exists():
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("key") == key:
            log(f"overview: reusing the lake in {lake_dir}")
            return manifest
    shutil.rmtree(lake_dir, ignore_errors=True)
    log(f"overview: building a {spec.num_spans:,}-span lake in {lake_dir} …")
    lake = Lake(lake_dir)
    began = time.perf_counter()
    generate_s = write_s = guard_s = 0.0
    guard = Guard()
    num_written = 0
    tables = generate_tables(spec, CHUNK_TRACES)
    while True:
        t0 = time.perf_counter()
        table = next(tables, None)
        generate_s += time.perf_counter() - t0
        if table is None:
            break
        t0 = time.perf_counter()
        guard_s += _timed(lambda t=table: lake.write("guardrails", guard.apply(t).guardrails))
        num_written += lake.write("spans", table).num_written
        write_s += time.perf_counter() - t0
    segments = lake.list_segments("spans")
    manifest = {
        "key": key,
        "path": str(lake_dir),
        "num_spans": num_written,
        "num_traces": spec.num_traces,
        "window": [spec.start.isoformat(), spec.end.isoformat()],
        "num_partitions": len(lake.partitions("spans")),
        "num_segments": len(segments),
        "lake_bytes": sum(p.stat().st_size for p in segments),
        "build_s": round(time.perf_counter() - began, 1),
        "generate_s": round(generate_s, 1),
        "lake_write_s": round(write_s, 1),
        "guard_s": round(guard_s, 1),
        "written_through": "store.lake.Lake.write (conform, dedup in batch and against the "
        "partition's segments, sort, zstd Parquet, fsync + rename); guardrail results from "
        "ingest.guard.Guard.apply on each chunk",
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(
        f"overview: built in {manifest['build_s']} s (synthesis {manifest['generate_s']} s, "
        f"Lake.write {manifest['lake_write_s']} s), {manifest['num_segments']} segments, "
        f"{manifest['lake_bytes'] / 2**20:,.0f} MiB"
    )
    return manifest


def _timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


# --- the measured process ---------------------------------------------------------------------


class _ProfiledConnection:
    """A catalog connection whose cursors write DuckDB's JSON profile of each query to a file.

    The analytics run every query on ``conn.cursor()``, and profiling settings are per
    connection, so this is how the profile of the exact SQL they run is captured.
    """

    def __init__(self, conn: Any, path: Path) -> None:
        self._conn = conn
        self._path = path

    def cursor(self) -> Any:
        cur = self._conn.cursor()
        cur.execute("SET enable_profiling = 'json'")
        cur.execute(f"SET profiling_output = '{self._path}'")
        return cur


def _operators(nodes: list[dict[str, Any]], out: list[dict[str, Any]]) -> None:
    for node in nodes:
        extra = node.get("extra_info") or {}
        detail = {k: v for k, v in extra.items() if k in _PROFILE_DETAIL}
        out.append(
            {
                "operator": node.get("name"),
                "seconds": round(float(node.get("timing") or 0.0), 3),
                "rows": node.get("intermediate_rows"),
                "detail": json.dumps(detail, default=str)[:400],
            }
        )
        _operators(node.get("children") or [], out)


_PROFILE_DETAIL = (
    "Table",
    "Function",
    "Groups",
    "Aggregates",
    "Join Type",
    "Conditions",
    "Filters",
    "Total Files Read",
)


def _profile(conn: Any, call: Callable[[Any], Any], top: int = 8) -> dict[str, Any]:
    """Run ``call`` once with DuckDB's profiler; its costliest operators (thread-seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "profile.json"
        began = time.perf_counter()
        call(_ProfiledConnection(conn, path))
        wall_s = time.perf_counter() - began
        document = json.loads(path.read_text())
    operators: list[dict[str, Any]] = []
    _operators(document.get("operator") or [], operators)
    operators.sort(key=lambda o: o["seconds"], reverse=True)
    by_kind: dict[str, float] = {}
    for o in operators:
        by_kind[o["operator"]] = by_kind.get(o["operator"], 0.0) + o["seconds"]
    return {
        "wall_s": round(wall_s, 3),
        "operator_s_total": round(sum(o["seconds"] for o in operators), 3),
        "operator_s_by_kind": {
            k: round(v, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])[:8]
        },
        "top_operators": operators[:top],
        "sql": (document.get("query") or {}).get("sql"),
    }


def _time(call: Callable[[], Any]) -> dict[str, Any]:
    """One warm-up run, then up to RUNS timed runs (fewer once they pass MAX_TIMED_S)."""
    began = time.perf_counter()
    call()
    first_s = time.perf_counter() - began
    runs: list[float] = []
    cpu_runs: list[float] = []
    while len(runs) < RUNS and (len(runs) < MIN_RUNS or sum(runs) < MAX_TIMED_S):
        began, cpu_began = time.perf_counter(), time.process_time()
        call()
        runs.append(time.perf_counter() - began)
        cpu_runs.append(time.process_time() - cpu_began)
    return {
        "first_s": first_s,
        "median_s": statistics.median(runs),
        "min_s": min(runs),
        "max_s": max(runs),
        "runs_s": runs,
        "median_cpu_s": statistics.median(cpu_runs),
        "load_average_1m": os.getloadavg()[0],
    }


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _windows(first: datetime, last: datetime) -> dict[str, tuple[datetime, datetime]]:
    """The Overview page's "All time" and "Last 7 days" presets (app.components.preset_window)."""
    end = _floor_minute(last) + timedelta(minutes=1)
    return {"all": (_floor_minute(first), end), "7d": (end - timedelta(days=7), end)}


def _scoped_queries(scope: Any) -> dict[str, Callable[[Any], Any]]:
    """The Overview page's queries for one scope, as the page calls them."""
    from analytics.latency import latency_percentiles
    from analytics.overview import choose_bucket, overview_summary, requests_by_time, top_models

    bucket = choose_bucket(scope.start, scope.end)
    return {
        "overview_summary": lambda c: overview_summary(c, scope),
        "requests_by_time": lambda c: requests_by_time(c, scope, bucket),
        "top_models": lambda c: top_models(c, scope, 10),
        "latency_percentiles": lambda c: latency_percentiles(c, scope),
    }


def _run_queries(lake_dir: Path) -> dict[str, Any]:
    from analytics.cost import install_prices
    from analytics.overview import choose_bucket, overview_summary
    from analytics.scope import Scope, data_time_range, list_models, list_services
    from store import derived
    from store.catalog import open_catalog
    from store.derived import CACHE_DIR, Derived

    project = "default"
    began = time.perf_counter()
    conn = open_catalog(lake_dir)
    open_s = time.perf_counter() - began
    began = time.perf_counter()
    install_prices(conn)
    install_prices_s = time.perf_counter() - began
    threads = conn.execute("SELECT current_setting('threads')").fetchone()
    first, last = data_time_range(conn, project)
    assert first is not None and last is not None, "the lake is empty"
    # What the first query after an ingest pays once: trace parts and priced calls kept for
    # every segment (store.derived). Built here from nothing, so the timed runs below measure
    # what every later query costs.
    # The synthetic lake stands for 30 days written over 30 days: its past days have settled.
    derived.DAY_SETTLE = timedelta(0)
    shutil.rmtree(lake_dir / CACHE_DIR, ignore_errors=True)
    began, cpu_began = time.perf_counter(), time.process_time()
    kept = Derived(lake_dir).ensure(conn, first - timedelta(days=1), last + timedelta(days=1))
    derive_s, derive_cpu_s = time.perf_counter() - began, time.process_time() - cpu_began
    assert kept is not None, "nothing could be kept"

    queries: dict[str, Callable[[Any], Any]] = {
        "install_prices": install_prices,
        "data_time_range": lambda c: data_time_range(c, project),
        "list_services": lambda c: list_services(c, project),
        "list_models": lambda c: list_models(c, project),
    }
    results: dict[str, Any] = {"page_setup": {}, "windows": {}}
    for name, call in queries.items():
        results["page_setup"][name] = _time(lambda call=call: call(conn))
    for window, (start, end) in _windows(first, last).items():
        scope = Scope(project, start, end)
        bucket = choose_bucket(start, end)
        scoped = _scoped_queries(scope)
        summary = overview_summary(conn, scope)
        timings: dict[str, Any] = {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "bucket": str(bucket),
            "num_requests": summary.num_requests,
            "num_llm_calls": summary.num_llm_calls,
            "queries": {},
        }
        for name, call in scoped.items():
            timings["queries"][name] = _time(lambda call=call: call(conn))
        results["windows"][window] = timings
    # Profile each query that misses the target, once, as it ran: in the narrowest window
    # where it misses (the operators are the same, the run is shorter).
    for name, call in queries.items():
        if results["page_setup"][name]["median_s"] >= TARGET_S:
            results["page_setup"][name]["profile"] = _profile(conn, call)
    profiled: set[str] = set()
    for window, (start, end) in reversed(_windows(first, last).items()):
        for name, call in _scoped_queries(Scope(project, start, end)).items():
            timing = results["windows"][window]["queries"][name]
            if timing["median_s"] >= TARGET_S and name not in profiled:
                timing["profile"] = _profile(conn, call)
                profiled.add(name)
    results |= {
        "derive_s": derive_s,
        "derive_cpu_s": derive_cpu_s,
        "derived_files": sum(len(files) for files in kept.files.values()),
        "derived_bytes": sum(p.stat().st_size for p in (lake_dir / CACHE_DIR).rglob("*.parquet")),
        "open_catalog_s": open_s,
        "install_prices_first_s": install_prices_s,
        "duckdb_threads": threads[0] if threads else None,
        "data_first": first.isoformat(),
        "data_last": last.isoformat(),
    }
    return results


def child_main(argv: list[str]) -> int:
    """Entry of the measuring process: time the queries, print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.overview_queries")
    parser.add_argument("--lake", type=Path, required=True)
    args = parser.parse_args(argv)
    result = _run_queries(args.lake)
    result["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(result, default=str))
    return 0


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the driver -------------------------------------------------------------------------------


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Run the Overview query benchmark; return its figures and details."""
    manifest = ensure_lake(out_dir, log)
    log(f"overview: timing the Overview queries on {manifest['num_spans']:,} spans …")
    result: dict[str, Any] = run_in_fresh_process(
        "bench.overview_queries", "--lake", manifest["path"]
    )
    spans = f"{manifest['num_spans'] / 1e6:.0f}M spans"
    figures = [
        Figure(
            f"Overview, {spans}",
            "keep trace parts and priced calls of every segment (once, after ingest)",
            result["derive_s"],
            "s",
            "",
            None,
            f"CPU {result['derive_cpu_s']:.1f} s, {result['derived_bytes'] / 2**20:.0f} MiB kept",
        )
    ]
    for name, timing in result["page_setup"].items():
        figures.append(_figure(f"Overview, {spans}", f"{name} (page load)", timing))
    for window, timings in result["windows"].items():
        label = {"all": "all 30 days", "7d": "last 7 days"}.get(window, window)
        for name, timing in timings["queries"].items():
            figures.append(_figure(f"Overview, {spans}", f"{name}, {label}", timing))
    for figure in figures:
        log(f"overview:   {figure.metric}: {figure.value:.3f} s")
    return figures, {"lake": manifest, "runs_per_query": RUNS, **result}


def _figure(benchmark: str, metric: str, timing: dict[str, Any]) -> Figure:
    median = timing["median_s"]
    note = f"median of {len(timing['runs_s'])}, CPU {timing['median_cpu_s']:.1f} s"
    return Figure(benchmark, metric, median, "s", f"< {TARGET_S:g} s", median < TARGET_S, note)


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
