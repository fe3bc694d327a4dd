"""One in-memory copy of the committed dataset (3000 traces, 14 days, seed 7) for all tests."""

from __future__ import annotations

import pytest
from sample_facts import DAYS, NUM_TRACES, SEED, Dataset

from sample_data import generate_batches
from sample_data.formats import flat_spans


@pytest.fixture(scope="session")
def dataset() -> Dataset:
    """The committed dataset, generated in memory."""
    batches = list(generate_batches(NUM_TRACES, DAYS, SEED))
    spans = [s for b in batches for s in flat_spans(b.request)]
    feedback = [f for b in batches for f in b.feedback]
    return Dataset(batches, spans, feedback)
