"""The replay's own traces: each case called becomes a trace in the project's eval project, a
root span for the case, a ``chat`` span for the target's call and one for each call an
evaluator made (an LLM judge), tagged ``flywheel.traffic=eval`` and with the run and case."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa

from evals.cases import Case, Completion
from evals.targets import RecordedCall
from store.schema import SPAN_SCHEMA

__all__ = ["EVAL_PROJECT_SUFFIX", "TracedRun", "eval_project", "span_rows"]

#: Eval traffic lands in ``<project>`` + this suffix, out of the production project's metrics.
EVAL_PROJECT_SUFFIX = ".eval"


class TracedRun(Protocol):
    """What the traces say of their run (``evals.replay.RunInfo`` has it)."""

    @property
    def run_id(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def target(self) -> dict[str, Any]: ...


def eval_project(project: str) -> str:
    """The project a replay's own traces land in.

    >>> eval_project("support")
    'support.eval'
    """
    return project if project.endswith(EVAL_PROJECT_SUFFIX) else project + EVAL_PROJECT_SUFFIX


def _chat_span(
    common: dict[str, Any],
    parent_id: str,
    target: dict[str, Any],
    completion: Completion,
    started: datetime,
    attributes: list[tuple[str, str]],
) -> dict[str, Any]:
    """A ``chat`` span for one call a replay made (the case's own, or an LLM judge's)."""
    model = str(target.get("model") or "")
    return {
        **common,
        "span_id": secrets.token_hex(8),
        "parent_span_id": parent_id,
        "name": f"chat {model}".strip(),
        "kind": "CLIENT",
        "start_time": started,
        "end_time": started + timedelta(milliseconds=completion.latency_ms or 0.0),
        "duration_ms": completion.latency_ms,
        "status_code": "ERROR" if completion.error else "OK",
        "status_message": completion.error,
        "operation": "chat",
        "provider": target.get("kind"),
        "request_model": model or None,
        "response_model": completion.model,
        "input_tokens": completion.input_tokens,
        "output_tokens": completion.output_tokens,
        "output_text": completion.output,
        "attributes": [
            *attributes,
            ("gen_ai.request.model", model),
            ("server.address", str(target.get("base_url") or "")),
            ("flywheel.eval.num_attempts", str(completion.num_attempts)),
        ],
    }


def span_rows(
    run: TracedRun,
    case: Case,
    completion: Completion,
    started: datetime,
    trace_id: str,
    extra_calls: Sequence[RecordedCall] = (),
) -> pa.Table:
    """The replay's trace of one case: a root span for the case, a ``chat`` span for its call
    (unless the target is recorded) and one for each call an evaluator made (an LLM judge)."""
    tags = {
        "flywheel.traffic": "eval",
        "flywheel.eval.run_id": run.run_id,
        "flywheel.eval.dataset": f"{run.dataset}@{run.version}",
        "flywheel.eval.case_id": case.case_id,
    }
    if case.source_trace_id:
        tags["flywheel.eval.source_trace_id"] = case.source_trace_id
    common: dict[str, Any] = {
        "project": eval_project(run.project),
        "trace_id": trace_id,
        "kind": "INTERNAL",
        "service_name": "flywheel-eval",
        "scope_name": "flywheel.evals",
        "input_text": case.user_input,
        "resource_attributes": [("service.name", "flywheel-eval")],
    }
    root_id = secrets.token_hex(8)
    calls = []
    if run.target.get("kind") != "recorded":
        role = [*tags.items(), ("flywheel.eval.role", "target")]
        calls.append(_chat_span(common, root_id, run.target, completion, started, role))
    for made in extra_calls:
        role = [*tags.items(), ("flywheel.eval.role", made.role)]
        span = _chat_span(common, root_id, made.target, made.completion, made.started, role)
        span["input_text"] = next(
            (m["content"] for m in reversed(made.messages) if m["role"] == "user"), None
        )
        calls.append(span)
    end = max([started, *(c["end_time"] for c in calls)])
    root = {
        **common,
        "span_id": root_id,
        "name": f"eval {run.dataset}",
        "start_time": started,
        "end_time": end,
        "duration_ms": (end - started) / timedelta(milliseconds=1),
        "status_code": "ERROR" if completion.error else "OK",
        "status_message": completion.error,
        "output_text": completion.output,
        "attributes": list(tags.items()),
    }
    return pa.Table.from_pylist([root, *calls], schema=SPAN_SCHEMA)
