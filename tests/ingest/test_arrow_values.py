"""Column helpers of the columnar decoder: ids as hex, the entries of chosen rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.arrow_values import entries_of, hex_ids


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.binary(min_size=7, max_size=9)), max_size=12),
    st.integers(0, 3),
    st.integers(0, 2**12 - 1),
)
def test_hex_ids_reads_every_id_of_the_width_and_nulls_the_rest(
    ids: list[bytes | None], cut: int, drop: int
) -> None:
    array = pa.array(ids, pa.binary()).slice(min(cut, len(ids)))
    null = np.array([bool(drop >> i & 1) for i in range(len(array))], dtype=bool)
    for asked in (None, null):
        dropped = null if asked is not None else np.zeros(len(array), dtype=bool)
        expected = [
            value.hex() if value is not None and len(value) == 8 and not gone else None
            for value, gone in zip(array.to_pylist(), dropped.tolist(), strict=True)
        ]
        assert hex_ids(array, 8, null=asked).to_pylist() == expected


def test_hex_ids_of_ids_back_to_back_and_of_none() -> None:
    ids = [bytes(range(i, i + 16)) for i in (0, 100, 240)]
    assert hex_ids(pa.array(ids, pa.binary()), 16).to_pylist() == [i.hex() for i in ids]
    assert hex_ids(pa.array([b"", None], pa.binary()), 16).to_pylist() == [None, None]


def test_entries_of_chosen_rows_in_row_order() -> None:
    offsets = np.array([0, 2, 2, 5, 6])
    assert entries_of(offsets, np.array([0, 2, 3])).tolist() == [0, 1, 2, 3, 4, 5]
    assert entries_of(offsets, np.array([1, 3])).tolist() == [5]
    assert entries_of(offsets, np.array([], dtype=np.int64)).tolist() == []
