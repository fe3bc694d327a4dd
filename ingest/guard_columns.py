"""Arrow column helpers of the guard stage (``ingest.guard``): screening whole columns with RE2,
reading only the chosen rows into Python, and rewriting chosen values in place.

Maps and event lists are read from their flat children, which is much cheaper than Arrow's
nested ``to_pylist``; a rewrite builds the new column from the old one's buffers, replacing only
the values that changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.arrow_values import entries_of
from store.schema import ATTRIBUTE_MAP

__all__ = [
    "INT_EVENTS",
    "chunk",
    "entry_rows",
    "event_lists",
    "event_maps",
    "join_binary",
    "list_rows_with",
    "map_lists",
    "mask_of",
    "matches_anywhere",
    "plain",
    "rewrite_events",
    "rewrite_map",
    "rewritten",
    "rows_of",
    "screen",
    "screen_maps",
    "screen_rows",
]

INT_EVENTS = pa.list_(
    pa.struct([("time", pa.int64()), ("name", pa.string()), ("attributes", ATTRIBUTE_MAP)])
)


def mask_of(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean array as numpy, nulls false."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def screen(texts: pa.ChunkedArray, pattern: str) -> np.ndarray:
    return mask_of(pc.match_substring_regex(texts, pattern))


def screen_rows(texts: pa.ChunkedArray, rows: np.ndarray, pattern: str) -> np.ndarray:
    """``screen`` of the texts of ``rows`` (a mask), false elsewhere: the other rows' texts,
    and their nulls, are not scanned."""
    found = np.zeros(len(rows), dtype=bool)
    if rows.any():
        found[rows] = screen(texts.filter(pa.array(rows)), pattern)
    return found


#: What makes a match depend on the text around it: anchors and word boundaries (outside a
#: character class, where ``^`` negates).
_CONTEXT_ASSERTION = re.compile(r"\\[^bBAz]|\[\^?\]?(?:\\.|[^\]\\])*\]|(\^|\$|\\[bBAz])")


def matches_anywhere(pattern: str) -> bool:
    """Whether ``pattern`` matches a text whenever it matches a part of it (no anchors, no word
    boundaries): then a match in some value is a match in those values joined."""
    return not any(m.group(1) for m in _CONTEXT_ASSERTION.finditer(pattern))


def screen_maps(maps: pa.MapArray, pattern: str) -> np.ndarray:
    """``screen`` of each value of a map array (``plain``), in one RE2 call per map rather than
    per entry when ``pattern`` matches anywhere: a map's values lie back to back in the items'
    buffer, so each map is scanned as one text, and only the entries of the maps that matched
    (a finding, or a match across two values) are screened one by one."""
    items = maps.items
    if not matches_anywhere(pattern) or not len(items) or items.type != pa.string():
        return screen(items, pattern)
    value_offsets = np.frombuffer(items.buffers()[1], dtype=np.int32)[
        items.offset : items.offset + len(items) + 1
    ]
    map_offsets = maps.offsets.to_numpy()
    joined = pa.StringArray.from_buffers(
        len(maps), pa.py_buffer(value_offsets[map_offsets]), items.buffers()[2]
    )
    found = np.zeros(len(items), dtype=bool)
    hit = np.flatnonzero(screen(joined, pattern))
    if len(hit):
        entries = entries_of(map_offsets, hit)
        found[entries] = screen(items.take(pa.array(entries, pa.int64())), pattern)
    return found


def list_rows_with(lists: pa.ChunkedArray, values: tuple[str, ...], n: int) -> np.ndarray:
    """Rows of a list<string> column holding one of ``values`` (case-insensitive)."""
    found = np.zeros(n, dtype=bool)
    flat = pc.list_flatten(lists)
    if len(flat):
        hits = mask_of(pc.is_in(pc.utf8_lower(flat), pa.array(values)))
        parents = pc.list_parent_indices(lists).to_numpy()
        found[parents[hits]] = True
    return found


def rows_of(spans: pa.Table, indices: np.ndarray, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The chosen rows as dicts (``to_pylist`` values; start and event times as integer
    nanoseconds), converted column by column: maps and event lists from their flat children,
    which is much cheaper than Arrow's nested ``to_pylist``."""
    if not len(indices):
        return []
    taken = spans.select(list(names)).take(pa.array(indices, pa.int64()))
    columns: list[list[Any]] = []
    for name in names:
        column = taken.column(name).combine_chunks()
        if name == "start_time":
            columns.append(column.cast(pa.int64()).to_pylist())
        elif name == "events":  # event times as integer nanoseconds, like start_time
            columns.append(event_lists(column.cast(INT_EVENTS)))
        elif isinstance(column, pa.MapArray):
            columns.append(map_lists(column))
        else:
            columns.append(column.to_pylist())
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def map_lists(maps: pa.MapArray) -> list[Any]:
    """``maps.to_pylist()``: a list of (key, value) pairs per row, None for a null map."""
    offsets = maps.offsets.to_pylist()
    pairs = list(zip(maps.keys.to_pylist(), maps.items.to_pylist(), strict=True))
    valid = maps.is_valid().to_pylist() if maps.null_count else None
    return [
        pairs[offsets[i] : offsets[i + 1]] if valid is None or valid[i] else None
        for i in range(len(maps))
    ]


