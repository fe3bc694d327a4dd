"""The committed dataset is what the generator makes, stays small, and matches its README."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import sample_facts
from sample_facts import DAYS, NUM_TRACES, SEED, START_NS, Dataset, compute_facts

import sample_data
from sample_data import write_dataset

PACKAGE = Path(sample_data.__file__).parent
DATA = PACKAGE / "data"
FILES = ("traces.pb.gz", "traces.otlp.jsonl.gz", "traces.jsonl.gz", "feedback.jsonl.gz")
FACT_ROW = re.compile(r"^\| `([^`]+)` \| (.*) \|$")


def test_committed_files_are_small() -> None:
    sizes = {name: (DATA / name).stat().st_size for name in FILES}
    assert sum(sizes.values()) < 15_000_000, sizes


def test_committed_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    write_dataset(tmp_path, NUM_TRACES, DAYS, SEED)
    for name in FILES:
        # Compare content, not gzip bytes: another zlib may compress differently.
        with gzip.open(DATA / name) as committed, gzip.open(tmp_path / name) as fresh:
            assert committed.read() == fresh.read(), f"{name}: run python -m sample_data"


def test_readme_facts_match_the_data(dataset: Dataset) -> None:
    facts_section = (PACKAGE / "README.md").read_text().split("\n## Facts", 1)[1]
    rows = [FACT_ROW.match(line) for line in facts_section.splitlines()]
    documented = {m.group(1): m.group(2) for m in rows if m}
    assert documented == compute_facts(dataset.spans, dataset.feedback, START_NS, DAYS)


def test_the_in_memory_dataset_is_the_committed_one(dataset: Dataset) -> None:
    with gzip.open(DATA / "feedback.jsonl.gz") as f:
        committed = [json.loads(line) for line in f]
    assert committed == dataset.feedback
    assert len({s["trace_id"] for s in dataset.spans}) == sample_facts.NUM_TRACES
