"""The columnar protobuf file decoder gives exactly what the reference decoder gives.

``iter_file(path, columnar=True)`` (wire bytes -> Arrow columns, ingest/otlp_arrow.py) and
``columnar=False`` (protobuf objects -> SpanBuilder) must agree on every ``.pb``/``.pb.gz`` file:
the same rows (sorted by trace_id, span_id: batch boundaries and row order may differ), the same
errors in the same order, the same span count, and where the reference raises, the same
exception type. The reference is the specification: no test here says what a case should give.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ingest import files
from sample_data.formats import frame
from sample_data.generator import generate_batches
from store.schema import SPAN_SCHEMA
from tests.ingest.otlp_convert import json_to_protobuf

GOLDEN = Path(__file__).parent.parent / "golden"
#: The third-party payloads (kept in the repository as the golden tests' inputs).
FIXTURES = GOLDEN
T0 = 1_700_000_000_000_000_000
BIG = files.DEFAULT_BATCH_SPANS
FRAMINGS = pytest.mark.parametrize("framing", ["varint", "uint32"])

# --- comparing the two paths ------------------------------------------------------------------

Outcome = tuple[pa.Table, list[tuple[str, str, str]], int]  # sorted rows, errors, span count


def _decode(path: Path, batch_spans: int, columnar: bool) -> Outcome | Exception:
    try:
        batches = list(files.iter_file(path, batch_spans=batch_spans, columnar=columnar))
    except Exception as exc:  # the reference's own failures are part of the contract
        return exc
    for batch in batches:
        assert batch.spans.schema == SPAN_SCHEMA, f"columnar={columnar}: a batch's schema"
        assert batch.feedback.num_rows == 0, f"columnar={columnar}: feedback from a .pb file"
    table = pa.concat_tables([b.spans for b in batches]) if batches else SPAN_SCHEMA.empty_table()
    return (
        table.sort_by([("trace_id", "ascending"), ("span_id", "ascending")]),
        [(e.source, e.location, e.reason) for b in batches for e in b.errors],
        sum(b.spans.num_rows for b in batches),
    )


def _show(scalar: pa.Scalar) -> str:
    if isinstance(scalar, pa.TimestampScalar):
        return repr(scalar.value)  # integer nanoseconds: as_py() stops at microseconds
    return repr(scalar.as_py())[:300]


def _first_difference(expected: pa.Table, actual: pa.Table) -> str:
    """Where two sorted span tables first differ: the column, the row, both values."""
    if expected.num_rows != actual.num_rows:
        ids = [set(zip(t["trace_id"].to_pylist(), t["span_id"].to_pylist(), strict=True)) for t in (expected, actual)]  # fmt: skip
        return (
            f"reference has {expected.num_rows} rows, columnar {actual.num_rows}; only in the "
            f"reference {sorted(ids[0] - ids[1])[:3]}, only columnar {sorted(ids[1] - ids[0])[:3]}"
        )
    for name in expected.column_names:
        left, right = expected[name], actual[name]
        for row in range(0 if left.equals(right) else expected.num_rows):
            if not left[row].equals(right[row]):
                where = f"trace_id {expected['trace_id'][row]}, span_id {expected['span_id'][row]}"
                return (
                    f"column {name!r} differs first at row {row} ({where}): "
                    f"reference {_show(left[row])}, columnar {_show(right[row])}"
                )
    return "the tables differ, but no column does (null flags or chunk layout?)"


def assert_same_decoding(path: Path, *, batch_spans: int = BIG) -> Outcome | Exception:
    """Decode ``path`` both ways and fail, saying where, unless they agree; give the reference."""
    reference = _decode(path, batch_spans, columnar=False)
    columnar = _decode(path, batch_spans, columnar=True)
    if isinstance(reference, Exception) or isinstance(columnar, Exception):
        assert type(columnar) is type(reference), (
            f"{path.name}: reference gave {reference!r:.300}, columnar gave {columnar!r:.300}"
        )
        return reference
    assert columnar[1] == reference[1], (
        f"{path.name}: errors differ\nreference: {reference[1]}\ncolumnar:  {columnar[1]}"
    )
    if not columnar[0].equals(reference[0]):
        pytest.fail(f"{path.name}: {_first_difference(reference[0], columnar[0])}")
    assert columnar[2] == reference[2], f"{path.name}: span count {columnar[2]} != {reference[2]}"
    return reference


# --- building requests and files --------------------------------------------------------------

NO_VALUE = object()  # a KeyValue whose value field is absent


class KvList(list[tuple[str, Any]]):
    """A kvlist AnyValue as (key, value) pairs, so a key may repeat."""


def set_any(target: AnyValue, value: Any) -> None:
    """Fill an AnyValue from Python (None: present with nothing set; KvList; list: array)."""
    if value is None:
        target.SetInParent()
    elif isinstance(value, KvList):
        target.kvlist_value.SetInParent()
        set_attrs(target.kvlist_value.values, value)
    elif isinstance(value, list):
        target.array_value.SetInParent()
        for item in value:
            set_any(target.array_value.values.add(), item)
    else:
        kinds = {bool: "bool", int: "int", float: "double", str: "string", bytes: "bytes"}
        setattr(target, f"{kinds[type(value)]}_value", value)


def set_attrs(repeated: Any, pairs: Iterable[tuple[str, Any]]) -> None:
    for key, value in pairs:
        kv = repeated.add(key=key)
        if value is not NO_VALUE:
            set_any(kv.value, value)


def add_span(scope_spans: Any, n: int, **fields: Any) -> None:
    """Append valid span number ``n`` (ids from n, times from T0); ``fields`` override it."""
    span = scope_spans.spans.add(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"))
    span.name, span.kind = f"span {n}", 3
    span.start_time_unix_nano, span.end_time_unix_nano = T0 + n, T0 + n + 1_500_000
    set_attrs(span.attributes, fields.pop("attrs", ()))
    for time_ns, name, attrs in fields.pop("events", ()):
        set_attrs(span.events.add(time_unix_nano=time_ns, name=name).attributes, attrs)
    for trace_id, span_id, attrs in fields.pop("links", ()):
        set_attrs(span.links.add(trace_id=trace_id, span_id=span_id).attributes, attrs)
    span.status.code, span.status.message = fields.pop("status", (0, ""))
    for key, value in fields.items():
        setattr(span, key, value)


def request(*spans: dict[str, Any], resource: Any = (("service.name", "svc"),)) -> bytes:
    """One resource and scope holding a span per dict of ``add_span`` fields (numbered from 1)."""
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    set_attrs(resource_spans.resource.attributes, resource)
    scope_spans = resource_spans.scope_spans.add(scope={"name": "scope"})
    for n, fields in enumerate(spans, start=1):
        add_span(scope_spans, **{"n": n, **fields})
    return message.SerializeToString()


def with_attrs(*span_attrs: list[tuple[str, Any]], **kwargs: Any) -> list[bytes]:
    """One request with a span per attribute list."""
    return [request(*[{"attrs": attrs} for attrs in span_attrs], **kwargs)]


def write_pb(path: Path, messages: list[bytes], framing: str = "varint") -> Path:
    """Messages length-prefixed (``varint`` or ``uint32``), gzip'd when the name ends ``.gz``."""
    data = b"".join(frame(m, framing) for m in messages)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


