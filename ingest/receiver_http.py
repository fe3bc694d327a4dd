"""OTLP/HTTP, feedback, health and metrics as a FastAPI app; handlers stay thin over the Ingestor."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import Response
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from starlette.requests import ClientDisconnect

from ingest.metrics import CONTENT_TYPE_LATEST
from ingest.receiver_core import Ingestor, Overloaded, Unavailable
from ingest.receiver_decode import SUPPORTED_ENCODINGS, BodyKind, DecodeOutcome

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
FEEDBACK_PATH = "/v1/feedback"
MAX_FEEDBACK_ERRORS = 100
#: gRPC status codes for the ``google.rpc.Status`` bodies of HTTP failures.
GRPC_CODE_BY_HTTP = {400: 3, 401: 16, 413: 8, 415: 3, 429: 14, 500: 13, 503: 14}

Encoding = Literal["protobuf", "json"]


class _Reply(Exception):
    """An answer other than success, raised from anywhere in a handler."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def media_encoding(content_type: str | None) -> Encoding | None:
    """``protobuf`` or ``json`` from a Content-Type (parameters such as charset ignored)."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf"):
        return "protobuf"
    if base == JSON:
        return "json"
    return None


def status_response(encoding: Encoding, reply: _Reply) -> Response:
    """A failure as ``google.rpc.Status``: protobuf for protobuf requests, else JSON."""
    code = GRPC_CODE_BY_HTTP.get(reply.status, 2)
    if encoding == "protobuf":
        body = Status(code=code, message=reply.message).SerializeToString()
        return Response(body, reply.status, reply.headers, media_type=PROTOBUF)
    text = json.dumps({"code": code, "message": reply.message})
    return Response(text, reply.status, reply.headers, media_type=JSON)


def traces_response(encoding: Encoding, outcome: DecodeOutcome) -> Response:
    """200 with an ``ExportTraceServiceResponse``; ``partial_success`` set when spans were rejected."""
    if encoding == "protobuf":
        message = ExportTraceServiceResponse()
        if outcome.errors or outcome.warnings:
            message.partial_success.rejected_spans = len(outcome.errors)
            message.partial_success.error_message = outcome.error_message()
        return Response(message.SerializeToString(), 200, media_type=PROTOBUF)
    document: dict[str, Any] = {}
    if outcome.errors or outcome.warnings:
        document["partialSuccess"] = {
            "rejectedSpans": str(len(outcome.errors)),  # int64 is a string in proto3 JSON
            "errorMessage": outcome.error_message(),
        }
    return Response(json.dumps(document), 200, media_type=JSON)


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_TRACES_BODY = {
    "requestBody": {
        "required": True,
        "description": "An OTLP ExportTraceServiceRequest, optionally gzip-compressed.",
        "content": {
            PROTOBUF: _BINARY,
            JSON: {
                "schema": {"type": "object", "properties": {"resourceSpans": {"type": "array"}}}
            },
        },
    }
}
_FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "description": 'One feedback record, a list of them, or {"feedback": [...]}.',
        "content": {JSON: {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}}},
    }
}
_FAILURES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed payload (google.rpc.Status says where and why); do not retry"},
    401: {"description": "Auth is on and the bearer token is missing or unknown"},
    413: {"description": "Body, or its decompressed size, over the limit"},
    415: {"description": "Unsupported Content-Type or Content-Encoding"},
    429: {
        "description": "The write-ahead log's backlog is over its bound; retry after Retry-After"
    },
    503: {"description": "Shutting down or the log could not be written; retry"},
}


def create_app(ingestor: Ingestor) -> FastAPI:
    """The receiver's ASGI app over one Ingestor."""
    app = FastAPI(
        title="Flywheel OTLP receiver",
        description="OTLP/HTTP trace ingest and explicit user feedback for the Flywheel lake.",
        version="1",
    )
    metrics = ingestor.metrics
    limits = ingestor.limits

    def observe(path: str, status: int, started: float) -> None:
        metrics.requests.labels("http", path, str(status)).inc()
        metrics.request_seconds.labels("http", path).observe(time.perf_counter() - started)

    def admit(request: Request, kind: Encoding | None) -> tuple[str, Encoding, str, int]:
        """Auth, content type and encoding, declared size; returns project, kind, encoding, size."""
        project = ingestor.project_for(request.headers.get("authorization"))
        if project is None:
            raise _Reply(
                401,
                "missing or invalid bearer token: send Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="flywheel"'},
            )
        if kind is None:
            raise _Reply(
                415,
                f"unsupported Content-Type {request.headers.get('content-type')!r}: "
                f"send {PROTOBUF} or {JSON}",
            )
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in SUPPORTED_ENCODINGS:
            raise _Reply(415, f"unsupported Content-Encoding {encoding!r}: send gzip or none")
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else 0
        if size > limits.max_body_bytes:
            raise _too_large(size, limits.max_body_bytes)
        return project, kind, encoding, size

    async def receive(
        request: Request, kind: Encoding | None, body_kind: BodyKind | None = None
    ) -> tuple[str, DecodeOutcome]:
        """Admit, read and decode a request body; returns its project and what it held."""
        project, media, encoding, declared = admit(request, kind)
        with ingestor.admitted(declared):  # backpressure, and this body's memory counted
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise _too_large(size, limits.max_body_bytes)
                chunks.append(chunk)
            target: BodyKind = body_kind or media
            source = FEEDBACK_PATH if target == "feedback" else TRACES_PATH
            future = ingestor.decode(b"".join(chunks), encoding, target, project, source)
            outcome = await asyncio.wrap_future(future)
        if outcome.failure is not None:
            raise _Reply(*outcome.failure)
        return project, outcome

    async def commit(outcome: DecodeOutcome) -> None:
        await asyncio.wrap_future(ingestor.commit(outcome.tables()))

    @app.post(
        TRACES_PATH,
        summary="Export spans (OTLP/HTTP)",
        openapi_extra=_TRACES_BODY,
        responses={
            200: {"description": "Durably logged (partial_success lists rejected spans)"},
            **_FAILURES,
        },
    )
    async def export_traces(request: Request) -> Response:
        """Accept an OTLP trace export; 200 only after its spans are fsynced in the WAL."""
        started = time.perf_counter()
        kind = media_encoding(request.headers.get("content-type"))
        try:
            project, outcome = await receive(request, kind)
            await commit(outcome)
            metrics.spans_accepted.labels(project, "http").inc(outcome.num_rows)
            if outcome.errors:
                metrics.spans_rejected.labels(project, "http").inc(len(outcome.errors))
            response = traces_response(kind or "json", outcome)
        except Exception as exc:  # every failure is answered, never a bare 500
            response = status_response(kind or "json", _as_reply(exc, ingestor.retry_after_s))
        observe(TRACES_PATH, response.status_code, started)
        return response

    @app.post(
        FEEDBACK_PATH,
        summary="Record explicit user feedback",
        openapi_extra=_FEEDBACK_BODY,
        responses={200: {"description": "{accepted, rejected, errors}"}, **_FAILURES},
    )
    async def post_feedback(request: Request) -> Response:
        """Accept feedback records; 200 after they are fsynced, 400 if every record is bad."""
        started = time.perf_counter()
        kind = media_encoding(request.headers.get("content-type"))
        try:
            if kind == "protobuf":
                kind = None  # feedback is JSON only
            project, outcome = await receive(request, kind, "feedback")
            await commit(outcome)
            accepted = outcome.num_rows
            metrics.feedback_accepted.labels(project).inc(accepted)
            metrics.feedback_rejected.labels(project).inc(len(outcome.errors))
            document: dict[str, Any] = {
                "accepted": accepted,
                "rejected": len(outcome.errors),
                "errors": [
                    {"record": where, "message": why}
                    for where, why in outcome.errors[:MAX_FEEDBACK_ERRORS]
                ],
            }
            status = 400 if outcome.errors and not accepted else 200
            if status == 400:
                document["message"] = (
                    "every feedback record was rejected: " + outcome.error_message()
                )
            response = Response(json.dumps(document), status, media_type=JSON)
        except Exception as exc:  # every failure is answered, never a bare 500
            response = status_response("json", _as_reply(exc, ingestor.retry_after_s))
        observe(FEEDBACK_PATH, response.status_code, started)
        return response

    @app.get("/healthz", summary="Liveness and the write-ahead log's backlog")
    async def healthz() -> Response:
        """200 while the commit and flush threads run, with the WAL backlog; 503 otherwise."""
        started = time.perf_counter()
        backlog = ingestor.backlog()
        healthy = ingestor.healthy()
        document = {
            "status": "ok" if healthy else "unavailable",
            "auth": ingestor.tokens.enabled,
            "backlog_rows": backlog.num_rows,
            "backlog_bytes": backlog.num_bytes,
            "backlog_oldest_age_s": round(backlog.oldest_age_s, 3),
            "pending_rows": ingestor.pending_rows,
            "overloaded": ingestor.overload_reason(),
        }
        response = Response(json.dumps(document), 200 if healthy else 503, media_type=JSON)
        observe("/healthz", response.status_code, started)
        return response

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)")
    async def prometheus_metrics() -> Response:
        """The receiver's counters, gauges and histograms."""
        started = time.perf_counter()
        response = Response(metrics.render(), 200, media_type=CONTENT_TYPE_LATEST)
        observe("/metrics", 200, started)
        return response

    return app


def _too_large(size: int, limit: int) -> _Reply:
    return _Reply(413, f"body of {size}+ bytes is over the {limit}-byte limit")


def _as_reply(exc: Exception, retry_after_s: int) -> _Reply:
    if isinstance(exc, _Reply):
        return exc
    if isinstance(exc, Overloaded):
        return _Reply(429, str(exc), {"Retry-After": str(retry_after_s)})
    if isinstance(exc, Unavailable):
        return _Reply(503, str(exc), {"Retry-After": "1"})
    if isinstance(exc, ClientDisconnect):
        return _Reply(400, "the client disconnected before sending the whole body")
    log.error("unexpected error handling a request", exc_info=exc)
    return _Reply(500, f"internal error: {exc.__class__.__name__}")
