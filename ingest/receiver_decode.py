"""Request bodies -> rows: inflate within a limit, decode OTLP or feedback, report what was bad.

Everything here runs in the receiver's decoder worker processes, so functions are top-level
and results are plain picklable data (``IngestError`` itself does not survive pickling).
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import pyarrow as pa

from ingest.conventions import Normalizer, load_normalizer
from ingest.guard import Guard
from ingest.jsonl import feedback_row, feedback_table
from ingest.otlp import decode_otlp_json, decode_otlp_protobuf
from ingest.otlp_arrow import COLUMNAR_MIN_BYTES, decode_columnar, parse_request
from ingest.records import IngestError, SpanBuilder
from ingest.redaction import RedactionPolicy

MiB = 1024 * 1024
SUPPORTED_ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")
MAX_ERRORS_IN_MESSAGE = 5
MAX_MESSAGE_CHARS = 4096
_INFLATE_CHUNK = 1 * MiB

BodyKind = Literal["protobuf", "json", "feedback"]


class BodyTooLarge(Exception):
    """The body, or what it inflates to, is over its limit."""


class MalformedBody(Exception):
    """The body cannot be read at all (bad gzip, not JSON, not protobuf)."""


def inflate(data: bytes, encoding: str, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding``, never producing more than ``max_bytes`` (a gzip bomb stops there)."""
    if encoding in ("", "identity"):
        if len(data) > max_bytes:
            raise BodyTooLarge(f"body of {len(data)} bytes is over the {max_bytes}-byte limit")
        return data
    if encoding not in SUPPORTED_ENCODINGS:
        raise MalformedBody(f"unsupported Content-Encoding {encoding!r}")
    # 32+: accept a zlib or a gzip header (some senders label zlib data "gzip", or the reverse).
    wbits = 32 + zlib.MAX_WBITS
    out: list[bytes] = []
    total = 0
    pending = data
    try:
        while pending:
            inflater = zlib.decompressobj(wbits)
            while pending and not inflater.eof:
                # max_length bounds each step's output, so memory never passes the limit.
                chunk = inflater.decompress(pending, min(_INFLATE_CHUNK, max_bytes - total + 1))
                total += len(chunk)
                if total > max_bytes:
                    raise BodyTooLarge(
                        f"body inflates to more than the {max_bytes}-byte limit "
                        f"({len(data)} bytes {encoding}); stopped inflating there"
                    )
                out.append(chunk)
                pending = inflater.unconsumed_tail
            if not inflater.eof:
                raise MalformedBody(f"{encoding} body is truncated after {total} inflated bytes")
            pending = inflater.unused_data  # gzip allows several concatenated members
            if pending and not pending.strip(b"\0"):
                pending = b""  # trailing zero padding some writers leave
    except zlib.error as exc:
        raise MalformedBody(f"{encoding} body is not valid {encoding} data: {exc}") from None
    return b"".join(out)


