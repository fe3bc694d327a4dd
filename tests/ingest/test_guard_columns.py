"""Column helpers of the guard stage: screening map values a map at a time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.detectors import SENSITIVE_SCREEN
from ingest.guard import SECRET_SCREEN
from ingest.guard_columns import matches_anywhere, screen, screen_maps, screen_rows
from store.schema import ATTRIBUTE_MAP


@pytest.mark.parametrize(
    ("pattern", "anywhere"),
    [
        (SECRET_SCREEN, True),
        (SENSITIVE_SCREEN, True),
        (r"sk-[a-z]{3}", True),
        (r"[^a]b", True),  # a negated class is no anchor
        (r"x\^y\$z", True),  # escaped, they are literals
        (r"[$^]", True),  # in a class too
        (r"x\\b", True),  # an escaped backslash, then a letter
        (r"\bsk-", False),
        (r"x\B", False),
        (r"^sk-", False),
        (r"key$", False),
        (r"\Akey", False),
        (r"key\z", False),
        (r"[a]^", False),
        (r"x\\\bb", False),  # an escaped backslash, then a word boundary
    ],
)
def test_matches_anywhere_finds_anchors_and_word_boundaries(pattern: str, anywhere: bool) -> None:
    assert matches_anywhere(pattern) is anywhere


_VALUES = st.one_of(
    st.none(),
    st.sampled_from(["", "sk-", "abcdefghijklmnopqrstuvwxyz", "sk-abcdefghijklmnopqrstu", "é"]),
    st.text(alphabet="sk-aAKIbé ", max_size=30),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.lists(_VALUES, max_size=5)), max_size=8),
    st.integers(0, 3),
)
def test_screen_maps_flags_the_entries_a_screen_of_each_value_flags(
    rows: list[list[str | None] | None], cut: int
) -> None:
    """Values that match only when joined ("sk-" then 20 letters) are not flagged; a sliced
    array reads the same as a whole one."""
    maps = pa.array(
        [None if r is None else [(f"k{i}", v) for i, v in enumerate(r)] for r in rows],
        ATTRIBUTE_MAP,
    )
    for pattern in (SECRET_SCREEN, r"sk-[a-z]{20}", r"\bsk-"):
        expected = screen(maps.items, pattern)
        assert screen_maps(maps, pattern).tolist() == expected.tolist()
    sliced = maps.items.slice(cut) if cut <= len(maps.items) else maps.items
    offsets = np.arange(len(sliced) + 1, dtype=np.int32)
    one_each = pa.MapArray.from_arrays(
        offsets, maps.keys.slice(len(maps.items) - len(sliced)), sliced, type=ATTRIBUTE_MAP
    )
    assert screen_maps(one_each, SECRET_SCREEN).tolist() == screen(sliced, SECRET_SCREEN).tolist()


def test_screen_rows_scans_only_the_chosen_rows() -> None:
    texts = pa.chunked_array([["sk-x", None], ["no", "sk-y"], []])
    rows = np.array([True, True, False, True])
    assert screen_rows(texts, rows, "sk-").tolist() == [True, False, False, True]
    assert screen_rows(texts, np.zeros(4, dtype=bool), "sk-").tolist() == [False] * 4
