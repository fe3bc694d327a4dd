"""``flywheel serve``: the OTLP receiver (OTLP/HTTP on 4318, OTLP/gRPC on 4317), durable and bounded.

Endpoints (OTLP/HTTP server, default ``127.0.0.1:4318``; OpenAPI at ``/openapi.json``, ``/docs``)

``POST /v1/traces``
    An OTLP ``ExportTraceServiceRequest`` as ``application/x-protobuf`` or ``application/json``
    (a ``charset`` parameter is fine), optionally ``Content-Encoding: gzip`` (or ``deflate``).
    The answer is in the request's encoding. ``200`` is sent only after the spans are fsynced in
    the write-ahead log: an empty ``ExportTraceServiceResponse`` (JSON ``{}``), or, when some
    spans were invalid, ``partial_success`` with ``rejected_spans`` and the first few reasons
    (JSON ``{"partialSuccess": {"rejectedSpans": "1", "errorMessage": "..."}}``); the valid spans
    are stored. Failures carry a ``google.rpc.Status`` (protobuf for protobuf requests, JSON
    ``{"code": 3, "message": "..."}`` otherwise):

    ====  =====================================================================================
    400   malformed body: not protobuf, not JSON, not an OTLP trace request, bad gzip; the message
          says where and why. Do not retry.
    401   tokens are configured and ``Authorization: Bearer <token>`` is missing or unknown
          (with ``WWW-Authenticate: Bearer``).
    413   body over ``FLYWHEEL_MAX_BODY_BYTES`` (64 MiB), or it inflates past
          ``FLYWHEEL_MAX_DECODED_BYTES`` (64 MiB): inflation stops at the limit, so a gzip bomb
          costs at most that much memory.
    415   Content-Type other than protobuf/JSON, or a Content-Encoding other than gzip/deflate.
    429   the log's backlog (rows acknowledged but not yet in Parquet, plus requests in flight)
          is over ``FLYWHEEL_MAX_BACKLOG_ROWS``/``_BYTES``; ``Retry-After`` says when to retry.
    503   shutting down, or the log could not be written; retry.
    ====  =====================================================================================

``POST /v1/feedback``
    Explicit user feedback as JSON: one record, a list of records, or ``{"feedback": [...]}``.
    A record is ``{"trace_id": 32 hex, "span_id": 16 hex (optional), "time": RFC 3339 or unix ns,
    "kind": "thumbs"|"rating"|"comment"|"edit"|"copy"|"share"|"report", "value": number
    (thumbs +1/-1, the rating for ratings, 1 for copy/share/report), "text": comment or edited
    answer, "user_id", "feedback_id" (optional; a content hash otherwise, so re-sending is
    harmless), "attributes": {...} (optional)}``. Feedback attaches to its trace whenever it
    comes. The project is the token's (or the default), whatever the record says. Answer:
    ``{"accepted": n, "rejected": m, "errors": [{"record": "[i]", "message": "..."}]}`` with
    200 (after fsync), or 400 when every record was rejected; 401/413/415/429 as above.

``GET /healthz``
    200 with ``{"status": "ok", "backlog_rows", "backlog_bytes", "backlog_oldest_age_s",
    "pending_rows", "overloaded", "auth"}``; 503 if the commit or flush thread has stopped.

``GET /metrics``
    Prometheus text: ``flywheel_spans_accepted_total``/``_rejected_total`` by project and
    transport, ``flywheel_requests_total`` by transport, path and status,
    ``flywheel_request_seconds``, ``flywheel_wal_backlog_rows``/``_bytes``,
    ``flywheel_wal_fsync_seconds``, ``flywheel_wal_group_commit_requests``,
    ``flywheel_lake_flush_seconds``, ``flywheel_feedback_accepted_total``, …

OTLP/gRPC ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` (default port 4317)
    Same decoding, auth (metadata ``authorization: Bearer <token>``) and durability.
    ``INVALID_ARGUMENT`` for malformed requests, ``UNAUTHENTICATED``, ``RESOURCE_EXHAUSTED`` for an
    oversized request, ``UNAVAILABLE`` (with a ``RetryInfo``) for backpressure; ``partial_success``
    in the response when some spans were rejected.

Auth and projects: ``FLYWHEEL_TOKENS="tokenA=projA,tokenB=projB"`` and/or
``FLYWHEEL_TOKENS_FILE`` (TOML with a ``[tokens]`` table of ``"token" = "project"``). With tokens
configured every request needs one, and its spans and feedback are stored under the token's
project; without, everything goes to the default project. Tokens are compared in constant time
against every configured token and never logged. The servers bind 127.0.0.1 unless told otherwise.

Inside: ``receiver_http`` (FastAPI app) and ``receiver_grpc`` (grpcio) are thin transports over
``receiver_core.Ingestor``, which authorizes (``receiver_config``), applies backpressure, decodes
in a pool of worker processes (``receiver_decode``: inflate within the limit, then
``ingest.otlp`` / ``ingest.jsonl``) and group-commits: one thread writes every waiting request's
rows to the WAL with one fsync, then acknowledges them all; another flushes the WAL to Parquet
(``store.writer.LakeWriter``) or, with ``flywheel serve --store clickhouse://…``, inserts it into
ClickHouse (``store.clickhouse.writer.ClickHouseWriter``: the same WAL, one INSERT per table per
flush, the log kept until ClickHouse acknowledged it). ``metrics`` holds the Prometheus registry.

Tuning (environment, read by ``Limits.from_env``): ``FLYWHEEL_MAX_BODY_BYTES``,
``FLYWHEEL_MAX_DECODED_BYTES``, ``FLYWHEEL_MAX_BACKLOG_ROWS``, ``FLYWHEEL_MAX_BACKLOG_BYTES``,
``FLYWHEEL_FLUSH_MAX_AGE_S`` (2 s: new spans reach Parquet about this fast), ``FLYWHEEL_FLUSH_ROWS``,
``FLYWHEEL_FLUSH_BYTES``, ``FLYWHEEL_DECODE_WORKERS`` (decoder processes; 0 decodes in-process),
``FLYWHEEL_GRPC_THREADS``, ``FLYWHEEL_MAX_GROUP_ROWS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Generator, Mapping
from pathlib import Path

import uvicorn

from ingest.receiver_config import ConfigError, Limits, read_tokens
from ingest.receiver_core import Ingestor, OpenWriter
from ingest.receiver_grpc import create_grpc_server
from ingest.receiver_http import create_app
from ingest.redaction import RedactionPolicy
from store.schema import DEFAULT_PROJECT
from store.writer import LakeWriter

__all__ = ["ConfigError", "Limits", "read_tokens", "serve"]

log = logging.getLogger(__name__)

GRPC_GRACE_S = 10.0
HTTP_GRACE_S = 10


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns shutdown (and the final flush)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Leave signals to ``serve``; uvicorn's version re-raises them after shutdown."""
        yield


