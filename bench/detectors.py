"""Built-in detectors: precision and recall on the labelled corpora, and what they cost ingest.

* Precision and recall per detector kind on ``tests/ingest/detector_corpus.jsonl`` (the corpus
  the patterns were tuned on) and ``tests/ingest/detector_holdout.jsonl`` (written apart from
  the patterns, never tuned on), as ``tests/ingest/test_detectors.py`` counts them.
* File ingest, end to end on one core (``bench.ingest_file``'s ``e2e`` on its 250k-span input),
  three ways: guard ``off`` (no detectors, nothing redacted), ``on`` (the default: detectors,
  secrets masked) and ``mask`` (PII masked too). The target: detectors keep file ingest at half
  its speed without them or better.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ingest_file import child, ensure_inputs
from bench.report import OUT_DIR, Figure

NAME = "detectors"
SIZE = "250k"
MIN_RATIO = 0.5


def _corpus_scores() -> dict[str, dict[str, Any]]:
    from tests.ingest.test_detectors import HOLDOUT, TUNED, scores

    out = {}
    for label, path in (("tuned", TUNED), ("holdout", HOLDOUT)):
        out[label] = {
            kind: {"precision": p, "recall": r, "positives": pos, "negatives": neg}
            for kind, (p, r, pos, neg) in scores(path).items()
        }
    return out


def run(out_dir: Path = OUT_DIR, log: Callable[[str], None] = print) -> tuple[list[Figure], dict]:
    """Score the detectors and time ingest with them off, on and masking."""
    corpora = _corpus_scores()
    for label, per_kind in corpora.items():
        for kind, s in per_kind.items():
            log(
                f"detectors: {label:7} {kind:17} precision {s['precision']:.2f} "
                f"recall {s['recall']:.2f} ({s['positives']} positives, {s['negatives']} negatives)"
            )
    manifest = ensure_inputs(out_dir, log)
    path = Path(manifest["files"][SIZE]["path"])
    runs = {}
    for guard in ("off", "on", "mask"):
        log(f"detectors: ingest {manifest['files'][SIZE]['num_spans']:,} spans, guard {guard} …")
        runs[guard] = child("e2e", path, out_dir / "detectors-lake", guard)
        log(f"detectors:   {runs[guard]['spans_per_s']:,.0f} spans/s")
    ratio = runs["on"]["spans_per_s"] / runs["off"]["spans_per_s"]
    masked = runs["mask"]["spans_per_s"] / runs["off"]["spans_per_s"]
    holdout = corpora["holdout"]
    figures = [
        Figure(
            "detectors on ingest (1 core)",
            f"spans/s with detectors on vs off ({SIZE} spans)",
            runs["on"]["spans_per_s"],
            "spans/s",
            f"≥ {MIN_RATIO:.0%} of off",
            ratio >= MIN_RATIO,
            f"off {runs['off']['spans_per_s']:,.0f}; on {ratio:.0%} of off; "
            f"masking PII too {runs['mask']['spans_per_s']:,.0f} ({masked:.0%})",
        ),
        Figure(
            "detectors, held-out corpus",
            "lowest precision / recall over kinds",
            min(s["precision"] for s in holdout.values()),
            "precision",
            note=f"lowest recall {min(s['recall'] for s in holdout.values()):.2f}",
        ),
    ]
    return figures, {"corpora": corpora, "ingest": runs, "on_vs_off": ratio, "mask_vs_off": masked}
