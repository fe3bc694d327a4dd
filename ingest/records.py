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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.conventions import Normalizer, RawEvent, load_normalizer
from store.schema import ATTRIBUTE_MAP, DEFAULT_PROJECT, FEEDBACK_SCHEMA, SPAN_SCHEMA

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
#: One string as JSON, quoted and escaped exactly as _JSON_TEXT writes it (ensure_ascii=False).
_JSON_STRING = json.encoder.encode_basestring


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
    if isinstance(value, list) and all(type(v) is str for v in value):
        # What _JSON_TEXT gives for a list of strings (finish reasons, stop sequences),
        # without setting up an encoder per value.
        return "[" + ",".join(map(_JSON_STRING, value)) + "]"
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


#: The times a span can hold: nanoseconds since 1970 as int64 (up to 2262-04-11).
_TIME_RANGE = range(-(2**63), 2**63)


def check_span(
    trace_id: Any,
    span_id: Any,
    parent_span_id: Any,
    start_ns: int,
    end_ns: int,
    event_times: Iterable[int] = (),
) -> tuple[str | None, str | None, str | None, str | None]:
    """Why a span is rejected (None when it is not), and its trace, span and parent ids as hex
    (the parent None when it has none)."""
    # Binary ids of the right size (protobuf) are the common case: hex them directly.
    if type(trace_id) is bytes and len(trace_id) == 16:
        tid: str | None = trace_id.hex()
    else:
        tid = normalize_hex_id(trace_id, 16)
    if type(span_id) is bytes and len(span_id) == 8:
        sid: str | None = span_id.hex()
    else:
        sid = normalize_hex_id(span_id, 8)
    pid = None
    if tid is None or tid == _ZERO_TRACE:
        return (
            f"invalid trace id {trace_id!r}: want 16 bytes as 32 hex characters",
            None,
            None,
            None,
        )
    if sid is None or sid == _ZERO_SPAN:
        return f"invalid span id {span_id!r}: want 8 bytes as 16 hex characters", None, None, None
    if parent_span_id not in (None, "", b""):
        pid = normalize_hex_id(parent_span_id, 8)
        if pid is None:
            reason = f"invalid parent span id {parent_span_id!r}: want 16 hex characters"
            return reason, None, None, None
        if pid == _ZERO_SPAN:
            pid = None
    if start_ns <= 0:
        return "missing start time (startTimeUnixNano is 0)", None, None, None
    if end_ns < start_ns:
        reason = f"end time {end_ns} is before start time {start_ns} (clock skew in the sender?)"
        return reason, None, None, None
    if end_ns not in _TIME_RANGE:
        return f"end time {end_ns} ns is past 2262-04-11, the last time stored", None, None, None
    for index, time_ns in enumerate(event_times):
        if time_ns not in _TIME_RANGE:
            reason = f"event {index} time {time_ns} ns is outside 1677-09-21 .. 2262-04-11"
            return reason, None, None, None
    return None, tid, sid, pid


#: The columns ``add`` fills from its arguments, in the order of the row tuples it keeps.
_BASE_COLUMNS = (
    "project", "trace_id", "span_id", "parent_span_id", "name", "kind", "service_name",
    "scope_name", "start_time", "end_time", "duration_ms", "status_code", "status_message",
)  # fmt: skip
_TIMESTAMP_COLUMNS = frozenset(
    f.name for f in SPAN_SCHEMA if f.type == SPAN_SCHEMA.field("start_time").type
)
_EVENTS_TYPE = SPAN_SCHEMA.field("events").type
_LINKS_TYPE = SPAN_SCHEMA.field("links").type