# --- 2. the project's sample data -------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_messages() -> list[bytes]:
    batches = generate_batches(300, 6, 11, batch_size=25)  # ~2,300 spans in 12 requests
    return [b.request.SerializeToString(deterministic=True) for b in batches]


@pytest.mark.parametrize("batch_spans", [BIG, 500])
@pytest.mark.parametrize("name", ["traces.pb", "traces.pb.gz"])
@FRAMINGS
def test_sample_data(
    tmp_path: Path, sample_messages: list[bytes], framing: str, name: str, batch_spans: int
) -> None:
    path = write_pb(tmp_path / name, sample_messages, framing)
    outcome = assert_same_decoding(path, batch_spans=batch_spans)
    assert not isinstance(outcome, Exception) and outcome[2] > 2000 and not outcome[1]


# --- 3. third-party payloads (and the golden inputs) ------------------------------------------

THIRD_PARTY = sorted(
    p.name for p in FIXTURES.glob("*.in.json") if '"resourceSpans"' in p.read_text()
)


def _third_party(name: str) -> bytes:
    return json_to_protobuf(json.loads((FIXTURES / name).read_text())).SerializeToString()


@FRAMINGS
@pytest.mark.parametrize("fixture", THIRD_PARTY)
def test_third_party_payload(tmp_path: Path, fixture: str, framing: str) -> None:
    outcome = assert_same_decoding(write_pb(tmp_path / "one.pb", [_third_party(fixture)], framing))
    assert not isinstance(outcome, Exception) and outcome[2] > 0


