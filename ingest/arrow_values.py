"""OTLP attribute values as ptars parses them, read a column at a time.

ptars gives each attribute as ``struct<key, value: struct<string_value, bool_value, int_value,
double_value, array_value, kvlist_value, bytes_value>>`` with the one member that is set
non-null, and keeps the items of arrays and kvlists serialized (``AnyValue`` / ``KeyValue``
bytes), since Arrow types cannot nest without end. ``AttributeValues`` holds a batch's entries
as numpy arrays by kind, gives Python values only for the entries asked for (parsing nested
items with protobuf, as ``ingest.otlp.any_value`` reads them), and renders every value as the
attribute maps store it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from ingest.otlp import any_value
from ingest.records import attribute_text

#: Nesting (in protobuf message levels) past which a value is left to the reference path:
#: upb refuses messages nested 100 deep counted from the request, and an item parsed on its own
#: starts deeper than it would inside the request.
MAX_NESTING = 60

#: Each byte's two hex digits as one little-endian uint16 (the first digit in the low byte).
_HEX_PAIRS = np.frombuffer("".join(f"{i:02x}" for i in range(256)).encode(), dtype="<u2")


class Irregular(Exception):
    """A batch the columnar path does not decode exactly as the reference path does."""


def nesting(value: Any) -> int:
    """Protobuf message levels below an attribute value (a list two, a dict three per level)."""
    if isinstance(value, list):
        return 2 + max((nesting(v) for v in value), default=0)
    if isinstance(value, dict):
        return 3 + max((nesting(v) for v in value.values()), default=0)
    return 0


def _kv(item: bytes) -> tuple[str, Any]:
    kv = KeyValue.FromString(item)
    return kv.key, any_value(kv.value)


def complex_value(kind: str, items: list[bytes]) -> Any:
    """An array (``kind`` "array") or kvlist from its serialized items, as ``any_value`` reads
    it; raises Irregular when protobuf cannot parse an item on its own or it nests too deep."""
    try:
        if kind == "array":
            value: Any = [any_value(AnyValue.FromString(item)) for item in items]
        else:
            value = dict(_kv(item) for item in items)
    except (DecodeError, RecursionError) as exc:
        raise Irregular(f"a nested value protobuf does not parse on its own: {exc}") from exc
    if nesting(value) > MAX_NESTING:
        raise Irregular("a value nested too deep to parse on its own")
    return value


_MEMBERS = (
    "string_value", "int_value", "double_value", "bool_value", "bytes_value", "array_value",
    "kvlist_value",
)  # fmt: skip


@lru_cache(maxsize=4096)
def _complex_cached(kind: str, items: tuple[bytes, ...]) -> Any:
    # Finish reasons and tags repeat span after span. Callers do not mutate what comes back.
    return complex_value(kind, list(items))


def any_value_of(value: dict[str, Any] | None) -> Any:
    """A Python value from one AnyValue struct as ``as_py()`` gives it."""
    if value is None:
        return None
    members = [name for name in _MEMBERS if value[name] is not None]
    if len(members) > 1:
        raise Irregular("an attribute value sets two kinds of value")
    if not members:
        return None
    if members[0] == "array_value":
        return complex_value("array", value["array_value"]["values"])
    if members[0] == "kvlist_value":
        return complex_value("kvlist", value["kvlist_value"]["values"])
    return value[members[0]]


def attributes_of(entries: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A list of KeyValue structs (``as_py()``) as a dict, the last of a repeated key winning."""
    return {kv["key"]: any_value_of(kv["value"]) for kv in entries or ()}


