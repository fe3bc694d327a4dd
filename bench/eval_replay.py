"""Eval replay throughput: cases/s against a local OpenAI-compatible server.

The server (``tests.evals.openai_server.FakeOpenAI``) runs in its own process on 127.0.0.1 and
answers every request after a fixed delay: 0 ms (what the replay itself costs: the client,
scoring, the fsynced result and the replay's trace per case) and 50 ms (a fast endpoint, where
concurrency pays). Each run replays a fresh run of the same 400-case dataset with the ``exact``,
``contains`` and ``max_chars`` evaluators, traced, at concurrency 1, 8 and 32.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR, Figure

NAME = "eval_replay"
NUM_CASES = 400
CONCURRENCY = (1, 8, 32)
LATENCIES_MS = (0, 50)


def _serve(latency_s: float, url: Any, stop: Any) -> None:
    from tests.evals.openai_server import FakeOpenAI

    with FakeOpenAI(latency_s=latency_s) as server:
        url.put(server.base_url)
        stop.wait()


def _dataset(data_dir: Path) -> Any:
    from evals.cases import Case, case_id_of
    from evals.datasets import write_dataset
    from store.catalog import open_catalog

    cases = []
    for i in range(NUM_CASES):
        messages = [
            {"role": "system", "content": "You are a helpful support agent."},
            {
                "role": "user",
                "content": f"Question {i}: how do I reset my password on device {i % 7}?",
            },
        ]
        cases.append(Case(case_id_of(messages), tuple(messages), reference=messages[1]["content"]))
    conn = open_catalog(data_dir)
    return write_dataset(conn, data_dir, "default", "bench", cases)


def _replay(data_dir: Path, dataset: Any, base_url: str, concurrency: int) -> float:
    from evals.evaluators import EvaluatorContext, parse_evaluator
    from evals.replay import replay, start_run
    from evals.targets import OpenAITarget, TargetConfig
    from store.catalog import open_catalog
    from store.writer import LakeWriter

    conn = open_catalog(data_dir)
    target = OpenAITarget(TargetConfig(base_url=base_url, model="echo", api_key_env="BENCH_KEY"))
    specs = ["exact", "contains:password", "max_chars:2000"]
    evaluators = [parse_evaluator(s, context=EvaluatorContext()) for s in specs]
    with LakeWriter(data_dir) as writer:
        run = start_run(writer, "default", dataset, target, specs)
    began = time.perf_counter()
    summary = replay(conn, data_dir, run, dataset, target, evaluators, concurrency=concurrency)
    elapsed = time.perf_counter() - began
    if summary.num_called != NUM_CASES or summary.num_errors:
        raise RuntimeError(f"replay called {summary.num_called}, {summary.num_errors} failed")
    return NUM_CASES / elapsed


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Replay 400 cases at each latency and concurrency; cases/s for each."""
    data_dir = out_dir / "eval-replay-lake"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    dataset = _dataset(data_dir)
    figures: list[Figure] = []
    rates: dict[str, float] = {}
    context = multiprocessing.get_context("spawn")
    for latency_ms in LATENCIES_MS:
        url, stop = context.Queue(), context.Event()
        server = context.Process(target=_serve, args=(latency_ms / 1000, url, stop), daemon=True)
        server.start()
        try:
            base_url = url.get(timeout=60)
            for concurrency in CONCURRENCY:
                rate = _replay(data_dir, dataset, base_url, concurrency)
                rates[f"{latency_ms}ms_c{concurrency}"] = round(rate, 1)
                log(
                    f"eval_replay: server {latency_ms} ms, concurrency {concurrency}: {rate:,.1f} cases/s"
                )
                figures.append(
                    Figure(
                        "eval replay",
                        f"cases/s, server answering in {latency_ms} ms, concurrency {concurrency}",
                        round(rate, 1),
                        "cases/s",
                    )
                )
        finally:
            stop.set()
            server.join(timeout=10)
    return figures, {"num_cases": NUM_CASES, "cases_per_s": rates}