def test_third_party_and_golden_payloads_in_one_file(tmp_path: Path) -> None:
    goldens = sorted(GOLDEN.glob("*.in.pb"))
    messages = [_third_party(f) for f in THIRD_PARTY] + [p.read_bytes() for p in goldens]
    for framing in ("uint32", "varint"):
        assert_same_decoding(write_pb(tmp_path / f"all-{framing}.pb.gz", messages, framing))
        assert_same_decoding(write_pb(tmp_path / "all.pb", messages, framing), batch_spans=3)
    for golden in goldens:  # a bare request: an HTTP body saved to disk
        (tmp_path / golden.name).write_bytes(golden.read_bytes())
        assert_same_decoding(tmp_path / golden.name)


# --- 4. hand-built edge cases -----------------------------------------------------------------

FLOATS = [0.1, 1e16, 1e-7, 5e-324, -0.0, 1.7976931348623157e308, 123456789.123, 1e22]
FLOATS += [math.nan, math.inf, -math.inf]
TEXTS = ['q"uote', "back\\slash", "nl\nnul\x00", "\u2028", "é", "😀", "\x7f\x1b", ""]
OPENINFERENCE = [
    (f"llm.{direction}_messages.{i}.message.{key}", value)
    for direction, i, key, value in [
        ("input", 0, "role", "system"), ("input", 0, "content", "Be brief."),
        ("input", 1, "role", "user"), ("input", 1, "content", "Hi"), ("input", 3, "content", 42),
        ("input", "x", "role", "user"), ("output", 0, "role", "assistant"),
        ("output", 0, "content", "Hello"),
    ]
]  # fmt: skip
COMPLETION_START = [
    "2023-11-14T22:13:20.123456789Z", "2023-11-15T00:13:20.5+02:00", "2023-11-14T22:13:20",
    '"2023-11-14T22:13:21Z"', "soon", 1_700_000_000,
]  # fmt: skip
TOKENS, MODEL = "gen_ai.usage.input_tokens", "gen_ai.request.model"


def _nested(depth: int) -> Any:
    return functools.reduce(lambda value, _: [value], range(depth), "leaf")


def _several_resources() -> list[bytes]:
    message = ExportTraceServiceRequest()
    resources: list[Any] = [[], [("service.name", 7)], [("service.name", "")], None]
    for r, attrs in enumerate([*resources, [("service.name", "b"), ("host", "h")]]):
        resource_spans = message.resource_spans.add()
        if attrs is not None:  # None: no resource field at all
            set_attrs(resource_spans.resource.attributes, attrs)
        for s, scope in enumerate([None, "", "lib"]):
            scope_spans = resource_spans.scope_spans.add()
            if scope is not None:  # None: no scope field at all
                scope_spans.scope.name, scope_spans.scope.version = scope, "1.0"
            add_span(scope_spans, 100 * r + 10 * s + 1)
            add_span(scope_spans, 100 * r + 10 * s + 2)
        resource_spans.scope_spans.add()  # a scope with no spans
    return [message.SerializeToString()]


