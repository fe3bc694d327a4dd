"""Feedback carried by spans: span events and feedback spans (rules in ``conventions.toml``).

Besides ``POST /v1/feedback`` and feedback lines in files, an app can record feedback on its
traces: an event (``flywheel.feedback``, ``user_feedback``…) on the span the feedback is about,
or a span of its own in the answer's trace with ``feedback.kind`` set. Each becomes a
``store.schema.FEEDBACK_SCHEMA`` row keyed by the trace and span it is about, validated like a
feedback line (:func:`ingest.jsonl.feedback_row`); its id hashes where it came from, so a
re-sent span adds nothing. A record that does not validate is reported with its span and
reason, and the span itself is stored as usual.

Most batches carry no feedback: a vectorised look at event names and attribute keys finds the
few spans that do before any row is read in Python.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.jsonl import feedback_row, feedback_table
from store.schema import FEEDBACK_KINDS, FEEDBACK_SCHEMA

__all__ = ["FeedbackRules", "load_feedback_rules", "parse_feedback_rules", "span_feedback"]

CONVENTIONS_TOML = "conventions.toml"


@dataclass(frozen=True)
class FeedbackRules:
    """Which events carry feedback, where each field is read from, and the kind aliases."""

    events: frozenset[str]
    fields: dict[str, tuple[str, ...]]
    kinds: dict[str, tuple[str, float | None]]


def parse_feedback_rules(text: str) -> FeedbackRules:
    """Compile the ``[feedback]`` section of conventions TOML text."""
    document: dict[str, Any] = tomllib.loads(text)["feedback"]
    kinds: dict[str, tuple[str, float | None]] = {k: (k, None) for k in FEEDBACK_KINDS}
    for alias, target in document.get("kinds", {}).items():
        if not target or target[0] not in FEEDBACK_KINDS:
            raise ValueError(f"{CONVENTIONS_TOML} [feedback.kinds]: {alias} -> unknown {target!r}")
        kinds[alias.lower()] = (target[0], float(target[1]) if len(target) > 1 else None)
    return FeedbackRules(
        events=frozenset(document["events"]),
        fields={k: tuple(v) for k, v in document["fields"].items()},
        kinds=kinds,
    )


@cache
def load_feedback_rules() -> FeedbackRules:
    """The rules compiled from the packaged ``conventions.toml``."""
    text = resources.files("ingest").joinpath(CONVENTIONS_TOML).read_text(encoding="utf-8")
    return parse_feedback_rules(text)


def _first(fields: tuple[str, ...], *maps: dict[str, str]) -> str | None:
    for key in fields:
        for attributes in maps:
            value = attributes.get(key)
            if value not in (None, ""):
                return value
    return None


def _ns(moment: datetime | int) -> int:
    if isinstance(moment, int):
        return moment
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _candidate_rows(spans: pa.Table, rules: FeedbackRules) -> np.ndarray:
    """Rows with a feedback event or a feedback-kind attribute (usually none)."""
    rows: list[np.ndarray] = []
    offset = 0
    events_value_set = pa.array(sorted(rules.events), pa.string())
    kind_keys = pa.array(list(rules.fields["kind"]), pa.string())
    for events, attributes in zip(
        spans.column("events").chunks, spans.column("attributes").chunks, strict=True
    ):
        names = pc.struct_field(pc.list_flatten(events), "name")
        if len(names):
            hits = pc.is_in(names, value_set=events_value_set)
            if pc.any(hits).as_py():
                parents = pc.list_parent_indices(events).to_numpy()
                rows.append(parents[hits.to_numpy(zero_copy_only=False)] + offset)
        # the map's keys without copying it: the child keys array (of the whole buffer when
        # the chunk is a slice) and the chunk's offsets into it
        if len(attributes):
            offsets = attributes.offsets.to_numpy()
            keys = attributes.keys.slice(offsets[0], offsets[-1] - offsets[0])
            hits = pc.is_in(keys, value_set=kind_keys)
            if pc.any(hits).as_py():
                found = np.flatnonzero(hits.to_numpy(zero_copy_only=False)) + offsets[0]
                rows.append(np.searchsorted(offsets, found, side="right") - 1 + offset)
        offset += len(events)
    return np.unique(np.concatenate(rows)) if rows else np.empty(0, dtype=np.int64)


def _record(
    rules: FeedbackRules,
    span: dict[str, Any],
    fields: dict[str, str],
    time_ns: int,
    about_span: str | None,
    origin: str,
) -> dict[str, Any]:
    """A feedback line (as ``ingest.jsonl`` reads them) from one event's or span's fields."""
    span_attributes = dict(span["attributes"] or [])
    kind_text = (_first(rules.fields["kind"], fields) or "").strip().lower()
    value_text = _first(rules.fields["value"], fields)
    kind, fixed = rules.kinds.get(kind_text, (kind_text, None))
    value: Any = fixed
    if value is None and value_text is not None:
        try:
            value = float(value_text)
        except ValueError:
            # "thumbs" with value "up" / "down"
            kind, value = rules.kinds.get(value_text.strip().lower(), (kind, value_text))
    if value is not None and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind in ("copy", "share", "report") and value is None:
        value = 1
    target = _first(rules.fields["span_id"], fields) or about_span
    key = f"{span['trace_id']}\x1f{span['span_id']}\x1f{origin}\x1f{time_ns}"
    return {
        "project": span["project"],
        "feedback_id": "sp_" + hashlib.sha256(key.encode()).hexdigest()[:29],
        "trace_id": span["trace_id"],
        "span_id": target,
        "time": time_ns,
        "kind": kind,
        "value": value,
        "text": _first(rules.fields["text"], fields),
        "user_id": _first(rules.fields["user_id"], fields, span_attributes),
        "source": "span",
    }


def span_feedback(
    spans: pa.Table, rules: FeedbackRules | None = None
) -> tuple[pa.Table, list[tuple[str, str]]]:
    """The feedback rows the spans carry, and one ``(location, reason)`` per invalid record."""
    rules = rules or load_feedback_rules()
    if spans.num_rows == 0:
        return FEEDBACK_SCHEMA.empty_table(), []
    candidates = _candidate_rows(spans, rules)
    if len(candidates) == 0:
        return FEEDBACK_SCHEMA.empty_table(), []
    columns = ["project", "trace_id", "span_id", "start_time", "attributes", "events"]
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    kind_fields = rules.fields["kind"]
    for span in spans.select(columns).take(pa.array(candidates)).to_pylist():
        attributes = dict(span["attributes"] or [])
        records = []
        for index, event in enumerate(span["events"] or []):
            if event["name"] in rules.events:
                fields = dict(event["attributes"] or [])
                records.append((
                    f"span {span['span_id']} event {index} ({event['name']})",
                    _record(rules, span, fields, _ns(event["time"]), span["span_id"], f"e{index}"),
                ))  # fmt: skip
        if any(key in attributes for key in kind_fields):
            # a feedback span: about its trace, or the span it names
            records.append((
                f"span {span['span_id']} (feedback span)",
                _record(rules, span, attributes, _ns(span["start_time"]), None, "span"),
            ))  # fmt: skip
        for where, record in records:
            try:
                rows.append(feedback_row(record, span["project"]))
            except ValueError as exc:
                errors.append((f"trace {span['trace_id']} {where}", str(exc)))
    return feedback_table(rows), errors