def serve(
    data_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 4318,
    grpc_port: int | None = 4317,
    *,
    tokens: Mapping[str, str] | None = None,
    project: str = DEFAULT_PROJECT,
    limits: Limits | None = None,
    on_ready: Callable[[int, int | None], None] | None = None,
    redaction: RedactionPolicy | None = None,
    open_writer: OpenWriter = LakeWriter,
) -> None:
    """Serve OTLP/HTTP and OTLP/gRPC until SIGTERM/SIGINT, then drain, flush and close the writer.

    ``grpc_port=None`` serves HTTP only; port 0 picks a free port (``on_ready(http_port,
    grpc_port)`` is told which, once both servers listen). ``tokens`` maps bearer token ->
    project; without tokens there is no auth and everything is stored under ``project``.
    ``redaction`` is the policy for text in spans (default: secrets masked, PII kept).
    ``open_writer`` opens the store's writer in ``data_dir`` (default: the Parquet lake; a
    ``ClickHouseWriter`` bound to its engine for ClickHouse). Decoder workers are spawned
    processes, so a script calling this needs the usual ``if __name__ == "__main__":`` guard.
    """
    http_socket = _bind(host, port)  # before anything else: a taken port fails fast and clearly
    ingestor = Ingestor(
        data_dir,
        tokens=tokens,
        project=project,
        limits=limits,
        redaction=redaction,
        open_writer=open_writer,
    )
    grpc_server = None
    try:
        bound_grpc = None
        if grpc_port is not None:
            grpc_server, bound_grpc = create_grpc_server(ingestor, host, grpc_port)
            grpc_server.start()
        config = uvicorn.Config(
            create_app(ingestor),
            host=host,
            port=http_socket.getsockname()[1],
            lifespan="off",
            access_log=False,
            server_header=False,
            log_level="warning",
            timeout_graceful_shutdown=HTTP_GRACE_S,
        )
        server = _Server(config)

        def ready() -> None:
            log.info(
                "flywheel receiver: OTLP/HTTP http://%s:%d, OTLP/gRPC %s, auth %s, data in %s",
                host,
                config.port,
                f"{host}:{bound_grpc}" if bound_grpc else "off",
                "on" if ingestor.tokens.enabled else "off (one project)",
                data_dir,
            )
            if on_ready is not None:
                on_ready(config.port, bound_grpc)

        def stopping() -> None:  # both servers drain in-flight requests at the same time
            if grpc_server is not None:
                grpc_server.stop(GRPC_GRACE_S)

        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(_run_until_signal(server, http_socket, ready, stopping))
    finally:
        http_socket.close()
        if grpc_server is not None:
            grpc_server.stop(GRPC_GRACE_S).wait()  # at once if already stopping, else drains
        ingestor.close()
        log.info("receiver stopped; every acknowledged span is in the store")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot serve OTLP/HTTP on {host}:{port}: {exc.strerror}") from exc
    return sock


async def _run_until_signal(
    server: _Server, sock: socket.socket, ready: Callable[[], None], stopping: Callable[[], None]
) -> None:
    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        log.info("received %s; finishing in-flight requests", signal.Signals(signum).name)
        server.force_exit = server.should_exit  # a second signal skips the grace period
        server.should_exit = True
        stopping()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        ready()
    await task
