"""Test helper: turn an OTLP/JSON request into the protobuf message of the same content.

Written independently of ingest/otlp.py (hex ids -> bytes, enum names -> numbers, then
``json_format.ParseDict``), so the golden tests compare two separate readings of one request.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode() if hex_id else ""


def json_to_protobuf(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """The protobuf request equal to an OTLP/JSON request (lenient on enum names)."""
    doc = copy.deepcopy(document)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = _b64(span[key])
                if isinstance(span.get("kind"), str):
                    span["kind"] = _KINDS[span["kind"]]
                status = span.get("status") or {}
                if isinstance(status.get("code"), str):
                    status["code"] = _CODES[status["code"]]
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        if key in link:
                            link[key] = _b64(link[key])
    return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
