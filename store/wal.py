"""Write-ahead log: Arrow tables framed, checksummed and fsynced before an append returns.

A log file is a sequence of frames ``[magic u32][length u32][crc32 u32][payload]`` (little
endian). The payload is one Arrow IPC stream holding one table, its buffers LZ4-compressed
(an IPC stream option; readers decompress transparently, and logs written uncompressed replay
as before); the lake table it belongs to is stored in the IPC schema metadata under
``flywheel.table``. The CRC covers the length field and the payload, so a damaged length is
caught as well as damaged data.

Each writer process owns one log at a time, named ``wal-<pid>-<random>.wal``, and holds an
exclusive ``flock`` on it for as long as the file is open. Recovery takes the same lock without
blocking, so a live writer's log is never replayed, truncated or deleted by another process,
while the log of a killed process (whose lock died with it) is.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa

log = logging.getLogger(__name__)

MAGIC = 0x4C57_4C46  # b"FLWL" read as a little-endian u32
HEADER = struct.Struct("<III")
TABLE_NAME_KEY = b"flywheel.table"
WAL_SUFFIX = ".wal"
_MAX_PAYLOAD = 2**32 - 1
# Span batches are mostly text and repeated resource maps: LZ4 makes a record about a quarter
# of its size for less CPU than writing and fsyncing the difference costs.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions(
    compression="lz4" if pa.Codec.is_available("lz4_frame") else None
)


@dataclass(frozen=True)
class WalRecord:
    """One replayed frame: the lake table it belongs to, the rows, and its byte offset."""

    table_name: str
    table: pa.Table
    offset: int


def encode_frame(table_name: str, table: pa.Table) -> bytes:
    """Serialize one table as a framed, checksummed WAL record."""
    header, payload = _encode(table_name, table)
    data: bytes = payload.to_pybytes()
    return header + data


def _encode(table_name: str, table: pa.Table) -> tuple[bytes, pa.Buffer]:
    """One record's frame header and its payload (the Arrow IPC stream), not joined."""
    metadata = dict(table.schema.metadata or {})
    metadata[TABLE_NAME_KEY] = table_name.encode()
    table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as stream:
        stream.write_table(table)
    payload = sink.getvalue()  # Arrow's buffer, written to the file as it is: no copy to bytes
    if payload.size > _MAX_PAYLOAD:
        raise ValueError(f"WAL record of {payload.size} bytes exceeds the 4 GiB frame limit")
    length = struct.pack("<I", payload.size)
    crc = zlib.crc32(payload, zlib.crc32(length))
    return HEADER.pack(MAGIC, payload.size, crc), payload


def _decode_payload(payload: bytes) -> tuple[str, pa.Table]:
    table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    metadata = dict(table.schema.metadata or {})
    table_name = metadata.pop(TABLE_NAME_KEY, b"").decode()
    return table_name, table.replace_schema_metadata(metadata or None)


class WalFile:
    """An open, locked log file that this process appends to."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self._handle = handle
        self._size = handle.seek(0, os.SEEK_END)
        self.num_records = 0

    @classmethod
    def create(cls, wal_dir: Path) -> WalFile:
        """Create and lock a new log file in ``wal_dir``."""
        wal_dir.mkdir(parents=True, exist_ok=True)
        stem = f"wal-{os.getpid()}-{secrets.token_hex(6)}"
        # Lock under a name recovery ignores, then rename: recovery can never see (and delete)
        # a log that its owner has not locked yet.
        tmp = wal_dir / f".{stem}.tmp"
        handle = open(tmp, "xb")  # noqa: SIM115 - owned by the WalFile until close()
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        path = wal_dir / f"{stem}{WAL_SUFFIX}"
        os.rename(tmp, path)
        fsync_dir(wal_dir)
        return cls(path, handle)

    @property
    def size_bytes(self) -> int:
        """Bytes written to this log so far."""
        return self._size

    def append(self, table_name: str, table: pa.Table) -> int:
        """Append one table and fsync; returns the bytes written."""
        return self.append_many([(table_name, table)])

    def append_many(self, records: Iterable[tuple[str, pa.Table]]) -> int:
        """Append several tables with a single fsync (group commit); returns the bytes written."""
        frames = [_encode(name, table) for name, table in records]
        if not frames:
            return 0
        size: int = sum(len(header) + payload.size for header, payload in frames)
        try:
            for header, payload in frames:  # written from Arrow's buffer: no copy into bytes
                self._handle.write(header)
                self._handle.write(payload)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except BaseException:
            # Never leave half a frame behind a good one: later appends would be unreadable.
            self._handle.truncate(self._size)
            self._handle.seek(self._size)
            raise
        self._size += size
        self.num_records += len(frames)
        return size

    def close(self, *, delete: bool = False) -> None:
        """Close the log (releasing its lock), optionally deleting it first."""
        if self._handle.closed:
            return
        if delete:
            self.path.unlink(missing_ok=True)
            fsync_dir(self.path.parent)
        self._handle.close()


def list_wal_files(wal_dir: Path) -> list[Path]:
    """Every log file in ``wal_dir``, oldest name first."""
    if not wal_dir.is_dir():
        return []
    return sorted(p for p in wal_dir.iterdir() if p.name.endswith(WAL_SUFFIX))


def replay(path: Path, *, truncate: bool = True) -> Iterator[WalRecord]:
    """Yield every complete, CRC-valid record; report and (optionally) cut a torn or corrupt tail."""
    with open(path, "r+b" if truncate else "rb") as handle:
        data = handle.read()
        offset = 0
        while offset < len(data):
            problem = None
            if len(data) - offset < HEADER.size:
                problem = "torn frame header"
            else:
                magic, length, crc = HEADER.unpack_from(data, offset)
                end = offset + HEADER.size + length
                if magic != MAGIC:
                    problem = "bad frame magic"
                elif end > len(data):
                    problem = "torn frame payload"
                else:
                    payload = data[offset + HEADER.size : end]
                    if zlib.crc32(payload, zlib.crc32(struct.pack("<I", length))) != crc:
                        problem = "CRC mismatch"
                    else:
                        try:
                            table_name, table = _decode_payload(payload)
                        except pa.ArrowNotImplementedError:
                            # An intact record this pyarrow cannot read (a codec it was built
                            # without): keep the log rather than cut it here.
                            raise
                        except (pa.ArrowException, UnicodeDecodeError) as exc:
                            problem = f"undecodable payload ({exc})"
            if problem is not None:
                log.warning(
                    "WAL %s: %s at byte offset %d; dropping %d trailing bytes",
                    path,
                    problem,
                    offset,
                    len(data) - offset,
                )
                if truncate:
                    handle.truncate(offset)
                    handle.flush()
                    os.fsync(handle.fileno())
                return
            yield WalRecord(table_name, table, offset)
            offset = end


def try_lock(path: Path) -> BinaryIO | None:
    """Open and exclusively lock a log without blocking; None if a live process holds it."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def fsync_dir(path: Path) -> None:
    """fsync a directory so renames and unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
