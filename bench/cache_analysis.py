"""Semantic-cache analysis of 100,000 inputs on cached embeddings: time and peak memory.

A lake of :data:`NUM_CALLS` chat calls over 7 days (one span each, two models, the sample
product's questions: a third distinct, as in a product where questions repeat; answers from a
small set) is written once under ``bench/out/cache-lake``, and every input and answer is
embedded once (all-MiniLM-L6-v2, one thread) so the figures measure the analysis, not the
model. Then, in a fresh process each: ``analytics.cache.exact_cache_opportunity`` and
``semantic_cache_opportunity`` (ten thresholds, a 1-hour time to live) over the 7 days, timed,
with the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR, Figure

NAME = "cache"
NUM_CALLS = 100_000
DAYS = 7
START = datetime(2026, 11, 1, tzinfo=UTC)
_REPO = Path(__file__).resolve().parent.parent
_ANSWERS = [
    f"Here is how that works: step {i} of the guide, then check Settings → {topic}."
    for i in range(40)
    for topic in ("Billing", "Account", "Export")
]


def _build(data_dir: Path, log: Callable[[str], None]) -> None:
    import pyarrow as pa

    from analytics.embeddings import embed_texts
    from sample_data.texts import BANKS, make_question
    from store.lake import Lake
    from store.schema import SPAN_SCHEMA

    rng = random.Random(7)
    topics = [t for t in BANKS if t not in ("injection", "follow_up")]
    pool = [make_question(rng, rng.choice(topics), "bench").text for _ in range(NUM_CALLS // 3)]
    span = timedelta(days=DAYS) / NUM_CALLS
    rows = []
    for i in range(NUM_CALLS):
        start = START + span * i + timedelta(microseconds=rng.randrange(1000))
        model = "gpt-4o" if i % 3 else "gpt-4o-mini"
        rows.append(
            {
                "project": "default", "trace_id": f"{i:032x}", "span_id": f"{i:016x}",
                "name": "POST /chat", "kind": "CLIENT", "service_name": "bench",
                "start_time": start, "end_time": start + timedelta(seconds=2),
                "duration_ms": 2000.0, "status_code": "OK", "operation": "chat",
                "provider": "openai", "request_model": model, "response_model": model,
                "input_tokens": 400, "output_tokens": 80, "system_prompt_hash": "p1",
                "input_text": rng.choice(pool), "output_text": rng.choice(_ANSWERS),
            }
        )  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=SPAN_SCHEMA)
    Lake(data_dir).write("spans", table)
    texts = sorted(set(table.column("input_text").to_pylist()) | set(_ANSWERS))
    log(f"cache: embedding {len(texts):,} distinct texts once …")
    embed_texts(texts, data_dir)


def _measure(data_dir: str, which: str) -> dict[str, Any]:
    """In a fresh process: run one analysis, return its time and the process's peak RSS."""
    import time

    from analytics.cache import exact_cache_opportunity
    from analytics.cost import install_prices
    from analytics.scope import Scope
    from analytics.semantic_cache import semantic_cache_opportunity
    from store.catalog import open_catalog

    conn = open_catalog(data_dir)
    install_prices(conn)
    scope = Scope("default", START, START + timedelta(days=DAYS))
    began = time.perf_counter()
    if which == "exact":
        exact = exact_cache_opportunity(conn, scope)
        result = {"num_calls": exact.num_calls, "hit_rate": exact.hit_rate}
    else:
        semantic = semantic_cache_opportunity(conn, scope)
        first = semantic.by_threshold.row(0, named=True)
        result = {"num_compared": semantic.num_compared, "hit_rate_at_0.80": first["hit_rate"]}
    result["seconds"] = time.perf_counter() - began
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
    status = Path("/proc/self/status").read_text()
    peak_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
    )
    result["peak_rss_mib"] = peak_kib / 1024
    return result


def _child(data_dir: Path, which: str) -> dict[str, Any]:
    code = (
        "import json, sys; from bench.cache_analysis import _measure; "
        f"print(json.dumps(_measure({str(data_dir)!r}, {which!r})))"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=_REPO, env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Build (once) and analyse the 100k-call lake; time and memory of each analysis."""
    data_dir = out_dir / "cache-lake"
    if not (data_dir / "spans").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        _build(data_dir, log)
    details: dict[str, Any] = {"num_calls": NUM_CALLS, "days": DAYS}
    figures = []
    for which in ("exact", "semantic"):
        result = _child(data_dir, which)
        details[which] = result
        log(f"cache: {which}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB")
        figures.append(
            Figure(
                f"{which} cache analysis",
                f"seconds for {NUM_CALLS:,} calls over {DAYS} days (embeddings cached)",
                round(result["seconds"], 2),
                "s",
                note=f"peak RSS {result['peak_rss_mib']:.0f} MiB",
            )
        )
    return figures, details
