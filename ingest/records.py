"""Canonical span rows, built column by column, and the one ingest error type.

Decoders hand each span's raw parts to ``SpanBuilder.add``; it validates ids and times,
runs the conventions normalizer, renders every attribute as text for the attribute maps, and
appends to per-column lists, so a batch becomes an Arrow table without per-row dicts.
"""

from __future__ import annotations

import base64
import gc
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ingest.conventions import Normalizer, RawEvent, load_normalizer
from store.schema import DEFAULT_PROJECT, FEEDBACK_SCHEMA, SPAN_SCHEMA

_HEX = re.compile(r"[0-9a-fA-F]+")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class IngestError(ValueError):
    """Bad input: which source, where in it, and why. The receiver turns it into a 400."""

    def __init__(self, source: str, location: str, reason: str) -> None:
        super().__init__(f"{source}: {location}: {reason}")
        self.source = source
        self.location = location
        self.reason = reason

    def __reduce__(self) -> tuple[type[IngestError], tuple[str, str, str]]:
        # The receiver's decoder processes send errors back pickled; the default would call
        # __init__ with the one formatted message.
        return (IngestError, (self.source, self.location, self.reason))


@dataclass
class Decoded:
    """What a decoder made of some input: the valid rows, and an error per rejected record."""

    spans: pa.Table
    feedback: pa.Table = field(default_factory=FEEDBACK_SCHEMA.empty_table)
    errors: list[IngestError] = field(default_factory=list)

    @property
    def num_rejected(self) -> int:
        """How many records (spans or feedback) were rejected."""
        return len(self.errors)


_JSON_TEXT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding.

    Decoding allocates millions of small acyclic objects; the collector's passes over them
    cost about as much as the decoding itself and free nothing.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def attribute_text(value: Any) -> str:
    """Render an attribute value as the maps store it (the ClickHouse exporter's rule)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if value is None:
        return ""
    return _JSON_TEXT(_jsonable(value))


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def normalize_hex_id(value: Any, size: int) -> str | None:
    """A lower-case hex id of ``size`` bytes from hex text (any case) or base64; else None."""
    if isinstance(value, bytes):
        return value.hex() if len(value) == size else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) == size * 2 and _HEX.fullmatch(text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == size else None


def text_map(attrs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Attributes as (key, text) pairs for a map column."""
    return [(k, v if type(v) is str else attribute_text(v)) for k, v in attrs.items()]


class SpanBuilder:
    """Accumulates validated, normalized spans column by column."""

    def __init__(
        self, project: str = DEFAULT_PROJECT, normalizer: Normalizer | None = None
    ) -> None:
        self.project = project
        self.normalizer = normalizer or load_normalizer()
        self._columns: dict[str, list[Any]] = {name: [] for name in SPAN_SCHEMA.names}
        self.errors: list[IngestError] = []

    def __len__(self) -> int:
        return len(self._columns["span_id"])

    def add(
        self,
        *,
        source: str,
        location: str,
        trace_id: Any,
        span_id: Any,
        parent_span_id: Any,
        name: str,
        kind: str,
        service_name: str | None,
        scope_name: str | None,
        start_ns: int,
        end_ns: int,
        status_code: str,
        status_message: str | None,
        attrs: Mapping[str, Any],
        resource_attrs: list[tuple[str, str]],
        events: Sequence[RawEvent] = (),
        links: Sequence[tuple[str, str, Mapping[str, Any]]] = (),
        overrides: Mapping[str, Any] | None = None,
        project: str | None = None,
    ) -> bool:
        """Validate and append one span; on bad input record an IngestError and return False."""
        reason = None
        tid = normalize_hex_id(trace_id, 16)
        sid = normalize_hex_id(span_id, 8)
        pid = None
        if tid is None or tid == _ZERO_TRACE:
            reason = f"invalid trace id {trace_id!r}: want 16 bytes as 32 hex characters"
        elif sid is None or sid == _ZERO_SPAN:
            reason = f"invalid span id {span_id!r}: want 8 bytes as 16 hex characters"
        elif parent_span_id not in (None, "", b""):
            pid = normalize_hex_id(parent_span_id, 8)
            if pid is None:
                reason = f"invalid parent span id {parent_span_id!r}: want 16 hex characters"
            elif pid == _ZERO_SPAN:
                pid = None
        if reason is None:
            if start_ns <= 0:
                reason = "missing start time (startTimeUnixNano is 0)"
            elif end_ns < start_ns:
                reason = (
                    f"end time {end_ns} is before start time {start_ns} (clock skew in the sender?)"
                )
        if reason is not None:
            self.errors.append(IngestError(source, location, reason))
            return False
        canonical = self.normalizer.normalize(attrs, events, start_ns)
        if overrides:
            canonical.update({k: v for k, v in overrides.items() if v is not None})
        cols = self._columns
        cols["project"].append(project or self.project)
        cols["trace_id"].append(tid)
        cols["span_id"].append(sid)
        cols["parent_span_id"].append(pid)
        cols["name"].append(name)
        cols["kind"].append(kind)
        cols["service_name"].append(service_name)
        cols["scope_name"].append(scope_name or None)
        cols["start_time"].append(start_ns)
        cols["end_time"].append(end_ns)
        cols["duration_ms"].append((end_ns - start_ns) / 1e6)
        cols["status_code"].append(status_code)
        cols["status_message"].append(status_message or None)
        for column, value in canonical.items():
            cols[column].append(value)
        cols["resource_attributes"].append(resource_attrs)
        cols["attributes"].append(text_map(attrs))
        cols["events"].append(
            [{"time": t, "name": n, "attributes": text_map(a)} for t, n, a in events] or None
        )
        cols["links"].append(
            [{"trace_id": lt, "span_id": ls, "attributes": text_map(la)} for lt, ls, la in links]
            or None
        )
        return True

    def reject(self, error: IngestError) -> None:
        """Record a record-level error found by a decoder before ``add``."""
        self.errors.append(error)

    def table(self) -> pa.Table:
        """The accumulated rows as a table with the canonical schema."""
        arrays = []
        for schema_field in SPAN_SCHEMA:
            values = self._columns[schema_field.name]
            if schema_field.type == SPAN_SCHEMA.field("start_time").type:
                arrays.append(pa.array(values, pa.int64()).cast(schema_field.type))
            else:
                arrays.append(pa.array(values, schema_field.type))
        return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)

    def decoded(self) -> Decoded:
        """Rows and errors so far, as a Decoded."""
        return Decoded(spans=self.table(), errors=list(self.errors))
