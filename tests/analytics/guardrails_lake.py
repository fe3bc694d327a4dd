"""Lakes for guardrail tests, landed through the real ingest path (decode, guard, writer)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from ingest.loader import ingest_paths
from store.writer import LakeWriter

SAMPLE_TRACES = Path(__file__).resolve().parents[2] / "sample_data" / "data" / "traces.jsonl.gz"


def ingest_sample(data_dir: Path) -> Path:
    """The committed sample traces, ingested into ``data_dir``."""
    with LakeWriter(data_dir) as writer:
        [report] = ingest_paths([SAMPLE_TRACES], writer)
    assert not report.errors
    return data_dir


def ingest_lines(
    data_dir: Path, lines: list[dict[str, Any]], *, allow_errors: bool = False
) -> Path:
    """Flat span records (``sample_data/README.md``), ingested into ``data_dir`` (every record
    must be accepted unless ``allow_errors``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"{data_dir.name}.jsonl.gz"
    source.write_bytes(gzip.compress("\n".join(json.dumps(x) for x in lines).encode()))
    with LakeWriter(data_dir) as writer:
        [report] = ingest_paths([source], writer)
    assert allow_errors or not report.errors, report.errors
    return data_dir


def flat_span(
    trace: int,
    span: int,
    start_s: float,
    attributes: dict[str, Any],
    *,
    parent: int | None = None,
    name: str = "span",
    duration_s: float = 0.05,
    status: str = "UNSET",
) -> dict[str, Any]:
    """One flat span line; times in seconds after 2026-01-01T00:00Z."""
    t0 = 1_767_225_600 * 10**9
    start = t0 + int(start_s * 1e9)
    return {
        "type": "span",
        "trace_id": f"{trace:032x}",
        "span_id": f"{span:016x}",
        "parent_span_id": None if parent is None else f"{parent:016x}",
        "name": name,
        "kind": "INTERNAL",
        "service_name": "app",
        "start_time": start,
        "end_time": start + int(duration_s * 1e9),
        "status_code": status,
        "attributes": attributes,
    }
