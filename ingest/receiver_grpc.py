"""OTLP/gRPC ``TraceService/Export`` over grpcio; same decode, auth and commit as OTLP/HTTP.

The method is registered with no request deserializer, so the handler gets the request's bytes
and hands them to the same decoder process pool as OTLP/HTTP (grpcio has already undone gRPC's
own message compression and enforced ``max_receive_message_length`` on the result).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Any, NoReturn

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ingest.receiver_core import Ingestor, Overloaded, Unavailable

log = logging.getLogger(__name__)

SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
METHOD_PATH = f"{SERVICE}/Export"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


class _Export:
    """The ``Export`` handler: raw request bytes in, serialized response out."""

    def __init__(self, ingestor: Ingestor) -> None:
        self.ingestor = ingestor

    def __call__(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        trailing: tuple[tuple[str, Any], ...] = ()
        try:
            return self._export(request, context)
        except _Abort as abort:
            code, details, trailing = abort.code, abort.details, abort.trailing
        except Exception as exc:
            code, details = grpc.StatusCode.INTERNAL, f"internal error: {exc.__class__.__name__}"
            log.error("unexpected error in TraceService/Export", exc_info=exc)
        finally:
            metrics = self.ingestor.metrics
            metrics.requests.labels("grpc", METHOD_PATH, code.name).inc()
            metrics.request_seconds.labels("grpc", METHOD_PATH).observe(
                time.perf_counter() - started
            )
        if trailing:
            context.set_trailing_metadata(trailing)
        context.abort(code, details)
        raise AssertionError("unreachable: context.abort raises")

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        ingestor = self.ingestor
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        project = ingestor.project_for(metadata.get("authorization"))
        if project is None:
            _abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        try:
            with ingestor.admitted(len(request)):
                outcome = ingestor.decode(request, "", "protobuf", project, METHOD_PATH).result()
            if outcome.failure is not None:
                status, message = outcome.failure
                code = (
                    grpc.StatusCode.RESOURCE_EXHAUSTED
                    if status == 413
                    else grpc.StatusCode.INVALID_ARGUMENT
                )
                _abort(code, message)
            ingestor.commit(outcome.tables()).result()
        except Overloaded as exc:
            delay = RetryInfo(retry_delay=Duration(seconds=ingestor.retry_after_s))
            _abort(
                grpc.StatusCode.UNAVAILABLE,
                str(exc),
                ((RETRY_INFO_KEY, delay.SerializeToString()),),
            )
        except Unavailable as exc:
            _abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        ingestor.metrics.spans_accepted.labels(project, "grpc").inc(outcome.num_rows)
        response = ExportTraceServiceResponse()
        if outcome.errors:
            ingestor.metrics.spans_rejected.labels(project, "grpc").inc(len(outcome.errors))
        if outcome.errors or outcome.warnings:
            response.partial_success.rejected_spans = len(outcome.errors)
            response.partial_success.error_message = outcome.error_message()
        return bytes(response.SerializeToString())


class _Abort(Exception):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, Any], ...] = ()
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing


def _abort(
    code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, Any], ...] = ()
) -> NoReturn:
    raise _Abort(code, details, trailing)


def create_grpc_server(ingestor: Ingestor, host: str, port: int) -> tuple[grpc.Server, int]:
    """A gRPC server (not started yet) serving TraceService/Export, and the port it bound."""
    limits = ingestor.limits
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(
            limits.grpc_threads, thread_name_prefix="flywheel-grpc"
        ),
        options=[
            ("grpc.max_receive_message_length", limits.max_decoded_bytes),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    handler = grpc.unary_unary_rpc_method_handler(
        _Export(ingestor), request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"cannot bind OTLP/gRPC to {address}")
    return server, bound
