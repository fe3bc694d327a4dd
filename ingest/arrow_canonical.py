"""Canonical span columns from attribute entries, one conventions source at a time.

For each canonical column, its attribute sources are applied from the highest precedence
down, each over every entry with that source's key at once; a row that has its value is not
read again, so the first source with a value wins, as ``Normalizer.values`` decides per span.
The common shapes are numpy operations: a plain string source over string values (an empty
string is no value), a plain int source over int values, a plain or scaled float source over
double values. Every other (source, value) pair goes through the conventions' own reader and
coercion, once per distinct value in the batch. An event source is read, in its place among
the others, through its reader for each row that has one of its events (``SpanEvents``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.arrow_values import AttributeValues, attributes_of
from ingest.conventions import Column, RawEvent, coercer
from store.schema import SPAN_SCHEMA

__all__ = ["CanonicalColumn", "Keys", "SpanEvents"]


class SpanEvents:
    """A batch's span events, for the conventions' event sources and the per-span normalizer:
    the rows with an event of some names, and a row's events and start as the normalizer is
    given them (converted once per row)."""

    def __init__(self, events: pa.ListArray, starts: np.ndarray) -> None:
        self._events = events
        self._names = events.flatten().field("name")
        self._parents = events.value_parent_indices().to_numpy()
        self._starts = starts
        self._rows: dict[frozenset[str], np.ndarray] = {}
        self._python: dict[int, list[RawEvent]] = {}

    def rows_with(self, names: frozenset[str]) -> np.ndarray:
        """The rows with an event named one of ``names``, in order."""
        rows = self._rows.get(names)
        if rows is None:
            hit = pc.is_in(self._names, value_set=pa.array(sorted(names), pa.string()))
            rows = np.unique(self._parents[pc.fill_null(hit, False).to_numpy(zero_copy_only=False)])
            self._rows[names] = rows
        return rows

    def load(self, rows: np.ndarray) -> None:
        """Convert the events of ``rows`` for ``of``, in one pass: a row read alone through
        Arrow's scalars costs ten times as much."""
        todo = [row for row in rows.tolist() if row not in self._python]
        if not todo:
            return
        taken = self._events.take(pa.array(todo, pa.int64())).to_pylist()
        for row, row_events in zip(todo, taken, strict=True):
            self._python[row] = [
                (e["time_unix_nano"], e["name"], attributes_of(e["attributes"]))
                for e in row_events or ()
            ]

    def of(self, row: int) -> tuple[list[RawEvent], int]:
        """A row's events (time, name, attributes) and its start, in nanoseconds."""
        if row not in self._python:
            self.load(np.array([row]))
        return self._python[row], int(self._starts[row])


class Keys:
    """The entries (attribute positions) of each key, in row order, found with one sort."""

    def __init__(self, keys: pa.Array) -> None:
        encoded = (
            pc.dictionary_encode(keys).combine_chunks()
            if isinstance(keys, pa.ChunkedArray)
            else pc.dictionary_encode(keys)
        )
        self.ids = encoded.indices.to_numpy()
        self.names: list[str] = encoded.dictionary.to_pylist()
        small = self.ids.astype(np.int16) if len(self.names) < 2**15 else self.ids
        self.order = np.argsort(small, kind="stable")
        self.bounds = np.searchsorted(self.ids[self.order], np.arange(len(self.names) + 1))
        self.index = {name: i for i, name in enumerate(self.names)}

    def of(self, key: str | None) -> np.ndarray:
        """Positions of the entries named ``key``, in row order."""
        k = self.index.get(key) if key is not None else None
        if k is None:
            return np.zeros(0, dtype=np.int64)
        return self.order[self.bounds[k] : self.bounds[k + 1]]

    def repeated(self, rows: np.ndarray) -> bool:
        """Whether some row has a key twice."""
        by_key_rows = rows[self.order]
        by_key_ids = self.ids[self.order]
        same = (by_key_rows[1:] == by_key_rows[:-1]) & (by_key_ids[1:] == by_key_ids[:-1])
        return bool(same.any())


