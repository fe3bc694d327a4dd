"""Canonical spans in the Collector ClickHouse exporter's ``otel_traces`` layout.

The exporter (``exporter_traces.go``) writes one row per span: ``Timestamp`` the start (ns),
``Duration`` end − start in ns, ids as lower-case hex with ``''`` for no parent, ``SpanKind`` and
``StatusCode`` as ``traceutil`` names (``Server``, ``Error``), ``ServiceName`` from the resource,
every attribute as text in a ``Map(String, String)`` (the lake's maps use the same rendering),
and events and links as ``Nested`` columns, i.e. parallel arrays (``Events.Timestamp``,
``Events.Name``, ``Events.Attributes``). Strings are never NULL there: a missing value is ``''``.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from store.schema import SPAN_SCHEMA

__all__ = [
    "OTEL_TRACES_SCHEMA",
    "PROJECT_ATTRIBUTE",
    "SPAN_KIND_NAMES",
    "STATUS_CODE_NAMES",
    "collector_rows",
    "otel_traces_ddl",
]

#: The resource attribute that carries a span's Flywheel project in ``otel_traces``.
PROJECT_ATTRIBUTE = "flywheel.project"

#: Canonical span kind → the exporter's ``SpanKind`` (``traceutil.SpanKindStr``).
SPAN_KIND_NAMES = {
    "UNSPECIFIED": "Unspecified",
    "INTERNAL": "Internal",
    "SERVER": "Server",
    "CLIENT": "Client",
    "PRODUCER": "Producer",
    "CONSUMER": "Consumer",
}
#: Canonical status → the exporter's ``StatusCode`` (``traceutil.StatusCodeStr``).
STATUS_CODE_NAMES = {"UNSET": "Unset", "OK": "Ok", "ERROR": "Error"}

_TIMESTAMP = pa.timestamp("ns", tz="UTC")
_MAP = pa.map_(pa.string(), pa.string())

#: ``otel_traces`` as Arrow (its ``Nested`` columns flattened the way ClickHouse names them).
OTEL_TRACES_SCHEMA = pa.schema(
    [
        pa.field("Timestamp", _TIMESTAMP, nullable=False),
        pa.field("TraceId", pa.string(), nullable=False),
        pa.field("SpanId", pa.string(), nullable=False),
        pa.field("ParentSpanId", pa.string(), nullable=False),
        pa.field("TraceState", pa.string(), nullable=False),
        pa.field("SpanName", pa.string(), nullable=False),
        pa.field("SpanKind", pa.string(), nullable=False),
        pa.field("ServiceName", pa.string(), nullable=False),
        pa.field("ResourceAttributes", _MAP, nullable=False),
        pa.field("ScopeName", pa.string(), nullable=False),
        pa.field("ScopeVersion", pa.string(), nullable=False),
        pa.field("SpanAttributes", _MAP, nullable=False),
        pa.field("Duration", pa.uint64(), nullable=False),
        pa.field("StatusCode", pa.string(), nullable=False),
        pa.field("StatusMessage", pa.string(), nullable=False),
        pa.field("Events.Timestamp", pa.list_(_TIMESTAMP), nullable=False),
        pa.field("Events.Name", pa.list_(pa.string()), nullable=False),
        pa.field("Events.Attributes", pa.list_(_MAP), nullable=False),
        pa.field("Links.TraceId", pa.list_(pa.string()), nullable=False),
        pa.field("Links.SpanId", pa.list_(pa.string()), nullable=False),
        pa.field("Links.TraceState", pa.list_(pa.string()), nullable=False),
        pa.field("Links.Attributes", pa.list_(_MAP), nullable=False),
    ]
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def otel_traces_ddl(database: str = "default", table: str = "otel_traces") -> str:
    """The exporter's ``CREATE TABLE IF NOT EXISTS`` for ``database.table``."""
    for what, name in (("database", database), ("table", table)):
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"ClickHouse {what} name {name!r}: letters, digits and _ only")
    text = resources.files("store.clickhouse").joinpath("otel_traces.sql").read_text("utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return body.replace("{database}", database).replace("{table}", table).strip()


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.fill_null(column, "")


def _names(column: pa.ChunkedArray, names: dict[str, str], what: str) -> pa.Array:
    values = column.to_pylist()
    unknown = {v for v in values if v is not None and v not in names}
    if unknown:
        raise ValueError(f"{what}: no exporter name for {sorted(unknown)}")
    default = next(iter(names.values()))
    return pa.array([names[v] if v is not None else default for v in values], pa.string())


def _resource_maps(spans: pa.Table) -> pa.Array:
    maps = []
    for project, attributes in zip(
        spans.column("project").to_pylist(),
        spans.column("resource_attributes").to_pylist(),
        strict=True,
    ):
        items = [(k, v) for k, v in (attributes or []) if k != PROJECT_ATTRIBUTE]
        maps.append([*items, (PROJECT_ATTRIBUTE, project)])
    return pa.array(maps, _MAP)


def _nested(rows: list[list[dict[str, Any]] | None], key: str, arrow_type: pa.DataType) -> pa.Array:
    """One field of a list of structs as a list column; NULL text or map becomes empty."""
    empty: Any = "" if pa.types.is_string(arrow_type) else [] if arrow_type == _MAP else None
    return pa.array(
        [[item[key] if item[key] is not None else empty for item in (row or [])] for row in rows],
        pa.list_(arrow_type),
    )


def collector_rows(spans: pa.Table) -> pa.Table:
    """Canonical spans (``store.schema.SPAN_SCHEMA``) as the exporter would have written them."""
    spans = spans.select(SPAN_SCHEMA.names)
    start = spans.column("start_time")
    duration = pc.subtract(spans.column("end_time").cast(pa.int64()), start.cast(pa.int64()))
    if pc.any(pc.less(duration, 0)).as_py():
        raise ValueError("a span ends before it starts; the exporter's Duration is unsigned")
    events = spans.column("events").to_pylist()
    links = spans.column("links").to_pylist()
    columns = {
        "Timestamp": start,
        "TraceId": spans.column("trace_id"),
        "SpanId": spans.column("span_id"),
        "ParentSpanId": _text(spans.column("parent_span_id")),
        "TraceState": pa.array([""] * spans.num_rows, pa.string()),
        "SpanName": _text(spans.column("name")),
        "SpanKind": _names(spans.column("kind"), SPAN_KIND_NAMES, "kind"),
        "ServiceName": _text(spans.column("service_name")),
        "ResourceAttributes": _resource_maps(spans),
        "ScopeName": _text(spans.column("scope_name")),
        "ScopeVersion": pa.array([""] * spans.num_rows, pa.string()),
        "SpanAttributes": pc.fill_null(spans.column("attributes"), pa.scalar([], _MAP)),
        "Duration": duration.cast(pa.uint64()),
        "StatusCode": _names(spans.column("status_code"), STATUS_CODE_NAMES, "status_code"),
        "StatusMessage": _text(spans.column("status_message")),
        "Events.Timestamp": _nested(events, "time", _TIMESTAMP),
        "Events.Name": _nested(events, "name", pa.string()),
        "Events.Attributes": _nested(events, "attributes", _MAP),
        "Links.TraceId": _nested(links, "trace_id", pa.string()),
        "Links.SpanId": _nested(links, "span_id", pa.string()),
        "Links.TraceState": pa.array(
            [[""] * len(row or []) for row in links], pa.list_(pa.string())
        ),
        "Links.Attributes": _nested(links, "attributes", _MAP),
    }
    return pa.Table.from_pydict(
        {name: columns[name] for name in OTEL_TRACES_SCHEMA.names}, schema=OTEL_TRACES_SCHEMA
    )
