"""Files in, decoded batches out: ``.pb``, ``.json``, ``.jsonl`` (each optionally ``.gz``), folders.

Every reader streams: a 1M-span file is decoded a batch at a time, so memory stays flat. A
bad frame, line or span is reported with its location and the rest of the file still lands;
a truncated gzip keeps everything decoded before the cut.

Protobuf files hold a sequence of ``ExportTraceServiceRequest`` messages, each preceded by its
length as a protobuf varint (the OTLP file-exporter rule, "delimited"); a file that starts with a
zero byte is read with 4-byte big-endian lengths instead, and a file that is one bare request
(an HTTP body saved to disk) is read as that.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol, cast

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.jsonl import decode_jsonl_lines, decode_records
from ingest.otlp import add_request_json, add_request_protobuf
from ingest.records import Decoded, IngestError, SpanBuilder
from store.schema import DEFAULT_PROJECT

SUFFIXES = (".pb", ".bin", ".json", ".jsonl", ".ndjson")
DEFAULT_BATCH_SPANS = 50_000
_JSONL_BATCH_LINES = 2_000


def list_input_files(paths: list[Path]) -> list[Path]:
    """Expand folders (recursively) into the ingestible files inside, sorted; keep files as given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and file_format(p) is not None
            )
        else:
            found.append(path)
    return found


def file_format(path: Path) -> str | None:
    """``pb``, ``json`` or ``jsonl`` from the file name (a ``.gz`` suffix is looked through)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, kind in (
        (".pb", "pb"),
        (".bin", "pb"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
    ):
        if name.endswith(suffix):
            return kind
    return None


class _Truncated(Exception):
    pass


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _open(path: Path) -> IO[bytes]:
    # gzip.open owns the file it opens (a GzipFile given a fileobj leaves it open on close).
    if path.name.lower().endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _read(stream: _Readable, size: int) -> bytes:
    try:
        return stream.read(size)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise _Truncated(str(exc) or "compressed data ended early") from exc


def _read_varint(stream: _Prepend) -> int | None:
    shift = result = 0
    while True:
        byte = _read(stream, 1)
        if not byte:
            if shift:
                raise DecodeError("file ends inside a length prefix")
            return None
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise DecodeError("length prefix is not a valid varint")


def _iter_pb(path: Path, source: str, project: str, batch_spans: int) -> Iterator[Decoded]:
    builder = SpanBuilder(project)
    offset = 0
    frame = 0
    with _open(path) as stream:
        try:
            head = _read(stream, 1)
            if not head:
                return
            four_byte = head == b"\x00"
            stream_rest = _Prepend(head, stream)
            while True:
                if four_byte:
                    prefix = _read(stream_rest, 4)
                    if not prefix:
                        break
                    if len(prefix) < 4:
                        raise DecodeError("file ends inside a 4-byte length prefix")
                    length = int.from_bytes(prefix, "big")
                    header = 4
                else:
                    before = stream_rest.tell()
                    varint = _read_varint(stream_rest)
                    if varint is None:
                        break
                    length, header = varint, stream_rest.tell() - before
                body = _read(stream_rest, length)
                request = ExportTraceServiceRequest()
                try:
                    if len(body) < length:
                        raise DecodeError(
                            f"frame says {length} bytes but the file ends after {len(body)}"
                        )
                    request.ParseFromString(body)
                except DecodeError as exc:
                    if frame == 0 and not four_byte:
                        yield from _single_message(path, source, project)
                        return
                    raise IngestError(
                        source,
                        f"byte {offset} (message {frame})",
                        f"malformed OTLP protobuf: {exc}",
                    ) from exc
                add_request_protobuf(request, builder, f"{source} message {frame}")
                offset += header + length
                frame += 1
                if len(builder) >= batch_spans:
                    yield builder.decoded()
                    builder = SpanBuilder(project)
        except _Truncated as exc:
            builder.reject(
                IngestError(
                    source,
                    f"after message {frame} (byte {offset} uncompressed)",
                    f"truncated or corrupt gzip: {exc}",
                )
            )
        except IngestError as exc:
            builder.reject(exc)
        except DecodeError as exc:
            builder.reject(
                IngestError(
                    source, f"byte {offset} (message {frame})", f"malformed OTLP protobuf: {exc}"
                )
            )
    yield builder.decoded()


def _single_message(path: Path, source: str, project: str) -> Iterator[Decoded]:
    builder = SpanBuilder(project)
    try:
        with _open(path) as stream:
            data = _read(stream, -1)
        request = ExportTraceServiceRequest()
        request.ParseFromString(data)
        add_request_protobuf(request, builder, source)
    except _Truncated as exc:
        builder.reject(IngestError(source, "byte 0", f"truncated or corrupt gzip: {exc}"))
    except DecodeError as exc:
        builder.reject(
            IngestError(
                source,
                "byte 0",
                f"malformed OTLP protobuf (neither delimited messages nor one request): {exc}",
            )
        )
    yield builder.decoded()


class _Prepend:
    """A stream with some already-read bytes put back in front, that counts its position."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = head
        self._stream = stream
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        out = b""
        if self._head:
            if size < 0:
                out, self._head = self._head, b""
            else:
                out, self._head = self._head[:size], self._head[size:]
                size -= len(out)
        if size != 0:
            out += _read(self._stream, size)
        self._position += len(out)
        return out

    def tell(self) -> int:
        """Bytes read so far, the put-back ones included."""
        return self._position


