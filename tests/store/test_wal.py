from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pyarrow as pa
import pytest

from store.wal import HEADER, WalFile, encode_frame, list_wal_files, replay, try_lock
from tests.store.conftest import feedback_row, feedback_table, make_spans


def _records(path: Path) -> list[tuple[str, pa.Table, int]]:
    return [(r.table_name, r.table, r.offset) for r in replay(path)]


def test_round_trip_keeps_tables_names_and_order(tmp_path: Path) -> None:
    spans_a, spans_b = make_spans(3), make_spans(5)
    feedback = feedback_table([feedback_row()])
    wal = WalFile.create(tmp_path)
    assert wal.append("spans", spans_a) > HEADER.size
    wal.append_many([("feedback", feedback), ("spans", spans_b)])
    wal.close()

    records = _records(wal.path)
    assert [(name, t.num_rows) for name, t, _ in records] == [
        ("spans", 3),
        ("feedback", 1),
        ("spans", 5),
    ]
    assert records[0][1].equals(spans_a)
    assert records[1][1].equals(feedback)
    assert records[2][1].equals(spans_b)
    assert records[0][2] == 0 and records[1][2] == len(encode_frame("spans", spans_a))
    assert wal.path.stat().st_size == wal.size_bytes


def test_replay_keeps_the_callers_schema_metadata(tmp_path: Path) -> None:
    table = make_spans(1).replace_schema_metadata({"origin": "unit"})
    wal = WalFile.create(tmp_path)
    wal.append("spans", table)
    wal.close()
    (record,) = replay(wal.path)
    assert record.table.schema.metadata == {b"origin": b"unit"}


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size + 7])
def test_torn_tail_is_reported_and_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    wal = WalFile.create(tmp_path)
    wal.append("spans", make_spans(2))
    good_size = wal.size_bytes
    wal.close()
    # A kill -9 in the middle of the second frame's write.
    frame = encode_frame("spans", make_spans(4))
    with open(wal.path, "ab") as handle:
        handle.write(frame[:cut])

    with caplog.at_level(logging.WARNING, logger="store.wal"):
        records = _records(wal.path)

    assert [t.num_rows for _, t, _ in records] == [2]
    assert wal.path.stat().st_size == good_size
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(wal.path) in message and f"offset {good_size}" in message and "torn" in message
    # A second replay sees a clean file.
    caplog.clear()
    assert len(_records(wal.path)) == 1 and not caplog.records


def test_flipped_payload_byte_fails_the_crc(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = WalFile.create(tmp_path)
    wal.append("spans", make_spans(1))
    second = wal.size_bytes
    wal.append("spans", make_spans(2))
    wal.append("spans", make_spans(3))
    wal.close()
    with open(wal.path, "r+b") as handle:
        handle.seek(second + HEADER.size + 40)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))

    with caplog.at_level(logging.WARNING, logger="store.wal"):
        records = _records(wal.path)

    # Nothing after a corrupt frame can be trusted to be framed right: the tail goes.
    assert [t.num_rows for _, t, _ in records] == [1]
    assert "CRC mismatch" in caplog.text and f"offset {second}" in caplog.text
    assert wal.path.stat().st_size == second


def test_corrupt_length_is_caught(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wal = WalFile.create(tmp_path)
    wal.append("spans", make_spans(1))
    wal.append("spans", make_spans(1))
    wal.close()
    data = bytearray(wal.path.read_bytes())
    first_len = struct.unpack_from("<I", data, 4)[0]
    struct.pack_into("<I", data, 4, first_len - 8)  # shorter, still inside the file
    wal.path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="store.wal"):
        assert _records(wal.path) == []
    assert "CRC mismatch at byte offset 0" in caplog.text


def test_replay_without_truncate_leaves_the_file(tmp_path: Path) -> None:
    wal = WalFile.create(tmp_path)
    wal.append("spans", make_spans(1))
    wal.close()
    with open(wal.path, "ab") as handle:
        handle.write(b"\x00\x01")
    size = wal.path.stat().st_size
    assert len(list(replay(wal.path, truncate=False))) == 1
    assert wal.path.stat().st_size == size


def test_a_live_log_is_locked_and_a_closed_one_is_not(tmp_path: Path) -> None:
    wal = WalFile.create(tmp_path)
    assert list_wal_files(tmp_path) == [wal.path]
    assert wal.path.name.startswith(f"wal-{os.getpid()}-")
    assert try_lock(wal.path) is None
    wal.close()
    handle = try_lock(wal.path)
    assert handle is not None
    handle.close()
    wal2 = WalFile.create(tmp_path)
    wal2.close(delete=True)
    assert list_wal_files(tmp_path) == [wal.path]
