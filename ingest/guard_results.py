"""Guardrail result rows of the guard stage (``ingest.guard``): the ``guardrails`` table's rows,
keyed by where each result came from, and the built-in detectors' results.

A result's id hashes its span, source, guardrail, stage, category, the detector's reason and
its ordinal, so the same span guarded twice (a re-sent batch, a backfill) gives the same ids and
the lake keeps one row each.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ingest.guardrails import GuardrailResult
from store.schema import GUARDRAIL_SCHEMA

__all__ = ["DETECTOR_NAMES", "Results", "detected", "json_invalid"]

DETECTOR_NAMES: dict[str, str] = {
    "pii": "flywheel.pii",
    "secret": "flywheel.secrets",
    "prompt_injection": "flywheel.prompt_injection",
    "refusal": "flywheel.refusal",
    "empty_output": "flywheel.empty_output",
    "truncation": "flywheel.truncation",
    "content_filter": "provider.content_filter",
    "format": "flywheel.json_output",
}


class Results:
    """Guardrail result rows, as one flat list of values in GUARDRAIL_SCHEMA order."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(
        self,
        span: Mapping[str, Any],
        source: str,
        result: GuardrailResult,
        *,
        latency_ms: float | None = None,
        num_matches: int | None = None,
    ) -> None:
        reason = result.reason if source == "detector" else ""
        key = (
            f"{span['trace_id']}|{span['span_id']}|{source}|{result.guardrail}|{result.stage}"
            f"|{result.category}|{reason}|{result.ordinal}"
        )
        self.values.extend(
            (
                span["project"],
                hashlib.sha256(key.encode("utf-8")).hexdigest()[:32],  # result_id
                span["trace_id"],
                span["span_id"],
                result.time_ns,
                span["service_name"],
                span["response_model"] or span["request_model"],  # model
                source,
                result.guardrail,
                result.stage,
                result.category,
                result.action,
                result.action not in (None, "pass"),  # triggered
                result.score,
                latency_ms,
                result.policy_id,
                result.reason,
                num_matches,
            )
        )

    def table(self) -> pa.Table:
        arrays = []
        width = len(GUARDRAIL_SCHEMA)
        for i, schema_field in enumerate(GUARDRAIL_SCHEMA):
            values = self.values[i::width]
            if schema_field.name == "time":
                arrays.append(pa.array(values, pa.int64()).cast(schema_field.type))
            else:
                arrays.append(pa.array(values, schema_field.type))
        return pa.Table.from_arrays(arrays, schema=GUARDRAIL_SCHEMA)


def json_invalid(text: str | None) -> str | None:
    """Why ``text`` is not one JSON document (None when it is)."""
    if text is None or not text.strip():
        return "no output text"
    try:
        json.loads(text)
    except ValueError as exc:
        return f"invalid JSON: {str(exc).split(':')[0]}"
    return None


def detected(
    category: str, stage: str, action: str, reason: str | None, time_ns: int
) -> GuardrailResult:
    return GuardrailResult(
        guardrail=DETECTOR_NAMES[category],
        stage=stage,
        category=category,
        action=action,
        score=None,
        policy_id=None,
        reason=reason,
        time_ns=time_ns,
        ordinal=0,
    )
