"""Building one ExportTraceServiceRequest span by span.

Spans are appended in place with ``add()`` (about five times faster than building messages from
constructor keyword arguments), grouped into one ResourceSpans per resource and one ScopeSpans
per instrumentation scope, in order of first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3
STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2
#: W3C "sampled" plus "has is-remote information" (what current SDKs send).
SPAN_FLAGS = 0x101

Resource = tuple[tuple[str, Any], ...]
Scope = tuple[str, str]
Event = tuple[int, str, Mapping[str, Any]]


def set_value(target: AnyValue, value: Any) -> None:
    """Store a Python value in an AnyValue (str, bool, int, float, list, dict)."""
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, list | tuple):
        values = target.array_value.values
        target.array_value.SetInParent()
        for item in value:
            set_value(values.add(), item)
    elif isinstance(value, dict):
        kvs = target.kvlist_value.values
        target.kvlist_value.SetInParent()
        for key, item in value.items():
            kv = kvs.add()
            kv.key = key
            set_value(kv.value, item)
    elif isinstance(value, bytes):
        target.bytes_value = value
    else:
        raise TypeError(f"unsupported attribute value {value!r}")


def set_attributes(target: Any, attrs: Mapping[str, Any]) -> None:
    """Append ``attrs`` to a repeated KeyValue field, skipping None values."""
    for key, value in attrs.items():
        if value is None:
            continue
        kv = target.add()
        kv.key = key
        set_value(kv.value, value)


class BatchBuilder:
    """One request under construction, plus the feedback records of its traces."""

    def __init__(self) -> None:
        self.request = ExportTraceServiceRequest()
        self.feedback: list[dict[str, Any]] = []
        self.num_traces = 0
        self.num_spans = 0
        self._resources: dict[Resource, Any] = {}
        self._scopes: dict[tuple[Resource, Scope], Any] = {}

    def _spans(self, resource: Resource, scope: Scope) -> Any:
        spans = self._scopes.get((resource, scope))
        if spans is None:
            rs = self._resources.get(resource)
            if rs is None:
                rs = self.request.resource_spans.add()
                set_attributes(rs.resource.attributes, dict(resource))
                self._resources[resource] = rs
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = scope
            spans = ss.spans
            self._scopes[(resource, scope)] = spans
        return spans

    def add_span(
        self,
        resource: Resource,
        scope: Scope,
        ids: tuple[bytes, bytes, bytes | None],
        name: str,
        kind: int,
        start_ns: int,
        end_ns: int,
        attrs: Mapping[str, Any],
        status: tuple[int, str] = (STATUS_UNSET, ""),
        events: Iterable[Event] = (),
    ) -> None:
        """Append one span; ``ids`` is (trace id, span id, parent span id or None)."""
        span = self._spans(resource, scope).add()
        span.trace_id, span.span_id, parent = ids
        if parent:
            span.parent_span_id = parent
        span.flags = SPAN_FLAGS
        span.name = name
        span.kind = kind
        span.start_time_unix_nano = start_ns
        span.end_time_unix_nano = end_ns
        set_attributes(span.attributes, attrs)
        for time_ns, event_name, event_attrs in events:
            event = span.events.add()
            event.time_unix_nano = time_ns
            event.name = event_name
            set_attributes(event.attributes, event_attrs)
        code, message = status
        if code:
            span.status.code = code
            if message:
                span.status.message = message
        self.num_spans += 1


def flatten_messages(prefix: str, messages: Sequence[tuple[str, str]]) -> dict[str, str]:
    """OpenInference's flattened message list: ``prefix.<i>.message.role`` / ``.content``."""
    out: dict[str, str] = {}
    for i, (role, content) in enumerate(messages):
        out[f"{prefix}.{i}.message.role"] = role
        out[f"{prefix}.{i}.message.content"] = content
    return out