def _iter_jsonl(path: Path, source: str, project: str) -> Iterator[Decoded]:
    lines: list[tuple[int, bytes]] = []
    number = 0
    with _open(path) as stream:
        try:
            for number, line in enumerate(_lines(stream), start=1):
                lines.append((number, line))
                if len(lines) >= _JSONL_BATCH_LINES:
                    yield decode_jsonl_lines(lines, source=source, project=project)
                    lines = []
        except _Truncated as exc:
            decoded = decode_jsonl_lines(lines, source=source, project=project)
            decoded.errors.append(
                IngestError(source, f"after line {number}", f"truncated or corrupt gzip: {exc}")
            )
            yield decoded
            return
    yield decode_jsonl_lines(lines, source=source, project=project)


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    while True:
        try:
            line = stream.readline()
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise _Truncated(str(exc) or "compressed data ended early") from exc
        if not line:
            return
        yield line


def _iter_json(path: Path, source: str, project: str) -> Iterator[Decoded]:
    try:
        with _open(path) as stream:
            data = _read(stream, -1)
    except _Truncated as exc:
        builder = SpanBuilder(project)
        builder.reject(IngestError(source, "byte 0", f"truncated or corrupt gzip: {exc}"))
        yield builder.decoded()
        return
    try:
        document: Any = json.loads(data)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one JSON document per line: the collector's file exporter
            yield from _iter_jsonl(path, source, project)
            return
        builder = SpanBuilder(project)
        builder.reject(
            IngestError(source, f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}")
        )
        yield builder.decoded()
        return
    except UnicodeDecodeError as exc:
        builder = SpanBuilder(project)
        builder.reject(IngestError(source, f"byte {exc.start}", f"not UTF-8 text: {exc.reason}"))
        yield builder.decoded()
        return
    if isinstance(document, list):
        yield decode_records(
            ((f"[{i}]", r) for i, r in enumerate(document)), source=source, project=project
        )
        return
    builder = SpanBuilder(project)
    add_request_json(document, builder, source)
    yield builder.decoded()


def iter_file(
    path: Path, *, project: str = DEFAULT_PROJECT, batch_spans: int = DEFAULT_BATCH_SPANS
) -> Iterator[Decoded]:
    """Decode one file a batch at a time; errors travel inside each batch's ``errors``."""
    source = str(path)
    kind = file_format(path)
    if kind is None:
        builder = SpanBuilder(project)
        builder.reject(
            IngestError(
                source,
                "file name",
                f"unknown file type; expected one of {', '.join(SUFFIXES)} (optionally .gz)",
            )
        )
        yield builder.decoded()
    elif kind == "pb":
        yield from _iter_pb(path, source, project, batch_spans)
    elif kind == "jsonl":
        yield from _iter_jsonl(path, source, project)
    else:
        yield from _iter_json(path, source, project)