EDGE_CASES: dict[str, Callable[[], list[bytes]]] = {
    "empty_strings": lambda: [request(
        {"name": "", "attrs": [("", ""), ("k", ""), (MODEL, "")]},
        {"status": (2, ""), "events": [(T0, "", [("", "")])]},
        resource=[("service.name", ""), ("", "")])],
    "unset_values": lambda: with_attrs(
        [("a", None), ("b", NO_VALUE), (MODEL, None)],
        [(TOKENS, NO_VALUE), ("arr", [None, [None]])],
        resource=[("service.name", None), ("x", NO_VALUE)]),
    "bytes_values": lambda: with_attrs(
        [("b", b"\x00\xff"), ("e", b""), ("arr", [b"\x01", "x"]), ("kv", KvList([("k", b"\x02")]))],
        [(TOKENS, b"12"), ("gen_ai.response.finish_reasons", [b"stop"])],
        resource=[("service.name", b"svc")]),
    # The reference raises TypeError for bytes in a string column (json.dumps of bytes) ...
    "bytes_in_string_column": lambda: with_attrs([(MODEL, b"m")]),
    "bytes_in_kvlist_in_string_column": lambda: with_attrs([("session.id", KvList([("a", [b"x"])]))]),
    # ... and OverflowError (from pyarrow) for a value or time that does not fit an int64.
    "huge_double_for_int_column": lambda: with_attrs([(TOKENS, 1e300)]),
    "huge_string_for_int_column": lambda: with_attrs([(TOKENS, "9" * 20)]),
    "huge_start_and_end": lambda: [request({"start_time_unix_nano": 2**63, "end_time_unix_nano": 2**63 + 1})],
    "huge_end": lambda: [request({"end_time_unix_nano": 2**64 - 1})],
    "huge_end_of_rejected_span": lambda: [request({"start_time_unix_nano": 0, "end_time_unix_nano": 2**64 - 1}, {})],
    "huge_event_time": lambda: [request({"events": [(2**64 - 1, "e", [])]})],
    "numbers_as_strings": lambda: with_attrs(
        [(TOKENS, "12"), ("gen_ai.usage.output_tokens", " 7 ")],
        [(TOKENS, "3.0"), ("gen_ai.usage.output_tokens", "x")],
        [("gen_ai.usage.cost", "0.25"), ("ai.response.msToFirstChunk", "1e3")]),
    "numbers_as_doubles_and_bools": lambda: with_attrs(
        [(TOKENS, 12.0), ("gen_ai.usage.output_tokens", 7.5)],
        [("gen_ai.usage.reasoning_tokens", True), ("gen_ai.usage.cost", 1e-7)],
        [("gen_ai.response.time_to_first_chunk", 0.3), ("llm.cost.total", False)],
        [(TOKENS, -5), ("gen_ai.usage.output_tokens", 2**63 - 1)]),
    "strings_as_other_types": lambda: with_attrs(
        [(MODEL, 7), ("gen_ai.response.model", 1.5), ("gen_ai.user", 0.1)],
        [("session.id", True), ("user.id", [1, "a", None])],
        [("gen_ai.provider.name", KvList([("b", 1), ("a", [])])), ("gen_ai.operation.name", 3)],
        [("gen_ai.response.finish_reasons", 1)],
        [("gen_ai.response.finish_reasons", ["stop", None, 2, ""])]),
    "doubles_and_ints": lambda: with_attrs(
        [(f"d{i}", d) for i, d in enumerate(FLOATS)] + [("arr", FLOATS), ("kv", KvList([("n", math.nan)]))],
        [("gen_ai.usage.cost", math.nan), ("ai.response.msToFirstChunk", math.inf)],
        [(MODEL, math.nan), ("session.id", [math.inf])],
        [("min", -(2**63)), ("max", 2**63 - 1), ("zero", 0), ("arr", [-1, 2**53 + 1])]),
    "awkward_text": lambda: [request(
        {"name": "😀\x00", "attrs": [(s, s) for s in TEXTS] + [("arr", TEXTS)]},
        {"attrs": [("kv", KvList([(s, s) for s in TEXTS])), ("session.id", TEXTS)]},
        resource=[("service.name", "é😀"), ("\u2028", "\x00")])],
    "nested_arrays_and_kvlists": lambda: with_attrs(
        [("a", []), ("b", [[]]), ("c", KvList()), ("d", [KvList(), [[], [1]]])],
        [("e", KvList([("", [KvList([("x", [1, [2.5, [True, [b"y", None]]]])])])]))],
        [(MODEL, [[], KvList()]), ("session.id", KvList())]),
    "nested_40_levels": lambda: with_attrs([("deep", _nested(40))]),
    "nested_80_levels_between_good": lambda: [
        request({}), *with_attrs([("deep", _nested(80))]), request({"n": 3})],
    "duplicate_keys": lambda: [request(
        {"attrs": [("a", "1"), ("b", "2"), ("a", "3"), (MODEL, "m1")]},
        {"attrs": [(MODEL, "m1"), ("x", 1), (MODEL, "m2")], "events": [(T0, "e", [("a", 1), ("a", 2)])]},
        {"attrs": [("kv", KvList([("k", 1), ("j", 2), ("k", 3)]))]},
        resource=[("service.name", "first"), ("h", "x"), ("service.name", "second")])],
    "bad_ids": lambda: [request(
        *[{"trace_id": t} for t in (b"\x01" * 15, b"\x01" * 17, b"", bytes(16))],
        *[{"span_id": s} for s in (b"\x02" * 7, b"\x02" * 9, b"", bytes(8))], {})],
    "parent_ids": lambda: [request(
        *[{"parent_span_id": p} for p in (bytes(8), b"\x03" * 7, b"\x03" * 8, b"", b"\x03" * 16)])],
    "times": lambda: [request(
        {"start_time_unix_nano": 0}, {"end_time_unix_nano": T0}, {"end_time_unix_nano": 0},
        {"start_time_unix_nano": 1, "end_time_unix_nano": 1}, {"end_time_unix_nano": T0 + 2})],
    "unknown_enums": lambda: [request(
        *[{"kind": k, "status": (c, "")} for k, c in ((9, 3), (-1, -2), (6, 2), (0, 1))],
        {"kind": 5, "status": (2, "boom")}, {"status": (1, "fine")}, {"status": (0, "unset?")})],
    "events": lambda: [request(
        {"events": [(T0 + 250_000_001, "gen_ai.first_token", []), (T0 + 9, "x", [])]},
        {"events": [(T0, "gen_ai.user.message", [("content", "hello")])]},
        {"events": [(T0, "gen_ai.system.message", [("content", "sys")]), (0, "e", [])]},
        {"events": [(T0, "gen_ai.choice", [("message", KvList([("content", "out")]))])]},
        {"events": [(1, "ai.stream.firstChunk", []), (T0, "gen_ai.first_token", [])]},
        {"events": [(T0, "gen_ai.user.message", [("content", 5)])] * 2})],
    # an attribute of higher precedence wins over an event; an event over none, or over an
    # attribute without a value
    "events_beside_attributes": lambda: [request(
        {"attrs": [("ai.response.msToFirstChunk", 12.5), ("gen_ai.input.messages", "[]")],
         "events": [(T0 + 250_000_001, "gen_ai.first_token", []),
                    (T0, "gen_ai.user.message", [("content", "from event")])]},
        {"attrs": [("ai.response.msToFirstChunk", "soon"), ("ai.value", "from attribute")],
         "events": [(T0 + 5, "gen_ai.first_token", []),
                    (T0, "gen_ai.user.message", [("content", "from event")])]},
        {"attrs": [("llm.input_messages.0.message.role", "user")],
         "events": [(T0 + 7, "gen_ai.first_token", [])]})],
    "links": lambda: [request(
        {"links": [(b"\x05" * 16, b"\x06" * 8, [("k", "v"), ("k", 2)]), (b"", b"", [])]},
        {"links": [(b"\x05" * 3, b"\x06" * 20, [("n", [1, KvList()])])]})],
    "openinference_flattened": lambda: with_attrs(OPENINFERENCE, OPENINFERENCE[2:4] + OPENINFERENCE[:2]),
    "langfuse_completion_start_time": lambda: with_attrs(
        *[[("langfuse.observation.completion_start_time", v)] for v in COMPLETION_START]),
    "json_text_attributes": lambda: with_attrs(
        [("gen_ai.input.messages", '[{"role":"user","parts":[{"type":"text","content":"q"}]}]')],
        [("llm.invocation_parameters", '{"model": "x"}'), ("langfuse.observation.usage_details", '{"input": 5}')],
        [("gen_ai.input.messages", "[not json"), ("input.value", '"{\\"a\\": 1}"')]),
    "several_resources_and_scopes": _several_resources,
    "zero_spans": lambda: [
        request(), b"", ExportTraceServiceRequest(resource_spans=[{}]).SerializeToString(), request({})],
    "empty_request_first": lambda: [b"", request({}), request({"n": 2})],
}  # fmt: skip
#: Cases after which the reference stops reading the file (it raises, or a frame does not parse).
STOPPERS = {name for name in EDGE_CASES if name.startswith(("huge", "bytes_in", "nested_80"))}


