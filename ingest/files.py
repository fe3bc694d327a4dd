"""Files in, decoded batches out: ``.pb``, ``.json``, ``.jsonl`` (each optionally ``.gz``), folders.

Every reader streams: a 1M-span file is decoded a batch at a time, so memory stays flat. A
bad frame, line or span is reported with its location and the rest of the file still lands;
a truncated gzip keeps everything decoded before the cut.

Protobuf files hold a sequence of ``ExportTraceServiceRequest`` messages, each preceded by its
length as a protobuf varint (the OTLP file-exporter rule, "delimited"); a file that starts with a
zero byte is read with 4-byte big-endian lengths instead, and a file that is one bare request
(an HTTP body saved to disk) is read as that. A frame that does not parse is reported and
skipped (its length says where the next starts); two in a row stop the file, as the lengths can
no longer be trusted.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol, cast

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.arrow_values import Irregular
from ingest.jsonl import decode_jsonl_lines, decode_records
from ingest.otlp import add_request_json, add_request_protobuf
from ingest.otlp_arrow import ArrowRequests, parse_request
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


class _ArrowPiece:
    """Consecutive requests that ptars parsed, with what the reference path needs to redo them
    (their bytes, the source their span errors name, where each starts in the file)."""

    def __init__(self) -> None:
        self.requests = ArrowRequests()
        self.frames: list[tuple[bytes, str, str]] = []

    def __len__(self) -> int:
        return len(self.requests)


class _PbBatch:
    """One batch of a protobuf file's requests, in file order: each request decoded a column
    at a time (``ingest.otlp_arrow``) when ptars parses it, else through protobuf objects."""

    def __init__(self, source: str, project: str, columnar: bool) -> None:
        self.source = source
        self.project = project
        self.columnar = columnar
        self.pieces: list[_ArrowPiece | SpanBuilder] = []

    def __len__(self) -> int:
        return sum(len(piece) for piece in self.pieces)

    def add(self, body: bytes, label: str, where: str) -> None:
        """Decode one request; raises DecodeError when protobuf does not parse it."""
        if self.columnar:
            try:
                parsed = parse_request(body)
            except ValueError:
                parsed = None  # protobuf decides, and words the error
            if parsed is not None:
                last = self.pieces[-1] if self.pieces else None
                if not isinstance(last, _ArrowPiece):
                    last = _ArrowPiece()
                    self.pieces.append(last)
                last.requests.add(parsed, label)
                last.frames.append((body, label, where))
                return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        add_request_protobuf(request, self._builder(), label)

    def reject(self, error: IngestError) -> None:
        """Record an error found outside any request's spans, in its place among the others."""
        self._builder().reject(error)

    def _builder(self) -> SpanBuilder:
        last = self.pieces[-1] if self.pieces else None
        if not isinstance(last, SpanBuilder):
            last = SpanBuilder(self.project)
            self.pieces.append(last)
        return last

    def decoded(self) -> Decoded:
        """The batch's rows and errors."""
        tables: list[pa.Table] = []
        errors: list[IngestError] = []
        for piece in self.pieces:
            if isinstance(piece, _ArrowPiece):
                try:
                    done = piece.requests.decoded(self.project)
                except Irregular:
                    done = self._redo(piece)
            else:
                done = piece.decoded()
            tables.append(done.spans)
            errors.extend(done.errors)
        if not tables:
            tables.append(SpanBuilder(self.project).table())
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return Decoded(spans=table, errors=errors)

    def _redo(self, piece: _ArrowPiece) -> Decoded:
        """Decode a piece's requests through protobuf objects (one it does not parse, though
        ptars did, is rejected as malformed)."""
        builder = SpanBuilder(self.project)
        for body, label, where in piece.frames:
            request = ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except DecodeError as exc:
                builder.reject(IngestError(self.source, where, f"malformed OTLP protobuf: {exc}"))
                continue
            add_request_protobuf(request, builder, label)
        return builder.decoded()


def _iter_pb(
    path: Path, source: str, project: str, batch_spans: int, columnar: bool = True
) -> Iterator[Decoded]:
    batch = _PbBatch(source, project, columnar)
    offset = 0
    frame = 0
    bad_before = False
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
                where = f"byte {offset} (message {frame})"
                try:
                    if len(body) < length:
                        raise DecodeError(
                            f"frame says {length} bytes but the file ends after {len(body)}"
                        )
                    batch.add(body, f"{source} message {frame}", where)
                    bad_before = False
                except DecodeError as exc:
                    if frame == 0 and not four_byte:
                        yield from _single_message(path, source, project)
                        return
                    error = IngestError(source, where, f"malformed OTLP protobuf: {exc}")
                    if bad_before or len(body) < length:
                        # The file ends, or two frames in a row do not parse: the length
                        # prefixes are not to be trusted any more.
                        raise error from exc
                    batch.reject(error)  # the next frame starts where its length says
                    bad_before = True
                offset += header + length
                frame += 1
                if len(batch) >= batch_spans:
                    yield batch.decoded()
                    batch = _PbBatch(source, project, columnar)
        except _Truncated as exc:
            batch.reject(
                IngestError(
                    source,
                    f"after message {frame} (byte {offset} uncompressed)",
                    f"truncated or corrupt gzip: {exc}",
                )
            )
        except IngestError as exc:
            batch.reject(exc)
        except DecodeError as exc:
            batch.reject(
                IngestError(
                    source, f"byte {offset} (message {frame})", f"malformed OTLP protobuf: {exc}"
                )
            )
    yield batch.decoded()


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
    path: Path,
    *,
    project: str = DEFAULT_PROJECT,
    batch_spans: int = DEFAULT_BATCH_SPANS,
    columnar: bool = True,
) -> Iterator[Decoded]:
    """Decode one file a batch at a time; errors travel inside each batch's ``errors``.

    ``columnar=False`` decodes protobuf files through protobuf objects only: the reference
    path that the columnar decoder is checked against. The rows are the same.
    """
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
        yield from _iter_pb(path, source, project, batch_spans, columnar)
    elif kind == "jsonl":
        yield from _iter_jsonl(path, source, project)
    else:
        yield from _iter_json(path, source, project)
