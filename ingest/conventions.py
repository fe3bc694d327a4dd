"""The span normalizer, generated from the conventions data file.

``conventions.toml`` maps every canonical column to the ordered list of source attributes it
can come from. ``load_normalizer()`` compiles that table into one small reader function per
source, so adding an alias is a one-line data change and no convention is hand-coded here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, cast

from ingest.messages import Mode, extract_text, parse_json_value

#: One span event as decoders hand it over: (time in unix nanos, name, attributes).
RawEvent = tuple[int, str, Mapping[str, Any]]
Reader = Callable[[Mapping[str, Any], Sequence[RawEvent], int], Any]

COLUMN_TYPES = ("string", "int", "float", "string_list", "hash")


@dataclass(frozen=True)
class Source:
    """What a source reads, for decoders that read attributes a column at a time.

    ``kind`` is ``attr`` (one attribute's value, whatever the span's start; its reader may be
    called with just that attribute), ``attr_time`` (an attribute read against the span's
    start), ``indexed`` or ``event`` (the first event named one of ``events``; its reader reads
    only the span's events and start). ``plain`` means the value is taken as it is; ``scale`` is
    set when scaling is its only modifier.
    """

    kind: str
    key: str | None = None
    plain: bool = False
    scale: float | None = None
    events: frozenset[str] = frozenset()  # an event source's event names


@dataclass(frozen=True)
class Column:
    """A canonical column: its type and its compiled sources, in precedence order."""

    name: str
    type: str
    readers: tuple[Reader, ...]
    source_keys: tuple[str, ...]
    triggers: tuple[tuple[str, ...], ...]
    sources: tuple[Source, ...] = ()


def _to_string(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii") or None
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    """Bytes inside a structured value as base64, as the attribute maps show them."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


#: The range a canonical int column holds (int64); a value outside it is no value.
_INT_RANGE = range(-(2**63), 2**63)


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value in _INT_RANGE else None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        return _to_int(int(value))
    if isinstance(value, str):
        try:
            return _to_int(int(value.strip()))
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                return None
            return _to_int(as_float)
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int past the largest float
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _to_string_list(value: Any) -> list[str] | None:
    value = parse_json_value(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        items = [str(v) for v in value if v is not None]
        return items or None
    return None


def _to_hash(value: Any) -> str | None:
    text = _to_string(value)
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "string": _to_string,
    "int": _to_int,
    "float": _to_float,
    "string_list": _to_string_list,
    "hash": _to_hash,
}


def coercer(type_: str) -> Callable[[Any], Any]:
    """The function that converts a (non-None) source value to a column type, or gives None."""
    try:
        return _COERCERS[type_]
    except KeyError:
        raise ValueError(f"unknown column type {type_!r}") from None


def _parse_rfc3339_ns(text: str) -> int | None:
    text = text.strip().strip('"')
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    fraction = re.search(r"\.(\d+)", text)
    nanos = int(fraction.group(1)[:9].ljust(9, "0")) if fraction else 0
    return int(moment.replace(microsecond=0).timestamp()) * 1_000_000_000 + nanos


#: What a source may do to its value before coercion; a source with none takes it as it is.
_MODIFIERS = ("map", "scale", "messages", "lower", "attr_json")


def _value_transform(spec: Mapping[str, Any]) -> Callable[[Any], Any]:
    """Build the chain of per-value modifiers a source names (lower, map, scale, messages)."""
    lower = bool(spec.get("lower"))
    mapping: Mapping[str, str] | None = spec.get("map")
    keep_unmapped = bool(spec.get("keep_unmapped"))
    scale = spec.get("scale")
    messages = cast(Mode | None, spec.get("messages"))
    json_field = spec["attr_json"][1] if "attr_json" in spec else None

    def transform(value: Any) -> Any:
        if value is None:
            return None
        if json_field is not None:
            parsed = parse_json_value(value)
            value = parsed.get(json_field) if isinstance(parsed, dict) else None
            if value is None:
                return None
        if messages is not None:
            return extract_text(value, messages)
        if lower and isinstance(value, str):
            value = value.lower()
        if mapping is not None:
            if isinstance(value, str) and value in mapping:
                value = mapping[value]
            elif not keep_unmapped:
                return None
        if scale is not None:
            number = _to_float(value)
            return None if number is None else number * float(scale)
        return value

    return transform


def _indexed_messages(
    attrs: Mapping[str, Any], prefix: str, role_key: str, content_key: str
) -> list[dict[str, Any]] | None:
    head = prefix + "."
    by_index: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(head):
            continue
        index_text, _, rest = key[len(head) :].partition(".")
        if not index_text.isdigit():
            continue
        if rest == role_key:
            by_index.setdefault(int(index_text), {})["role"] = value
        elif rest == content_key:
            by_index.setdefault(int(index_text), {})["content"] = value
    if not by_index:
        return None
    return [by_index[i] for i in sorted(by_index)]


def _compile_source(spec: Mapping[str, Any]) -> tuple[Reader, str, tuple[str, ...], Source]:
    """One source table -> a reader, a label for docs and views, the keys that trigger it, and
    what it reads as data (``Source``).

    A source is only tried for a span that has one of its trigger keys (or, for event
    sources, any event), so a span pays for the attributes it has, not for every alias.
    """
    transform = _value_transform(spec)
    if "attr" in spec or "attr_json" in spec:
        key: str = spec["attr"] if "attr" in spec else spec["attr_json"][0]
        if spec.get("since_start"):

            def read_time(
                attrs: Mapping[str, Any], events: Sequence[RawEvent], start_ns: int
            ) -> Any:
                value = attrs.get(key)
                moment = _parse_rfc3339_ns(value) if isinstance(value, str) else None
                return None if moment is None else (moment - start_ns) / 1e6

            return read_time, key, (key,), Source("attr_time", key)
        modifiers = [k for k in _MODIFIERS if k in spec]
        if not modifiers:

            def read_plain(
                attrs: Mapping[str, Any], events: Sequence[RawEvent], start_ns: int
            ) -> Any:
                return attrs.get(key)

            return read_plain, key, (key,), Source("attr", key, plain=True)

        def read_attr(attrs: Mapping[str, Any], events: Sequence[RawEvent], start_ns: int) -> Any:
            return transform(attrs.get(key))

        scale = float(spec["scale"]) if modifiers == ["scale"] else None
        return read_attr, key, (key,), Source("attr", key, scale=scale)
    if "indexed" in spec:
        prefix, role_key, content_key = spec["indexed"], spec["role_key"], spec["content_key"]

        first_keys = (f"{prefix}.0.{role_key}", f"{prefix}.0.{content_key}")

        def read_indexed(
            attrs: Mapping[str, Any], events: Sequence[RawEvent], start_ns: int
        ) -> Any:
            return transform(_indexed_messages(attrs, prefix, role_key, content_key))

        # Flattened lists start at index 0, so their first keys trigger the scan.
        return read_indexed, f"{prefix}.<i>.{content_key}", first_keys, Source("indexed")
    if "event" in spec:
        names = frozenset(spec["event"])
        event_attr = spec.get("event_attr")
        since_start = bool(spec.get("since_start"))

        def read_event(attrs: Mapping[str, Any], events: Sequence[RawEvent], start_ns: int) -> Any:
            for time_ns, name, event_attrs in events:
                if name in names:
                    if since_start:
                        return (time_ns - start_ns) / 1e6
                    if event_attr is not None:
                        return transform(event_attrs.get(event_attr))
            return None

        return read_event, "event:" + "|".join(spec["event"]), (), Source("event", events=names)
    raise ValueError(f"conventions: a source needs attr, attr_json, indexed or event: {dict(spec)}")


#: One column's part of a plan: its index, its readers in precedence order, its coercion.
_Step = tuple[int, tuple[Reader, ...], Callable[[Any], Any]]
#: Distinct attribute-key sets whose plans a normalizer keeps (then it starts over).
PLAN_CACHE_SIZE = 4096


class Normalizer:
    """Reads canonical columns out of a span's attributes and events."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in columns)
        # attribute key -> (column index, source precedence) of every source it can feed
        self._by_key: dict[str, list[tuple[int, int]]] = {}
        self._event_sources: list[tuple[int, int]] = []
        for col, column in enumerate(self.columns):
            for prio, keys in enumerate(column.triggers):
                if not keys:
                    self._event_sources.append((col, prio))
                for key in keys:
                    self._by_key.setdefault(key, []).append((col, prio))
        self._coercers = tuple(coercer(c.type) for c in self.columns)
        # Spans of one instrumentation share their attribute keys, so which sources to try,
        # in which order, is worked out once per distinct key set (and events or none).
        self._plans: dict[tuple[bool, tuple[str, ...]], tuple[_Step, ...]] = {}

    def _plan(self, keys: tuple[str, ...], has_events: bool) -> tuple[_Step, ...]:
        candidates: dict[int, set[int]] = {}
        by_key = self._by_key
        for key in keys:
            hits = by_key.get(key)
            if hits is not None:
                for col, prio in hits:
                    candidates.setdefault(col, set()).add(prio)
        if has_events:
            for col, prio in self._event_sources:
                candidates.setdefault(col, set()).add(prio)
        return tuple(
            (col, tuple(self.columns[col].readers[p] for p in sorted(prios)), self._coercers[col])
            for col, prios in sorted(candidates.items())
        )

    def values(
        self,
        attrs: Mapping[str, Any],
        events: Sequence[RawEvent],
        start_ns: int,
        keys: tuple[str, ...] | None = None,
    ) -> list[Any]:
        """The canonical values of one span, in ``names`` order (None where no source has one);
        ``keys`` is ``tuple(attrs)`` when the caller has it already."""
        keys = tuple(attrs) if keys is None else keys
        plan_key = (bool(events), keys)
        plan = self._plans.get(plan_key)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            plan = self._plans[plan_key] = self._plan(keys, bool(events))
        out: list[Any] = [None] * len(self.names)
        for col, readers, coerce in plan:
            for reader in readers:
                raw = reader(attrs, events, start_ns)
                if raw is not None:
                    value = coerce(raw)
                    if value is not None:
                        out[col] = value
                        break
        return out

    def normalize(
        self, attrs: Mapping[str, Any], events: Sequence[RawEvent], start_ns: int
    ) -> dict[str, Any]:
        """The canonical values of one span by column name (None where no source has one)."""
        return dict(zip(self.names, self.values(attrs, events, start_ns), strict=True))


def parse_conventions(text: str) -> Normalizer:
    """Compile a conventions table (TOML text) into a normalizer; errors name the column."""
    table = tomllib.loads(text)
    columns = []
    for name, spec in table.get("columns", {}).items():
        type_ = spec.get("type")
        if type_ not in COLUMN_TYPES:
            raise ValueError(f"conventions: column {name!r} has unknown type {type_!r}")
        compiled = [_compile_source(source) for source in spec.get("sources", [])]
        columns.append(
            Column(
                name=name,
                type=type_,
                readers=tuple(reader for reader, _, _, _ in compiled),
                source_keys=tuple(label for _, label, _, _ in compiled),
                triggers=tuple(keys for _, _, keys, _ in compiled),
                sources=tuple(source for _, _, _, source in compiled),
            )
        )
    return Normalizer(columns)


@cache
def load_normalizer() -> Normalizer:
    """The normalizer built from the packaged ``conventions.toml``."""
    text = resources.files("ingest").joinpath("conventions.toml").read_text(encoding="utf-8")
    return parse_conventions(text)