@FRAMINGS
@pytest.mark.parametrize("case", EDGE_CASES)
def test_edge_case(tmp_path: Path, case: str, framing: str) -> None:
    assert_same_decoding(write_pb(tmp_path / f"{case}.pb", EDGE_CASES[case](), framing))


def test_edge_cases_in_one_file_a_batch_per_span(tmp_path: Path) -> None:
    messages = [m for name, case in EDGE_CASES.items() if name not in STOPPERS for m in case()]
    outcome = assert_same_decoding(write_pb(tmp_path / "all.pb", messages, "uint32"), batch_spans=1)
    assert not isinstance(outcome, Exception) and outcome[2] > 50 and outcome[1]


# --- 5. frames that do not parse, and wire-format corners -------------------------------------


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (number < 16), written by hand."""
    return bytes([number << 3 | 2]) + frame(payload, "varint")


def in_request(span: bytes, resource: bytes = b"") -> bytes:
    """A request of one resource (raw Resource bytes) holding one span (raw Span bytes)."""
    return field(1, (field(1, resource) if resource else b"") + field(2, field(2, span)))


def _bad_utf8(fields: dict[str, Any]) -> bytes:
    message = request(fields)
    assert message.count(b"@@@@") == 1
    return message.replace(b"@@@@", b"\xc3\x28\xff\xfe")


GOOD = [request({"n": n}) for n in (1, 2)]
SPAN = Span(trace_id=b"\x07" * 16, span_id=b"\x08" * 8, start_time_unix_nano=T0)
SPAN.end_time_unix_nano, SPAN.status.message = T0 + 5, "first"
SPAN.attributes.add(key="a").value.string_value = "1"
LATER = Span(name="later", kind=2, end_time_unix_nano=T0 + 9, status={"code": 2})
LATER.attributes.add(key="a").value.int_value = 2
S, L = SPAN.SerializeToString(), LATER.SerializeToString()
ONE_OF_TWICE = field(2, field(1, b"s") + b"\x18\x05")  # an AnyValue: string_value, then int 5
MANY = b"".join(frame(request({"n": n, "attrs": [("i", n)]}), "uint32") for n in range(1, 300))

BAD_FRAMES: dict[str, Callable[[], list[bytes]]] = {
    "garbage_middle": lambda: [GOOD[0], b"\xff\xff\xff", GOOD[1]],
    "garbage_first": lambda: [b"\x0a\x05abc", *GOOD],
    "bad_utf8_span_name": lambda: [GOOD[0], _bad_utf8({"name": "@@@@"}), GOOD[1]],
    "bad_utf8_key": lambda: [GOOD[0], _bad_utf8({"attrs": [("@@@@", 1)]}), GOOD[1]],
    "bad_utf8_nested": lambda: [GOOD[0], _bad_utf8({"attrs": [("k", [KvList([("j", "@@@@")])])]})],
    "unknown_fields": lambda: [m + b"\xf8\x07\x01" + b"\x9a\x06\x01x" for m in GOOD],
    "known_field_wrong_wire_type": lambda: [GOOD[0] + b"\x08\x01", in_request(S + b"\x28\x05")],
    "span_fields_twice_merge": lambda: [in_request(S + L)],
    "explicit_defaults_override": lambda: [in_request(S + b"\x30\x00\x2a\x00" + field(15, b""))],
    "resource_twice_and_oneof_twice": lambda: [in_request(S + field(9, field(1, b"v") + ONE_OF_TWICE),
        field(1, field(1, b"service.name") + field(2, field(1, b"a"))) + field(1, field(1, b"h") + ONE_OF_TWICE))],
}  # fmt: skip
BAD_FILES: dict[str, Callable[[str], bytes]] = {
    "truncated_last_frame": lambda f: b"".join(frame(m, f) for m in GOOD)[:-5],
    "ends_in_length_prefix": lambda f: frame(GOOD[0], f) + (b"\x00\x00" if f == "uint32" else b"\x85"),
    "length_beyond_end": lambda f: frame(GOOD[0], f) + (b"\x00\x00\x03\xe8" if f == "uint32" else b"\xe8\x07") + GOOD[1],
    "overlong_varint_prefix": lambda f: frame(GOOD[0], f) + b"\xff" * 10 + b"\x01" + GOOD[1],
    "bare_request": lambda f: request({}, {"n": 2}),
    "empty": lambda f: b"",
    **{k: lambda f, k=k: b"".join(frame(m, f) for m in BAD_FRAMES[k]()) for k in BAD_FRAMES},
}  # fmt: skip


@pytest.mark.parametrize("suffix", [".pb", ".pb.gz"])
@FRAMINGS
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_or_odd_frames(tmp_path: Path, case: str, framing: str, suffix: str) -> None:
    data = BAD_FILES[case](framing)
    path = tmp_path / f"{case}{suffix}"
    path.write_bytes(gzip.compress(data, mtime=0) if suffix.endswith(".gz") else data)
    assert_same_decoding(path)


ZIPPED = gzip.compress(MANY, mtime=0)
DAMAGED = {
    "truncated_gzip": ZIPPED[: len(ZIPPED) * 2 // 3],
    "truncated_gzip_header": ZIPPED[:15],
    "not_gzip_at_all": MANY[:500],
    "gzip_then_junk": ZIPPED + b"junk!",
    "two_members": gzip.compress(MANY[:300], mtime=0) + gzip.compress(MANY[300:], mtime=0),
    "empty_file": b"",
}


@pytest.mark.parametrize("batch_spans", [BIG, 50])
@pytest.mark.parametrize("case", DAMAGED)
def test_damaged_gzip(tmp_path: Path, case: str, batch_spans: int) -> None:
    path = tmp_path / "damaged.pb.gz"
    path.write_bytes(DAMAGED[case])
    assert_same_decoding(path, batch_spans=batch_spans)


# --- 6. random requests -----------------------------------------------------------------------

KEYS = st.sampled_from([
    "k", "", "service.name", MODEL, TOKENS, "session.id", "gen_ai.response.finish_reasons",
    "gen_ai.usage.cost", "content", "gen_ai.input.messages", "gen_ai.response.time_to_first_chunk",
    "langfuse.observation.completion_start_time", *(k for k, _ in OPENINFERENCE[:2]),
])  # fmt: skip
LEAVES = st.none() | st.text(max_size=6) | st.integers(-(2**63), 2**63 - 1) | st.booleans()
LEAVES |= st.floats(-1e9, 1e9) | st.sampled_from([math.nan, -math.inf, 1e16, -0.0, 1e300, b"\xff"])
LEAVES |= st.sampled_from(["12", "2023-11-14T22:13:20.5Z", '[{"role":"user","content":"x"}]'])
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(KEYS, inner), max_size=3).map(KvList),
    max_leaves=6,
)  # fmt: skip
ATTRS = st.lists(st.tuples(KEYS, VALUES | st.just(NO_VALUE)), max_size=5)
TIMES = st.sampled_from([T0, T0, T0, T0, T0, T0 + 7, 1, 0])
EVENT_NAMES = st.sampled_from(["gen_ai.first_token", "gen_ai.user.message", "e"])
IDS = {"ok": {}, "zero_trace": {"trace_id": bytes(16)}, "short_span": {"span_id": b"\x01" * 7},
       "long_parent": {"parent_span_id": b"\x01" * 9}}  # fmt: skip
SPANS = st.fixed_dictionaries(
    {
        "ids": st.sampled_from(["ok"] * 9 + ["zero_trace", "short_span", "long_parent"]),
        "start_time_unix_nano": TIMES,
        "duration": st.sampled_from([0, 1_500_000, 1_500_000, 3, -1]),
        "kind": st.integers(-1, 7),
        "status": st.tuples(st.integers(0, 4), st.text(max_size=3)),
        "name": st.text(max_size=5),
        "attrs": ATTRS,
        "events": st.lists(st.tuples(TIMES, EVENT_NAMES, ATTRS), max_size=2),
        "links": st.lists(st.tuples(st.binary(max_size=17), st.binary(max_size=9), ATTRS), max_size=2),
    }
)  # fmt: skip
SCOPES = st.lists(st.tuples(st.none() | st.text(max_size=3), st.lists(SPANS, min_size=1, max_size=5)), min_size=1, max_size=3)  # fmt: skip
REQUESTS = st.lists(st.tuples(st.none() | ATTRS, SCOPES), min_size=1, max_size=3)


def _build(resources: list[tuple[Any, Any]], counter: list[int]) -> bytes:
    message = ExportTraceServiceRequest()
    for attrs, scopes in resources:
        resource_spans = message.resource_spans.add()
        if attrs is not None:
            set_attrs(resource_spans.resource.attributes, attrs)
        for scope, spans in scopes:
            scope_spans = resource_spans.scope_spans.add()
            if scope is not None:
                scope_spans.scope.name = scope
            for spec in spans:
                fields = dict(spec)
                counter[0] += 1
                fields.update(IDS[fields.pop("ids")])
                end = fields["start_time_unix_nano"] + fields.pop("duration")
                fields["end_time_unix_nano"] = max(0, end)
                add_span(scope_spans, counter[0], **fields)
    return message.SerializeToString()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    requests=st.lists(REQUESTS, min_size=1, max_size=3),
    framing=st.sampled_from(["varint", "uint32"]),
    name=st.sampled_from(["random.pb", "random.pb.gz"]),
    batch_spans=st.sampled_from([1, 4, BIG]),
)
def test_random_requests(
    tmp_path: Path, requests: list[Any], framing: str, name: str, batch_spans: int
) -> None:
    counter = [0]
    messages = [_build(r, counter) for r in requests]
    assert_same_decoding(write_pb(tmp_path / name, messages, framing), batch_spans=batch_spans)