def event_lists(events: pa.ListArray) -> list[Any]:
    """``events.to_pylist()`` for the events column (list of struct time, name, attributes)."""
    structs = events.values
    if structs.null_count or structs.offset:
        return list(events.to_pylist())
    times = structs.field("time").to_pylist()
    names = structs.field("name").to_pylist()
    maps = map_lists(structs.field("attributes"))
    entries = [
        {"time": t, "name": n, "attributes": a} for t, n, a in zip(times, names, maps, strict=True)
    ]
    offsets = events.offsets.to_pylist()
    valid = events.is_valid().to_pylist() if events.null_count else None
    return [
        entries[offsets[i] : offsets[i + 1]] if valid is None or valid[i] else None
        for i in range(len(events))
    ]


def rewritten(
    texts: pa.Array | pa.ChunkedArray, candidates: np.ndarray, rewrite: Callable[[int, str], str]
) -> pa.Array | None:
    """``texts`` with every candidate value passed through ``rewrite(index, text)``; None when
    nothing changed. Only the candidates are read into Python."""
    indices = np.flatnonzero(candidates)
    if not len(indices):
        return None
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    old = texts.take(pa.array(indices)).to_pylist()
    changed = np.zeros(len(texts), dtype=bool)
    replacements = []
    for index, text in zip(indices, old, strict=True):
        new = rewrite(int(index), text)
        if new != text:
            changed[index] = True
            replacements.append(new)
    if not replacements:
        return None
    return pc.replace_with_mask(
        texts.cast(pa.string()), pa.array(changed), pa.array(replacements, pa.string())
    )


def plain(array: pa.Array) -> pa.Array:
    """The array without a slice offset (so its offsets index its children directly)."""
    if array.offset == 0 and (
        not isinstance(array, pa.ListArray | pa.MapArray) or array.offsets[0].as_py() == 0
    ):
        return array
    return pa.array(array.to_pylist(), type=array.type)


def entry_rows(maps: pa.MapArray) -> np.ndarray:
    """For each entry of a map (or list) array, the index of the row that holds it."""
    maps = plain(maps)
    offsets = maps.offsets.to_numpy()
    return np.repeat(np.arange(len(maps)), np.diff(offsets))


def rewrite_map(
    maps: pa.MapArray, candidates: np.ndarray, rewrite: Callable[[int, str], str]
) -> pa.MapArray | None:
    """The map with each candidate value rewritten by ``rewrite(entry index, text)``, or None."""
    maps = plain(maps)
    items = rewritten(maps.items, candidates, rewrite)
    if items is None:
        return None
    return pa.MapArray.from_arrays(
        maps.offsets, maps.keys, items, type=maps.type,
        mask=maps.is_null() if maps.null_count else None,
    )  # fmt: skip


def rewrite_events(
    spans: pa.Table, candidates: np.ndarray, rewrite: Callable[[int, str], str]
) -> pa.Table:
    events, structs, maps = event_maps(spans)
    if not len(structs) or not candidates.any():
        return spans
    row_of_event = entry_rows(events)
    event_of_entry = entry_rows(maps)
    new_maps = rewrite_map(
        maps,
        candidates,
        lambda entry, text: rewrite(int(row_of_event[event_of_entry[entry]]), text),
    )
    if new_maps is None:
        return spans
    fields = [
        structs.field(i) if f.name != "attributes" else new_maps for i, f in enumerate(structs.type)
    ]
    new_structs = pa.StructArray.from_arrays(
        fields, fields=list(structs.type), mask=structs.is_null() if structs.null_count else None
    )
    new_events = pa.ListArray.from_arrays(
        events.offsets,
        new_structs,
        type=events.type,
        mask=events.is_null() if events.null_count else None,
    )
    return spans.set_column(spans.schema.get_field_index("events"), "events", new_events)


def event_maps(spans: pa.Table) -> tuple[pa.ListArray, pa.StructArray, pa.MapArray]:
    """The events column without slice offsets, its structs, and their attribute maps."""
    events = plain(spans.column("events").combine_chunks())
    structs = events.values
    return events, structs, plain(structs.field("attributes"))


def join_binary(left: pa.Array, right: pa.Array, separator: bytes) -> pa.Array:
    """``left + separator + right`` per row, as binary; a null part reads as 0xFD (no UTF-8
    text holds it)."""
    binary = pa.binary()
    return pc.binary_join_element_wise(
        left.cast(binary),
        right.cast(binary),
        pa.scalar(separator, binary),
        null_handling="replace",
        null_replacement=b"\xfd",
    )


def chunk(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
