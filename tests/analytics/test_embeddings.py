"""Embeddings: the packaged model offline, one vector per text, cached in the lake by hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from analytics.embeddings import DEFAULT_MODEL, embed_texts, load_model, text_hash
from store.lake import EMBEDDINGS, Lake

TEXTS = [
    "How do I reset my password?",
    "How can I change my password?",
    "Where is the invoice PDF for last month?",
    "How do I reset my password?",  # a repeat: embedded once
]


def test_texts_are_embedded_once_and_read_back_from_the_lake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress: list[tuple[int, int]] = []
    first = embed_texts(
        TEXTS, tmp_path, progress=lambda done, total: progress.append((done, total))
    )
    assert first.vectors.shape == (4, 384)
    assert (first.num_cached, first.num_embedded) == (0, 3)
    assert progress == [(3, 3)]
    np.testing.assert_array_equal(first.vectors[0], first.vectors[3])
    cosine = (
        first.vectors
        @ first.vectors.T
        / np.outer(np.linalg.norm(first.vectors, axis=1), np.linalg.norm(first.vectors, axis=1))
    )
    # paraphrases sit closer than different questions
    assert cosine[0, 1] > cosine[0, 2] + 0.2
    stored = Lake(tmp_path).list_segments(EMBEDDINGS.name)
    assert len(stored) == 1

    # the second run embeds nothing: the model is never asked
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-embedded a cached text")

    monkeypatch.setattr(load_model(DEFAULT_MODEL), "encode", refuse)
    second = embed_texts(list(reversed(TEXTS)), tmp_path)
    assert (second.num_cached, second.num_embedded) == (3, 0)
    np.testing.assert_allclose(second.vectors, first.vectors[::-1], rtol=1e-6)
    assert len(Lake(tmp_path).list_segments(EMBEDDINGS.name)) == 1


def test_text_hash_is_the_documented_sha256_prefix() -> None:
    assert text_hash("héllo") == hashlib.sha256("héllo".encode()).hexdigest()[:32]
