"""Embeddings and embedding drift: texts/s on this CPU, and a drift computation cold and warm.

Texts are the sample product's user questions (``sample_data.texts.make_question``: 360
templates filled with slot values, most of them distinct). In a fresh process with one torch
thread (``OMP_NUM_THREADS=1``, the faster setting on two cores), into an empty lake:

* embedding throughput: ``analytics.embeddings.embed_texts`` on :data:`NUM_TEXTS` texts, cold
  (nothing cached; the model load is timed apart);
* drift: ``analytics.drift.compare_embeddings`` (MMD, calibrated) of two windows of
  :data:`NUM_TEXTS` // 2 texts each — cold (embedding them) and warm (read from the cache).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import OUT_DIR, Figure

NAME = "embeddings"
NUM_TEXTS = 10_000
_REPO = Path(__file__).resolve().parent.parent


def _texts(n: int, seed: int) -> list[str]:
    from sample_data.texts import BANKS, make_question

    rng = random.Random(seed)
    topics = [t for t in BANKS if t not in ("injection", "follow_up")]
    return [make_question(rng, rng.choice(topics), "bench").text for _ in range(n)]


def child_main(data_dir: str) -> int:
    """Measure in this process; print JSON."""
    from analytics.drift import compare_embeddings
    from analytics.embeddings import embed_texts, load_model

    shutil.rmtree(data_dir, ignore_errors=True)
    texts = _texts(NUM_TEXTS, 1)
    began = time.perf_counter()
    load_model()
    load_s = time.perf_counter() - began
    began = time.perf_counter()
    cold = embed_texts(texts, data_dir)
    embed_s = time.perf_counter() - began
    half = NUM_TEXTS // 2
    shutil.rmtree(data_dir, ignore_errors=True)
    runs = {}
    for label in ("cold", "warm"):
        began = time.perf_counter()
        reference = embed_texts(texts[:half], data_dir).vectors
        current = embed_texts(texts[half:], data_dir).vectors
        score, threshold, _own = compare_embeddings(reference, current)
        runs[label] = {"s": time.perf_counter() - began, "score": score, "threshold": threshold}
    print(json.dumps({
        "num_texts": NUM_TEXTS, "num_embedded": cold.num_embedded, "model_load_s": load_s,
        "embed_s": embed_s, "texts_per_s": cold.num_embedded / embed_s, "drift": runs,
    }))  # fmt: skip
    return 0


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Time embeddings and a drift computation in a fresh process."""
    data_dir = out_dir.resolve() / "embeddings-lake"
    log(f"embeddings: {NUM_TEXTS:,} texts, one torch thread …")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "bench.embeddings", str(data_dir)],
        cwd=_REPO, env=env, stdout=subprocess.PIPE, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(data_dir, ignore_errors=True)
    drift = result["drift"]
    log(
        f"embeddings:   {result['texts_per_s']:,.0f} texts/s; drift of 2 × {NUM_TEXTS // 2:,}: "
        f"cold {drift['cold']['s']:.1f} s, warm {drift['warm']['s']:.1f} s"
    )
    figures = [
        Figure(
            "embeddings (1 thread)",
            f"all-MiniLM-L6-v2, {result['num_embedded']:,} distinct questions",
            result["texts_per_s"],
            "texts/s",
            note=f"model load {result['model_load_s']:.1f} s",
        ),
        Figure(
            "embedding drift",
            f"MMD of 2 × {NUM_TEXTS // 2:,} texts, cold (embedding them)",
            drift["cold"]["s"],
            "s",
        ),
        Figure(
            "embedding drift",
            f"MMD of 2 × {NUM_TEXTS // 2:,} texts, warm (cached embeddings)",
            drift["warm"]["s"],
            "s",
        ),
    ]
    return figures, result


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1]))
