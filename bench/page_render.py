"""Page render time on a 1M-span lake, with Streamlit's AppTest (no browser).

The lake is :mod:`bench.synth`'s generator at 125,000 traces × 8 spans over 30 days, written
through ``store.lake.Lake.write`` into ``bench/out/lake-1m`` (built once, with the guardrail
results ``ingest.guard`` reads from it). In a fresh process, each
page script in ``app/screens/`` runs in its own ``AppTest`` on the default view (the "Last 7 days"
preset, no filters): the first run of each page is timed (it opens the catalog on first use and
runs every query the page shows; nothing is cached yet for its queries), then the page is run
again from a fresh ``AppTest`` twice more and the median of the three is reported. Target: 3 s.
The Drift page embeds texts on its first run (one torch thread): the lake's embedding cache is
emptied before it, so its first run is always cold and the others warm.

    python -m bench pages
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR, Figure, run_in_fresh_process

NAME = "page_render"
LAKE_NAME = "lake-1m"
NUM_TRACES = 125_000
PAGES = ("overview", "latency", "cost", "guardrails", "drift", "feedback", "traces", "alerts")
RUNS = 3
TARGET_S = 3.0
_REPO = Path(__file__).resolve().parent.parent


def ensure_lake(out_dir: Path, log: Callable[[str], None]) -> Path:
    """Build the 1M-span lake once (a marker file records the trace count)."""
    from bench.synth import SynthSpec, generate_tables
    from ingest.guard import Guard
    from store.lake import Lake

    lake_dir = out_dir.resolve() / LAKE_NAME
    marker = lake_dir / "bench-lake.json"
    spec = SynthSpec(num_traces=NUM_TRACES)
    key = {"num_traces": NUM_TRACES, "num_spans": spec.num_spans, "guardrails": True}
    if marker.exists() and json.loads(marker.read_text()) == key:
        return lake_dir
    shutil.rmtree(lake_dir, ignore_errors=True)
    log(f"pages: building a {spec.num_spans:,}-span lake in {lake_dir} …")
    lake = Lake(lake_dir)
    guard = Guard()
    for table in generate_tables(spec, 6_250):
        lake.write("guardrails", guard.apply(table).guardrails)
        lake.write("spans", table)
    marker.write_text(json.dumps(key))
    return lake_dir


def child_main(lake: str) -> int:
    """Render every page RUNS times in this process; print JSON timings."""
    from streamlit.testing.v1 import AppTest

    os.environ["FLYWHEEL_DATA_DIR"] = lake
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as `flywheel dashboard` runs embeddings
    timings: dict[str, list[float]] = {}
    for page in PAGES:
        script = str(_REPO / "app" / "screens" / f"{page}.py")
        if page == "drift":  # its first render embeds: start each benchmark without the cache
            shutil.rmtree(Path(lake) / "embeddings", ignore_errors=True)
        runs = []
        for _ in range(RUNS):
            app = AppTest.from_file(script, default_timeout=600)
            began = time.perf_counter()
            app.run()
            runs.append(time.perf_counter() - began)
            if app.exception:
                raise RuntimeError(f"{page}: {[e.value for e in app.exception]}")
        timings[page] = runs
    print(json.dumps(timings))
    return 0


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Render the pages on the 1M-span lake; return figures and details."""
    lake = ensure_lake(out_dir, log)
    log("pages: rendering each page with AppTest …")
    timings: dict[str, Any] = run_in_fresh_process("bench.page_render", str(lake))
    figures = []
    for page, runs in timings.items():
        median = statistics.median(runs)
        note = f"first {runs[0]:.2f} s, median of {len(runs)}"
        figures.append(
            Figure(
                "Page render (AppTest), 1M spans",
                page,
                median,
                "s",
                "< 3 s",
                median < TARGET_S,
                note,
            )
        )
        log(f"pages:   {page}: {median:.2f} s ({note})")
    return figures, {"lake": str(lake), "runs_s": timings}


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1]))