@dataclass
class DecodeOutcome:
    """A decoded body: rows to commit, one ``(location, reason)`` per rejected record, or a failure."""

    spans: pa.Table | None = None
    feedback: pa.Table | None = None
    guardrails: pa.Table | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    # records read but not kept whole, their span kept (feedback in a span event that does
    # not validate): reported as an OTLP partial-success warning, not as rejected spans
    warnings: list[tuple[str, str]] = field(default_factory=list)
    failure: tuple[int, str] | None = None  # (HTTP status 400/413, message)
    num_records: int = 0

    def tables(self) -> list[tuple[str, pa.Table]]:
        """The (lake table, rows) pairs to commit."""
        pairs = [
            ("spans", self.spans),
            ("feedback", self.feedback),
            ("guardrails", self.guardrails),
        ]
        return [(name, table) for name, table in pairs if table is not None and table.num_rows]

    @property
    def num_rows(self) -> int:
        """Rows to commit."""
        return sum(table.num_rows for _, table in self.tables())

    @property
    def num_bytes(self) -> int:
        """Arrow bytes to commit."""
        return sum(table.nbytes for _, table in self.tables())

    def error_message(self) -> str:
        """The first few rejections (then warnings), joined, for partial_success.error_message."""
        problems = self.errors + self.warnings
        shown = [f"{where}: {why}" for where, why in problems[:MAX_ERRORS_IN_MESSAGE]]
        more = len(problems) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        return text[:MAX_MESSAGE_CHARS]

    def __getstate__(self) -> dict[str, Any]:
        """Tables cross the process boundary as Arrow IPC: far cheaper than pickling arrays."""
        state = dict(self.__dict__)
        for name in _TABLES:
            if state[name] is not None:
                state[name] = _to_ipc(state[name])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Read the tables back from IPC, zero-copy over the received bytes."""
        for name in _TABLES:
            if state[name] is not None:
                state[name] = pa.ipc.open_stream(state[name]).read_all()
        self.__dict__.update(state)


_TABLES = ("spans", "feedback", "guardrails")


def _to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


@cache
def _normalizer() -> Normalizer:
    return load_normalizer()


@cache
def _guard(policy: RedactionPolicy) -> Guard:
    return Guard(policy)


def watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Worker initializer: exit when the receiver dies (a kill -9 leaves no orphaned workers)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="flywheel-parent-watch", daemon=True).start()


def warm_up() -> int:
    """Import and build what decoding needs (run once in each worker); returns the pid."""
    _normalizer()
    _guard(RedactionPolicy())
    parse_request(b"")  # loads ptars and its descriptors
    return os.getpid()


def decode_body(
    body: bytes,
    encoding: str,
    kind: BodyKind,
    project: str,
    max_decoded_bytes: int,
    source: str,
    redaction: RedactionPolicy | None = None,
) -> DecodeOutcome:
    """Inflate and decode one request body; bad input becomes a failure or per-record errors.

    Spans pass the guard stage (guardrail results, redaction under ``redaction``) here, so
    text the policy masks never leaves the worker.
    """
    try:
        data = inflate(body, encoding, max_decoded_bytes)
    except BodyTooLarge as exc:
        return DecodeOutcome(failure=(413, str(exc)))
    except MalformedBody as exc:
        return DecodeOutcome(failure=(400, f"{source}: {exc}"))
    if kind == "feedback":
        return _decode_feedback(data, project, source)
    builder = SpanBuilder(project, _normalizer())
    try:
        if kind == "protobuf":
            columnar = (
                decode_columnar(data, source=source, project=project, normalizer=_normalizer())
                if len(data) >= COLUMNAR_MIN_BYTES
                else None
            )
            decoded = (
                columnar
                if columnar is not None
                else decode_otlp_protobuf(data, source=source, project=project, builder=builder)
            )
        else:
            decoded = decode_otlp_json(data, source=source, project=project, builder=builder)
    except IngestError as exc:
        return DecodeOutcome(failure=(400, str(exc)))
    errors = [(e.location, e.reason) for e in decoded.errors]
    if decoded.spans.num_rows == 0 and any(where == "document" for where, _ in errors):
        # The envelope itself is wrong (not an OTLP trace request): the whole body is bad data.
        return DecodeOutcome(failure=(400, f"{source}: {errors[0][0]}: {errors[0][1]}"))
    guarded = _guard(redaction or RedactionPolicy()).apply(decoded.spans)
    return DecodeOutcome(
        spans=guarded.spans,
        feedback=guarded.feedback,
        guardrails=guarded.guardrails,
        errors=errors,
        warnings=guarded.errors,
        num_records=decoded.spans.num_rows + len(errors),
    )


def _decode_feedback(data: bytes, project: str, source: str) -> DecodeOutcome:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return DecodeOutcome(failure=(400, f"{source}: invalid JSON: {exc}"))
    if isinstance(document, dict) and "feedback" in document:
        document = document["feedback"]
    records = document if isinstance(document, list) else [document]
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            errors.append((f"[{index}]", f"expected an object, got {type(record).__name__}"))
            continue
        try:
            row = feedback_row(record, project)
        except ValueError as exc:
            errors.append((f"[{index}]", str(exc)))
            continue
        row["project"] = project  # the token decides the project, never the payload
        rows.append(row)
    return DecodeOutcome(
        feedback=feedback_table(rows) if rows else None, errors=errors, num_records=len(records)
    )