class CanonicalColumn:
    """One canonical column being filled for every row of a batch.

    A row's value comes from an entry (``entry``: a string taken as it is), from numpy
    (``numbers``), or from Python (``made``: an index into ``results``, the values the
    conventions' readers gave, one per distinct source value)."""

    def __init__(self, column: Column, num_rows: int) -> None:
        self.column = column
        self.kind = column.type
        self.num_rows = num_rows
        self.filled = np.zeros(num_rows, dtype=bool)
        self.entry = np.full(num_rows, -1, dtype=np.int64)
        self.numbers = np.zeros(num_rows, dtype=np.int64 if self.kind == "int" else np.float64)
        self.present = np.zeros(num_rows, dtype=bool)
        self.made = np.full(num_rows, -1, dtype=np.int64)
        self.results: list[Any] = []

    def fill(self, values: AttributeValues, keys: Keys, events: SpanEvents) -> None:
        """Apply the column's attribute and event sources, highest precedence first."""
        coerce = coercer(self.kind)
        for p, source in enumerate(self.column.sources):
            if source.kind == "event":
                self._events(events, source.events, self.column.readers[p], coerce)
            if source.kind != "attr":
                continue
            chosen = keys.of(source.key)
            if not len(chosen):
                continue
            chosen = chosen[~self.filled[values.rows[chosen]]]
            rest = values.vtype[chosen] != values.NONE
            fast = self._fast(values, source, chosen)
            if fast is not None:
                rest &= ~fast
            if rest.any():
                self._slow(values, chosen[rest], self.column.readers[p], source.key, coerce)

    def _fast(self, values: AttributeValues, source: Any, chosen: np.ndarray) -> np.ndarray | None:
        """Take the values numpy can take as they are; the mask of those handled."""
        vtype = values.vtype[chosen]
        rows = values.rows[chosen]
        if self.kind == "string" and source.plain:
            fast: np.ndarray = vtype == values.STR
            take = fast & (values.str_lengths[chosen] > 0)
            self.entry[rows[take]] = chosen[take]
            self.filled[rows[take]] = True
            return fast
        if self.kind == "int" and source.plain:
            fast = np.asarray(vtype == values.INT)
            self.numbers[rows[fast]] = values.ints[chosen[fast]]
            self.present[rows[fast]] = True
            self.filled[rows[fast]] = True
            return fast
        if self.kind == "float" and (source.plain or source.scale is not None):
            fast = np.asarray(vtype == values.DOUBLE)
            number = values.doubles[chosen[fast]]
            ok = np.isfinite(number)
            if source.scale is not None:
                number = number * source.scale
                ok &= np.isfinite(number)
            at = rows[fast][ok]
            self.numbers[at] = number[ok]
            self.present[at] = True
            self.filled[at] = True
            return fast
        return None

    def _slow(
        self,
        values: AttributeValues,
        chosen: np.ndarray,
        reader: Callable[..., Any],
        key: str | None,
        coerce: Callable[[Any], Any],
    ) -> None:
        """Read values through the conventions' reader, once per distinct value."""
        distinct, inverse = values.distinct(chosen)
        results = []
        for value in distinct:
            raw = reader({key: value}, (), 0)
            results.append(None if raw is None else coerce(raw))
        has = np.array([r is not None for r in results], dtype=bool)[inverse]
        rows = values.rows[chosen][has]
        self.filled[rows] = True
        self.made[rows] = inverse[has] + len(self.results)
        self.results.extend(results)

    def _events(
        self,
        events: SpanEvents,
        names: frozenset[str],
        reader: Callable[..., Any],
        coerce: Callable[[Any], Any],
    ) -> None:
        """Read an event source for the rows without a value that have one of its events."""
        rows = events.rows_with(names)
        rows = rows[~self.filled[rows]]
        events.load(rows)
        for row in rows.tolist():
            span_events, start_ns = events.of(row)
            raw = reader({}, span_events, start_ns)
            value = None if raw is None else coerce(raw)
            if value is not None:
                self.filled[row] = True
                self.made[row] = len(self.results)
                self.results.append(value)

    def override(self, row: int, value: Any) -> None:
        """Set one row's value as the per-span normalizer gave it (None: no value)."""
        self.entry[row] = -1
        self.present[row] = False
        self.made[row] = -1
        if value is not None:
            self.made[row] = len(self.results)
            self.results.append(value)

    def array(self, values: AttributeValues) -> pa.Array:
        """The finished column."""
        field_type = SPAN_SCHEMA.field(self.column.name).type
        made = self.made >= 0
        if self.kind in ("string", "hash"):
            taken = values.strings.take(pa.array(self.entry, mask=self.entry < 0))
            if not made.any():
                return taken
            texts = pa.array(self.results, pa.string()).take(pa.array(self.made, mask=~made))
            return pc.coalesce(texts, taken)
        if self.kind == "string_list":
            lists = pa.array(self.results, field_type)
            return lists.take(pa.array(self.made, mask=~made))
        numbers, present = self.numbers, self.present
        if made.any():
            results = np.array([0 if r is None else r for r in self.results], dtype=numbers.dtype)
            numbers[made] = results[self.made[made]]
            present[made] = True
        return pa.array(numbers, field_type, mask=~present)
