"""Embeddings and embedding drift: texts/s on this CPU, and a drift computation cold and warm.

Texts are the sample product's user questions (``sample_data.texts.make_question``: 360
templates filled with slot values; a third of 100,000 are distinct, as in a product where
questions repeat). In a fresh process with one torch thread (``OMP_NUM_THREADS=1``, the faster
setting on two cores), into an empty lake, two windows of :data:`NUM_TEXTS` // 2 texts each:

* cold: embed both windows (nothing cached; the model load is timed apart; texts/s counts the
  distinct texts embedded), then score them;
* warm: the same again, every vector read from the lake's cache.

Scoring is Evidently's classifier method (ROC AUC of a model telling the windows apart) over
every text, and MMD (the default) over a seeded sample of :data:`MMD_SAMPLE` per window as
``analytics.drift.embedding_drift`` samples: MMD's RBF kernel is quadratic (2 × 50,000 texts
would need a 10^10-entry kernel matrix).
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
NUM_TEXTS = 100_000
MMD_SAMPLE = 1000
_REPO = Path(__file__).resolve().parent.parent


def _texts(n: int, seed: int) -> list[str]:
    from sample_data.texts import BANKS, make_question

    rng = random.Random(seed)
    topics = [t for t in BANKS if t not in ("injection", "follow_up")]
    return [make_question(rng, rng.choice(topics), "bench").text for _ in range(n)]


def _score(reference: Any, current: Any) -> dict[str, float]:
    import numpy as np

    from analytics.drift import compare_embeddings

    timings: dict[str, float] = {}
    began = time.perf_counter()
    auc, _, _ = compare_embeddings(reference, current, "model", calibrate=False)
    timings["model_s"] = time.perf_counter() - began
    rng = np.random.default_rng(0)
    pick = [np.sort(rng.choice(len(v), MMD_SAMPLE, replace=False)) for v in (reference, current)]
    began = time.perf_counter()
    mmd, threshold, _ = compare_embeddings(reference[pick[0]], current[pick[1]], "mmd")
    timings["mmd_s"] = time.perf_counter() - began
    return timings | {"roc_auc": auc, "mmd": mmd, "mmd_threshold": threshold}


def child_main(data_dir: str) -> int:
    """Measure in this process; print JSON."""
    from analytics.embeddings import embed_texts, load_model

    shutil.rmtree(data_dir, ignore_errors=True)
    texts = _texts(NUM_TEXTS, 1)
    half = NUM_TEXTS // 2
    began = time.perf_counter()
    load_model()
    load_s = time.perf_counter() - began
    runs: dict[str, Any] = {}
    for label in ("cold", "warm"):
        began = time.perf_counter()
        reference = embed_texts(texts[:half], data_dir)
        current = embed_texts(texts[half:], data_dir)
        embed_s = time.perf_counter() - began
        scores = _score(reference.vectors, current.vectors)
        runs[label] = scores | {
            "embed_s": embed_s,
            "num_embedded": reference.num_embedded + current.num_embedded,
            "s": time.perf_counter() - began,
        }
    cold = runs["cold"]
    print(json.dumps({
        "num_texts": NUM_TEXTS, "num_distinct": len(set(texts)), "model_load_s": load_s,
        "texts_per_s": cold["num_embedded"] / cold["embed_s"], "drift": runs,
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
    windows = f"2 × {NUM_TEXTS // 2:,} texts ({result['num_distinct']:,} distinct)"
    scoring = (
        f"classifier ROC AUC over all {drift['warm']['model_s']:.1f} s, "
        f"MMD of 2 × {MMD_SAMPLE:,} {drift['warm']['mmd_s']:.1f} s"
    )
    figures = [
        Figure(
            "embeddings (1 thread)",
            f"all-MiniLM-L6-v2, {drift['cold']['num_embedded']:,} distinct questions",
            result["texts_per_s"],
            "texts/s",
            note=f"model load {result['model_load_s']:.1f} s",
        ),
        Figure("embedding drift", f"{windows}, cold (embedding them)", drift["cold"]["s"], "s"),
        Figure(
            "embedding drift",
            f"{windows}, warm (cached embeddings)",
            drift["warm"]["s"],
            "s",
            note=scoring,
        ),
    ]
    return figures, result


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1]))