class _MapColumn:
    """A list of string -> string maps kept as flat values and, per map, the index of its key
    tuple: maps of one instrumentation share their keys, so each distinct key tuple is
    converted to Arrow once and repeated by ``take``."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.key_sets: dict[tuple[str, ...], int] = {}
        self.key_set_of: list[int] = []

    def add(self, attrs: Mapping[str, Any], keys: tuple[str, ...] | None = None) -> None:
        """Append one map; ``keys`` is ``tuple(attrs)`` when the caller has it already."""
        keys = tuple(attrs) if keys is None else keys
        key_set = self.key_sets.get(keys)
        if key_set is None:
            key_set = self.key_sets[keys] = len(self.key_sets)
        self.key_set_of.append(key_set)
        # Strings and plain numbers (nearly every value) without a call: their text is
        # themselves or repr(), as attribute_text gives.
        self.values.extend(
            [
                v
                if (t := type(v)) is str
                else repr(v)
                if t is int or t is float
                else attribute_text(v)
                for v in attrs.values()
            ]
        )

    def array(self) -> pa.MapArray:
        distinct = list(self.key_sets)  # in key-set index order
        set_sizes = np.array([len(keys) for keys in distinct], dtype=np.int64)
        set_starts = np.zeros(len(distinct), dtype=np.int64)
        np.cumsum(set_sizes[:-1], out=set_starts[1:])
        of = np.array(self.key_set_of, dtype=np.int64)
        sizes = set_sizes[of] if len(of) else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(of) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        # Entry j of map i is key (j - offsets[i]) of its key set.
        positions = np.arange(offsets[-1], dtype=np.int64) + np.repeat(
            set_starts[of] - offsets[:-1], sizes
        )
        all_keys = pa.array([key for keys in distinct for key in keys], pa.string())
        return pa.MapArray.from_arrays(
            pa.array(offsets.astype(np.int32)),
            all_keys.take(pa.array(positions)),
            pa.array(self.values, pa.string()),
            type=ATTRIBUTE_MAP,
        )


class _StructListColumn:
    """A list<struct<a, b, attributes>> column (events, links) built from flat parts; a row
    with no entries is null."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.counts: list[int] = []
        self.first: list[Any] = []
        self.second: list[str] = []
        self.attributes = _MapColumn()

    def add(self, row: int, entries: Sequence[tuple[Any, str, Mapping[str, Any]]]) -> None:
        for a, b, attrs in entries:
            self.first.append(a)
            self.second.append(b)
            self.attributes.add(attrs)
        self.rows.append(row)
        self.counts.append(len(entries))

    def array(self, num_rows: int, type_: pa.ListType) -> pa.ListArray:
        counts = np.zeros(num_rows, dtype=np.int32)
        counts[self.rows] = self.counts
        offsets = np.zeros(num_rows + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        struct_type = type_.value_type
        first_type = struct_type.field(0).type
        first = (
            pa.array(self.first, pa.int64()).cast(first_type)
            if first_type == SPAN_SCHEMA.field("start_time").type
            else pa.array(self.first, first_type)
        )
        structs = pa.StructArray.from_arrays(
            [first, pa.array(self.second, struct_type.field(1).type), self.attributes.array()],
            fields=list(struct_type),
        )
        return pa.ListArray.from_arrays(
            pa.array(offsets), structs, type=type_, mask=pa.array(counts == 0)
        )


class SpanBuilder:
    """Accumulates validated, normalized spans column by column.

    Each span's scalar values (``_BASE_COLUMNS``, then the normalizer's columns) are appended
    to one flat list and attribute maps to flat key and value lists, which become Arrow
    columns once per batch: no container is kept per span, so the cyclic collector has
    nothing per span to walk. A resource's attribute map is stored once and repeated by index
    for each of its spans (decoders pass the same list for every span of a resource).
    """

    def __init__(
        self, project: str = DEFAULT_PROJECT, normalizer: Normalizer | None = None
    ) -> None:
        self.project = project
        self.normalizer = normalizer or load_normalizer()
        self._canonical_index = {name: i for i, name in enumerate(self.normalizer.names)}
        self._columns = (*_BASE_COLUMNS, *self.normalizer.names)
        self._values: list[Any] = []
        self._num_rows = 0
        self._attributes = _MapColumn()
        self._resources: list[list[tuple[str, str]]] = []
        self._resource_of: list[int] = []
        self._last_resource: list[tuple[str, str]] | None = None
        self._events = _StructListColumn()
        self._links = _StructListColumn()
        self.errors: list[IngestError] = []

    def __len__(self) -> int:
        return self._num_rows

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
        reason, tid, sid, pid = check_span(
            trace_id, span_id, parent_span_id, start_ns, end_ns, (e[0] for e in events)
        )
        if reason is not None:
            self.errors.append(IngestError(source, location, reason))
            return False
        keys = tuple(attrs)
        canonical = self.normalizer.values(attrs, events, start_ns, keys)
        if overrides:
            index = self._canonical_index
            for column, value in overrides.items():
                if value is not None and column in index:
                    canonical[index[column]] = value
        row = self._num_rows
        self._num_rows += 1
        self._values.extend(
            (
                project or self.project, tid, sid, pid, name, kind, service_name,
                scope_name or None, start_ns, end_ns, (end_ns - start_ns) / 1e6, status_code,
                status_message or None,
            )
        )  # fmt: skip
        self._values.extend(canonical)
        self._attributes.add(attrs, keys)
        if resource_attrs is not self._last_resource:
            self._last_resource = resource_attrs
            self._resources.append(resource_attrs)
        self._resource_of.append(len(self._resources) - 1)
        if events:
            self._events.add(row, events)
        if links:
            self._links.add(row, links)
        return True

    def reject(self, error: IngestError) -> None:
        """Record a record-level error found by a decoder before ``add``."""
        self.errors.append(error)

    def table(self) -> pa.Table:
        """The accumulated rows as a table with the canonical schema."""
        with gc_paused():
            return self._table()

    def _table(self) -> pa.Table:
        num_rows = self._num_rows
        width = len(self._columns)
        values = {name: self._values[i::width] for i, name in enumerate(self._columns)}
        arrays = []
        for schema_field in SPAN_SCHEMA:
            name = schema_field.name
            if name == "attributes":
                arrays.append(self._attributes.array())
            elif name == "resource_attributes":
                resources = pa.array(self._resources, schema_field.type)
                arrays.append(resources.take(pa.array(self._resource_of, pa.int32())))
            elif name == "events":
                arrays.append(self._events.array(num_rows, _EVENTS_TYPE))
            elif name == "links":
                arrays.append(self._links.array(num_rows, _LINKS_TYPE))
            elif name in _TIMESTAMP_COLUMNS:
                arrays.append(pa.array(values[name], pa.int64()).cast(schema_field.type))
            else:
                arrays.append(pa.array(values.get(name, [None] * num_rows), schema_field.type))
        return pa.Table.from_arrays(arrays, schema=SPAN_SCHEMA)

    def decoded(self) -> Decoded:
        """Rows and errors so far, as a Decoded."""
        return Decoded(spans=self.table(), errors=list(self.errors))