@dataclass
class AttributeValues:
    """A batch's attribute entries (one per key-value pair, in row order) by value kind."""

    NONE = 0
    STR = 1
    INT = 2
    DOUBLE = 3
    BOOL = 4
    BYTES = 5
    ARRAY = 6
    KVLIST = 7

    keys: pa.Array
    #: The row (span, event, link) each entry belongs to.
    rows: np.ndarray
    vtype: np.ndarray
    #: String values (null where the value is not a string) and their lengths in bytes.
    strings: pa.Array
    str_lengths: np.ndarray
    ints: np.ndarray
    doubles: np.ndarray
    _members: dict[int, pa.Array]

    @classmethod
    def of(cls, lists: pa.ListArray) -> AttributeValues:
        """The entries of a list<KeyValue> column."""
        entries = lists.flatten()
        rows = lists.value_parent_indices().to_numpy()
        value = entries.field("value")
        names = [value.type.field(i).name for i in range(value.type.num_fields)]
        # flatten() applies the struct's own nulls (a KeyValue without a value) to its members
        members = dict(zip(names, value.flatten(), strict=True))
        codes = {
            cls.STR: members["string_value"],
            cls.INT: members["int_value"],
            cls.DOUBLE: members["double_value"],
            cls.BOOL: members["bool_value"],
            cls.BYTES: members["bytes_value"],
            cls.ARRAY: members["array_value"],
            cls.KVLIST: members["kvlist_value"],
        }
        vtype = np.zeros(len(entries), dtype=np.int8)
        for code, member in codes.items():
            if member.null_count < len(member):
                present = member.is_valid().to_numpy(zero_copy_only=False)
                if (vtype[present] != cls.NONE).any():
                    # two members of the oneof on the wire: protobuf keeps the last one sent
                    raise Irregular("an attribute value sets two kinds of value")
                vtype[present] = code
        strings = codes[cls.STR]
        return cls(
            keys=entries.field("key"),
            rows=rows,
            vtype=vtype,
            strings=strings,
            str_lengths=pc.fill_null(pc.binary_length(strings), 0).to_numpy(),
            ints=pc.fill_null(codes[cls.INT], 0).to_numpy(),
            doubles=pc.fill_null(codes[cls.DOUBLE], 0.0).to_numpy(),
            _members=codes,
        )

    def python(self, positions: np.ndarray) -> list[Any]:
        """The Python values of some entries, as ``ingest.otlp`` decodes them."""
        out: list[Any] = [None] * len(positions)
        kinds = self.vtype[positions]
        for code, member in self._members.items():
            where = np.flatnonzero(kinds == code)
            if not len(where):
                continue
            if code in (self.ARRAY, self.KVLIST):
                kind = "array" if code == self.ARRAY else "kvlist"
                serialized = member.field("values").take(pa.array(positions[where]))
                items = [_complex_cached(kind, tuple(v)) for v in serialized.to_pylist()]
            else:
                items = member.take(pa.array(positions[where])).to_pylist()
            for i, item in zip(where.tolist(), items, strict=True):
                out[i] = item
        return out

    def distinct(self, positions: np.ndarray) -> tuple[list[Any], np.ndarray]:
        """The distinct Python values of some entries, and each entry's index among them."""
        inverse = np.zeros(len(positions), dtype=np.int64)
        out: list[Any] = []
        kinds = self.vtype[positions]
        for code in self._members:
            where = np.flatnonzero(kinds == code)
            if not len(where):
                continue
            chosen = positions[where]
            if code == self.STR:
                encoded = pc.dictionary_encode(self.strings.take(pa.array(chosen)))
                inverse[where] = encoded.indices.to_numpy() + len(out)
                out.extend(encoded.dictionary.to_pylist())
                continue
            if code in (self.INT, self.DOUBLE):
                # doubles by their bits: 0.0 and -0.0 read differently as text
                numbers = self.ints if code == self.INT else self.doubles.view(np.int64)
                unique, where_in = np.unique(numbers[chosen], return_inverse=True)
                inverse[where] = where_in + len(out)
                if code == self.INT:
                    out.extend(unique.tolist())
                else:
                    out.extend(unique.view(np.float64).tolist())
                continue
            inverse[where] = np.arange(len(where)) + len(out)
            out.extend(self.python(chosen))
        none = np.flatnonzero(kinds == self.NONE)
        if len(none):
            inverse[none] = len(out)
            out.append(None)
        return out, inverse

    def texts(self) -> pa.Array:
        """Every value as the attribute maps store it (``records.attribute_text``)."""
        # Each entry's text is in exactly one of these, null in the others.
        parts = [self.strings]
        ints = self.vtype == self.INT
        if ints.any():
            parts.append(pc.cast(self._members[self.INT], pa.string()))
        is_other = (self.vtype != self.STR) & ~ints
        others = np.flatnonzero(is_other)
        if len(others):
            distinct, inverse = self.distinct(others)
            # doubles, the most of these, straight to repr (attribute_text's rule for them)
            rendered = pa.array(
                [repr(v) if type(v) is float else attribute_text(v) for v in distinct],
                pa.string(),
            )
            where = np.zeros(len(self.vtype), dtype=np.int64)
            where[others] = inverse
            parts.append(rendered.take(pa.array(where, mask=~is_other)))
        return parts[0] if len(parts) == 1 else pc.coalesce(*parts)


def entries_of(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Where the entries of ``rows`` are in a list (or map) array's values, in row order, from
    the array's ``offsets`` (the first one 0)."""
    counts = offsets[rows + 1] - offsets[rows]
    starts = np.repeat(offsets[rows] - np.cumsum(counts) + counts, counts)
    positions: np.ndarray = starts + np.arange(counts.sum())
    return positions


def hex_ids(ids: pa.Array, width: int, null: np.ndarray | None = None) -> pa.Array:
    """Binary ids of ``width`` bytes as lower-case hex; null where ``null`` says or where an id
    has another size. Ids that all have the size are read from the buffer as they lie."""
    n = len(ids)
    _, offsets_buffer, data_buffer = ids.buffers()[:3]
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[ids.offset : ids.offset + n + 1]
    keep = np.diff(offsets) == width
    if ids.null_count:
        keep &= ids.is_valid().to_numpy(zero_copy_only=False)
    if null is not None:
        keep &= ~null
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else None
    if data is None or not keep.any():
        raw = np.zeros(0, dtype=np.uint8)
    elif keep.all():
        raw = data[offsets[0] : offsets[-1]]  # n ids of ``width`` bytes, back to back
    else:
        starts = offsets[:-1][keep].astype(np.int64)
        raw = data[(starts[:, None] + np.arange(width)).ravel()]
    text = _HEX_PAIRS[raw].view(np.uint8)
    out_offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.where(keep, 2 * width, 0), out=out_offsets[1:])
    num_null = int(n - keep.sum())
    validity = pa.py_buffer(np.packbits(keep, bitorder="little")) if num_null else None
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(out_offsets), pa.py_buffer(text), validity, num_null
    )
