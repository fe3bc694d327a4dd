"""The sample eval dataset and runs ``flywheel demo`` loads, so the Evals page has something to
compare on a fresh machine."""

from __future__ import annotations

from datetime import timedelta

from app.eval_dataset_cmd import span_conversation
from app.settings import Settings

SAMPLE_DATASET = "sample-support"
SAMPLE_EVALUATORS = ("normalized", "max_chars:300", "max_output_tokens:80")


def _first_sentences(text: str, count: int) -> str:
    sentences = [s for s in text.replace("\n", " ").split(". ") if s.strip()]
    short = ". ".join(sentences[:count]).strip()
    return short if short.endswith((".", "?", "!")) else short + "."


def load_sample_evals(settings: Settings) -> str | None:
    """An eval dataset from the sample traces and two runs to compare on the Evals page: what
    production answered, and a simulated candidate that answers in two sentences (its tokens
    and latency scaled by its length). Returns the dataset's name (None: nothing to build)."""
    from dataclasses import replace as with_changes

    from analytics.scope import Scope, data_time_range
    from analytics.traces import TraceFilter
    from app.stores import open_store, open_tables
    from evals.datasets import cases_from_traces, write_dataset
    from evals.evaluators import EvaluatorContext, parse_evaluator
    from evals.replay import reference_outputs, replay, start_run
    from evals.targets import RecordedTarget
    from store.writer import LakeWriter

    conn = open_store(settings)
    tables = open_tables(settings)
    first, last = data_time_range(conn, settings.project)
    if first is None or last is None:
        return None
    scope = Scope(settings.project, first, last + timedelta(seconds=1))
    built = cases_from_traces(
        conn, scope, TraceFilter(status="ok", operations=("chat",)), span_conversation, limit=200
    )
    if not built.cases:
        return None
    dataset = write_dataset(conn, tables, settings.project, SAMPLE_DATASET, built.cases)
    production = reference_outputs(dataset)
    candidate = {}
    for case_id, answer in production.items():
        text = _first_sentences(answer.output or "", 2)
        ratio = len(text.split()) / max(1, len((answer.output or "").split()))
        candidate[case_id] = with_changes(
            answer,
            output=text,
            output_tokens=None
            if answer.output_tokens is None
            else round(answer.output_tokens * ratio),
            latency_ms=None
            if answer.latency_ms is None
            else answer.latency_ms * (0.4 + 0.6 * ratio),
        )
    evaluators = [parse_evaluator(s, context=EvaluatorContext()) for s in SAMPLE_EVALUATORS]
    for name, outputs, source in (
        ("production", production, "reference"),
        ("two-sentence answers (simulated)", candidate, "simulated"),
    ):
        target = RecordedTarget(outputs, source)
        with LakeWriter(tables) as writer:
            run = start_run(
                writer, settings.project, dataset, target, SAMPLE_EVALUATORS, split=None, name=name
            )
        replay(conn, tables, run, dataset, target, evaluators, concurrency=1)
    return dataset.name
