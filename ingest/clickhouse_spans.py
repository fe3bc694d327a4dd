"""Canonical spans in SQL over the Collector's ``otel_traces``, generated from the conventions file.

``spans_select_sql(source)`` is a ClickHouse ``SELECT`` returning exactly ``SPAN_SCHEMA``'s
columns, in order, from a table in the exporter's layout (``ingest.clickhouse_rows``). Every
convention column is generated from ``conventions.toml``, the file the ingest normalizer is
compiled from (checked against ``load_normalizer()`` so the two cannot drift): a column is the
first source, in precedence order, that yields a value, with the normalizer's coercions
(``int``/``float`` parsing, ``scale``, ``lower``/``map``/``keep_unmapped``, ``attr_json``,
``indexed`` message lists, ``event``/``event_attr``, ``since_start``, ``messages``, the 16-hex
sha256 of ``hash`` columns). A source option the generator does not know raises ValueError.

Types: text ``Nullable(String)`` (``project``/``trace_id``/``span_id``: ``String``), integers
``Nullable(Int64)``, floats ``Nullable(Float64)``, times ``DateTime64(9, 'UTC')``, maps
``Map(String, String)``, ``events``/``links`` arrays of named tuples. ClickHouse has no
``Nullable(Array)``: where the lake holds NULL for ``finish_reasons``, ``events`` or ``links``
this gives ``[]``. That is lossless: the lake never stores an empty list there (``SpanBuilder``
and ``ingest.conventions._to_string_list`` turn an empty list into NULL), so ``[]`` here means
exactly NULL there.

The other fixed columns: ``project`` the resource attribute ``flywheel.project`` (else
``default``), which ``resource_attributes`` then leaves out; ``attributes`` every span attribute
(the normalizer keeps all of them, consumed or not); ``kind``/``status_code`` upper-cased;
``end_time`` ``Timestamp`` + ``Duration`` ns. Rows the normalizer would reject (no or zero ids,
no start time, an end before the start) are filtered out.

Gaps. Where SQL cannot tell what the normalizer would give, the column is NULL rather than a
guess (an internal marker stops the precedence chain, so no later source answers instead):

* message text (``input_text``, ``output_text``, ``system_prompt_hash``): the OTel GenAI parts,
  OpenAI chat/choices, Gemini contents/candidates, Vercel prompt and Langfuse shapes are read as
  ``ingest.messages`` does, but NULL when the message text sits more than three objects deep,
  when a tool call's ``arguments`` object holds a float, nested object or array, or a string
  with a control character other than tab/newline/CR/backspace/form feed (the normalizer
  renders it with Python's ``json.dumps``), or when a tool call's name is not a string;
* ``finish_reasons`` items that are JSON floats, objects or arrays (rendered with Python's
  ``str``) make the column NULL (``[]``);
* a string column read by ``attr_json`` from a JSON float, object or array is NULL;
* ``ttft_ms`` from ``langfuse.observation.completion_start_time`` is NULL unless the time is
  ``YYYY-MM-DD[T ]hh:mm:ss[.1-9 digits](Z|±hh:mm)``: other ISO 8601 forms Python accepts.

Differences the exporter's text rendering makes unavoidable (it keeps no value types):

* an attribute sent as a structured OTLP value (array, kvlist) or a number where the normalizer
  wants message text: the lake gets NULL when no message is found (it returns unparsed text only
  for string attributes), here the JSON text is returned; the same holds for a non-string
  ``indexed`` content value. A string column fed by a double, array or kvlist attribute holds
  the exporter's text (``1`` for 1.0, compact JSON) where the lake holds Python's (``1.0``,
  ``json.dumps`` with spaces); a ``string_list`` from an empty OTLP value is ``['']`` here;
* duplicate JSON keys: ClickHouse reads the first, Python the last;
* ``lower`` lower-cases with ``lowerUTF8`` (Python's ``str.lower`` also handles a few special
  cases such as U+0130); numbers are parsed with ``toInt64OrNull``/``toFloat64OrNull`` after
  trimming ASCII whitespace (Python also accepts ``1_000`` and Unicode digits).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from itertools import count
from typing import Any

from ingest.conventions import load_normalizer
from store.clickhouse import PROJECT_ATTRIBUTE
from store.schema import DEFAULT_PROJECT, SPAN_SCHEMA

__all__ = ["spans_select_sql"]

_SOURCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_KNOWN_OPTIONS = frozenset(
    {"attr", "attr_json", "indexed", "role_key", "content_key", "event", "event_attr"}
    | {"scale", "map", "keep_unmapped", "lower", "messages", "since_start"}
)
_DEPTH = 3  # nested message objects read before giving up (the normalizer recurses freely)
_UNSUPPORTED = "'\\x00FLYWHEEL_UNSUPPORTED\\x00'"  # stops a text chain: the column is NULL
_NAN = "nan"  # the same for float columns (the normalizer never yields NaN)
_TIME = "DateTime64(9, 'UTC')"
_MAP = "Map(String, String)"
_SQL_TYPES = {"string": "Nullable(String)", "hash": "Nullable(String)"}
_SQL_TYPES |= {"int": "Nullable(Int64)", "float": "Nullable(Float64)"}
_SQL_TYPES |= {"string_list": "Array(String)"}
# (SQL literal, SQL literal) pairs: what Python's json.dumps escapes in a string.
_PY_JSON_ESCAPES = (
    (r"'\\'", r"'\\\\'"),
    (r"""'"'""", r"""'\\"'"""),
    (r"'\n'", r"'\\n'"),
    (r"'\r'", r"'\\r'"),
    (r"'\t'", r"'\\t'"),
    (r"'\b'", r"'\\b'"),
    (r"'\f'", r"'\\f'"),
)


def _q(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


class _Sql:
    """Builds expressions; lambda variables get fresh names so nested lambdas never shadow."""

    def __init__(self) -> None:
        self._names = count()

    def var(self) -> str:
        return f"_v{next(self._names)}"

    def let(self, value: str, body: Callable[[str], str]) -> str:
        """``body`` over ``value`` computed once (a one-element arrayMap)."""
        v = self.var()
        return f"arrayMap({v} -> {body(v)}, [{value}])[1]"

    def lam(self, body: Callable[[str], str]) -> str:
        v = self.var()
        return f"{v} -> {body(v)}"

    # --- numbers and text, as ingest.conventions._to_string, _to_int, _to_float ---------

    def py_int(self, text: str) -> str:
        def body(s: str) -> str:
            f = f"toFloat64OrNull({s})"
            return (
                f"coalesce(toInt64OrNull({s}), if(isFinite({f}) AND {f} = trunc({f}) "
                f"AND abs({f}) < 9.2e18, toInt64({f}), NULL))"
            )

        return self.let(f"trimBoth({text})", body)

    def py_float(self, text: str) -> str:
        return self.let(
            f"toFloat64OrNull(trimBoth({text}))", lambda f: f"if(isFinite({f}), {f}, NULL)"
        )

    def parsed(self, value: str) -> str:
        """``messages.parse_json_value``: (1, JSON text) for a container, else (0, the text)."""

        def second(s1: str) -> str:
            t = f"replaceRegexpOne({s1}, '^\\\\s+', '')"
            return (
                f"if(substring({t}, 1, 1) IN ('[', '{{', '\"') AND isValidJSON({t}), "
                f"if(JSONType({t}) = 'String', tuple(0, JSONExtractString({t})), tuple(1, {t})), "
                f"tuple(0, {s1}))"
            )

        def body(v: str) -> str:
            return (
                f"multiIf(NOT (substring({v}, 1, 1) IN ('[', '{{', '\"') AND isValidJSON({v})), "
                f"tuple(0, {v}), JSONType({v}) != 'String', tuple(1, {v}), "
                f"{self.let(f'JSONExtractString({v})', second)})"
            )

        return self.let(value, body)

    # --- ingest.messages, to a fixed depth --------------------------------------------------

    def part_text(self, p: str) -> str:
        type_ok = (
            f"(NOT JSONHas({p}, 'type') OR JSONType({p}, 'type') = 'Null' OR "
            f"JSONExtractString({p}, 'type') IN ('text', 'input_text', 'output_text'))"
        )
        return (
            f"multiIf(JSONType({p}) = 'String', JSONExtractString({p}), "
            f"JSONType({p}) = 'Object' AND {type_ok}, "
            f"multiIf(JSONType({p}, 'content') = 'String', JSONExtractString({p}, 'content'), "
            f"JSONType({p}, 'text') = 'String', JSONExtractString({p}, 'text'), NULL), NULL)"
        )

    def leaf_text(self, c: str) -> str:
        """``content_text`` of a string or a list of parts (None for anything else)."""
        parts = self.lam(lambda x: f"coalesce({self.part_text(x)}, '')")
        nonempty = self.lam(lambda t: f"{t} != ''")
        joined = (
            f"nullIf(arrayStringConcat(arrayFilter({nonempty}, "
            f"arrayMap({parts}, JSONExtractArrayRaw({c}))), '\\n'), '')"
        )
        return (
            f"multiIf(JSONType({c}) = 'String', JSONExtractString({c}), "
            f"JSONType({c}) = 'Array', {joined}, NULL)"
        )

    def read(self, candidate: str, depth: int) -> str:
        """One (how, raw JSON) candidate's text: how 0 ``message_text``, 1 ``content_text``,
        2 a ``text`` field (strings only). One reader per depth keeps the SQL linear in depth."""

        def body(x: str) -> str:
            raw = f"{x}.2"
            whole = _UNSUPPORTED if depth < 0 else self.message_object(raw, depth)
            message = f"if(JSONType({raw}) = 'Object', {whole}, {self.leaf_text(raw)})"
            content = self.let(
                message,
                lambda t: (
                    f"if({x}.1 = 1 AND JSONType({raw}) = 'Object', "
                    f"coalesce(nullIf({self.part_text(raw)}, ''), {t}), {t})"
                ),
            )
            text_field = f"if(JSONType({raw}) = 'String', JSONExtractString({raw}), NULL)"
            return f"if({x}.1 = 2, {text_field}, {content})"

        return self.let(candidate, body)

    def first_read(self, candidates: str, depth: int) -> str:
        """The first candidate (present: raw not ``''``) whose text is not None."""
        present = self.lam(lambda x: f"{x}.2 != ''")
        found = self.lam(lambda t: f"{t} IS NOT NULL")
        read = self.lam(lambda x: self.read(x, depth))
        return f"arrayFirst({found}, arrayMap({read}, arrayFilter({present}, {candidates})))"

    def message_object(self, m: str, depth: int) -> str:
        """``message_text`` of an object: parts, content, text, an inner message, tool calls."""
        inner = f"if(JSONType({m}, 'message') = 'Object', JSONExtractRaw({m}, 'message'), '')"
        fields = ", ".join(
            f"(1, JSONExtractRaw({m}, {_q(k)}))" for k in ("parts", "content", "text")
        )
        return self.let(
            self.first_read(f"[{fields}, (0, {inner})]", depth - 1),
            lambda t: (
                f"if({t} IS NOT NULL, {t}, if(JSONType({m}, 'message') = 'Object', NULL, "
                f"{self.tool_calls_text(m)}))"
            ),
        )

    def py_json_string(self, s: str) -> str:
        """Python's ``json.dumps`` of a string (ensure_ascii=False)."""
        escaped = s
        for raw, sql in _PY_JSON_ESCAPES:
            escaped = f"replaceAll({escaped}, {raw}, {sql})"
        return (
            f"if(match({s}, '[\\\\x00-\\\\x07\\\\x0b\\\\x0e-\\\\x1f]'), {_UNSUPPORTED}, "
            f"concat('\"', {escaped}, '\"'))"
        )

    def py_json_object(self, o: str) -> str:
        """``json.dumps(o, sort_keys=True)`` of a flat object (text, integer, bool, null values)."""

        def value(r: str) -> str:
            return (
                f"multiIf(JSONType({r}) = 'String', {self.py_json_string(f'JSONExtractString({r})')}, "
                f"JSONType({r}) IN ('Int64', 'UInt64', 'Bool'), {r}, JSONType({r}) = 'Null', "
                f"'null', {_UNSUPPORTED})"
            )

        def body(keys: str) -> str:
            item = self.lam(
                lambda k: (
                    f"concat({self.py_json_string(k)}, ': ', "
                    f"{self.let(f'JSONExtractRaw({o}, {k})', value)})"
                )
            )
            return (
                f"if(length({keys}) != length(arrayDistinct({keys})), {_UNSUPPORTED}, "
                f"concat('{{', arrayStringConcat(arrayMap({item}, {keys}), ', '), '}}'))"
            )

        return self.let(f"arraySort(JSONExtractKeys({o}))", body)

    def call_text(self, f: str) -> str:
        name = (
            f"multiIf(NOT JSONHas({f}, 'name'), '?', JSONType({f}, 'name') = 'String', "
            f"JSONExtractString({f}, 'name'), {_UNSUPPORTED})"
        )
        raw_arguments = f"JSONExtractRaw({f}, 'arguments')"
        args = (
            f"multiIf(JSONType({f}, 'arguments') = 'Null', '', JSONType({f}, 'arguments') = "
            f"'String', JSONExtractString({f}, 'arguments'), JSONType({f}, 'arguments') = "
            f"'Object', {self.py_json_object(raw_arguments)}, "
            f"{_UNSUPPORTED})"
        )
        return f"concat({name}, '(', {args}, ')')"

    def tool_calls_text(self, m: str) -> str:
        is_call = self.lam(
            lambda p: f"JSONType({p}) = 'Object' AND JSONExtractString({p}, 'type') = 'tool_call'"
        )
        part_call = self.lam(self.call_text)
        is_tool = self.lam(
            lambda c: (
                f"JSONType({c}) = 'Object' AND (NOT JSONHas({c}, 'function') OR "
                f"JSONType({c}, 'function') = 'Object')"
            )
        )
        tool_call = self.lam(
            lambda c: self.call_text(
                f"if(JSONHas({c}, 'function'), JSONExtractRaw({c}, 'function'), {c})"
            )
        )
        parts = f"arrayMap({part_call}, arrayFilter({is_call}, JSONExtractArrayRaw({m}, 'parts')))"
        tools = (
            f"arrayMap({tool_call}, arrayFilter({is_tool}, JSONExtractArrayRaw({m}, 'tool_calls')))"
        )
        return f"nullIf(arrayStringConcat(arrayConcat({parts}, {tools}), '\\n'), '')"

    def messages_of(self, j: str) -> str:
        """``messages._messages_of``: the raw message objects, ``[]`` for None."""

        def check(a: str) -> str:
            is_object = self.lam(lambda x: f"JSONType({x}) = 'Object'")
            has_role = self.lam(lambda x: f"JSONHas({x}, 'role')")
            return (
                f"if(length({a}) > 0 AND arrayAll({is_object}, {a}) AND "
                f"arrayExists({has_role}, {a}), {a}, [])"
            )

        inner = f"multiIf(JSONType({j}) = 'Array', {j}, " + ", ".join(
            f"JSONType({j}, {_q(k)}) = 'Array', JSONExtractRaw({j}, {_q(k)})"
            for k in ("messages", "contents", "input")
        )
        return self.let(f"JSONExtractArrayRaw({inner}, '[]'))", check)

    @staticmethod
    def role(x: str) -> str:
        return (
            f"lowerUTF8(if(JSONType({x}, 'role') = 'String', JSONExtractString({x}, 'role'), ''))"
        )

    def found_text(self, j: str, mode: str) -> str:
        """The text of a parsed JSON container in one mode, before the plain-text fallback."""
        if mode == "text":
            return self.first_read(f"[(1, {j})]", _DEPTH)
        if mode == "first_output":
            return self.first_output(j)
        roles = ("user", "human") if mode == "last_user" else ("system", "developer")
        keys = ("prompt",) if mode == "last_user" else ("system", "system_instruction")
        from_object = ", ".join(f"(1, JSONExtractRaw({j}, {_q(k)}))" for k in keys)
        chosen = self.lam(lambda x: f"{self.role(x)} IN {tuple(roles)!r}")
        as_message = self.lam(lambda x: f"(0, {x})")

        def body(msgs: str) -> str:
            picked = f"arrayMap({as_message}, arrayFilter({chosen}, {msgs}))"
            fallback = f"if(JSONType({j}) = 'Object', [{from_object}], [])"
            if mode == "last_user":
                last = f"if(length({picked}) > 0, [{picked}[-1]], [])"
                return self.first_read(f"arrayConcat({last}, {fallback})", _DEPTH)

            def joined(texts: str) -> str:
                nonempty = self.lam(lambda t: f"{t} != ''")
                blank = self.lam(lambda t: f"ifNull({t}, '')")
                found = self.lam(lambda t: f"{t} IS NOT NULL")
                mine = f"arraySlice({texts}, 1, length({picked}))"
                rest = f"arraySlice({texts}, length({picked}) + 1)"
                text = f"nullIf(arrayStringConcat(arrayFilter({nonempty}, arrayMap({blank}, {mine})), '\\n'), '')"
                return f"coalesce({text}, arrayFirst({found}, {rest}))"

            read = self.lam(lambda x: self.read(x, _DEPTH))
            return self.let(f"arrayMap({read}, arrayConcat({picked}, {fallback}))", joined)

        return self.let(self.messages_of(j), body)

    def first_output(self, j: str) -> str:
        """``messages._first_output`` of a parsed JSON container."""

        def truthy(r: str) -> str:
            return f"NOT ({r} IN ('', 'null', 'false', '\"\"', '[]', '{{}}') OR toFloat64OrNull({r}) = 0)"

        raw_choices = f"JSONExtractRaw({j}, 'choices')"
        # choices = value.get("choices") or value.get("candidates"); read if a non-empty list
        choices = (
            f"multiIf(JSONType({j}, 'choices') = 'Array' AND JSONLength({j}, 'choices') > 0, "
            f"{raw_choices}, {truthy(raw_choices)}, '[]', JSONExtractRaw({j}, 'candidates'))"
        )

        def fields(o: str, keys: Sequence[str]) -> str:
            return ", ".join(
                f"({2 if k == 'text' else 0}, JSONExtractRaw({o}, {_q(k)}))" for k in keys
            )

        def from_object(first: str) -> str:
            choice = fields(first, ("message", "content", "text", "delta"))
            value = fields(j, ("message", "content", "text", "output", "response"))
            return f"if(JSONType({first}) = 'Object', [{choice}, {value}], [{value}])"

        def from_messages(msgs: str) -> str:
            is_output = self.lam(lambda x: f"{self.role(x)} IN ('assistant', 'model', 'ai')")
            target = self.let(
                f"arrayFilter({is_output}, {msgs})",
                lambda outs: f"if(length({outs}) > 0, {outs}[1], {msgs}[1])",
            )
            candidates = (
                f"multiIf(JSONType({j}) = 'Object', "
                f"{self.let(f'JSONExtractArrayRaw({choices})[1]', from_object)}, "
                f"length({msgs}) > 0, [(0, {target})], [])"
            )
            found = self.first_read(candidates, _DEPTH)
            return (
                f"if(JSONType({j}) = 'Array' AND length({msgs}) = 0, {self.leaf_text(j)}, {found})"
            )

        return self.let(self.messages_of(j), from_messages)

    def extract_text(self, value: str, mode: str) -> str:
        """``messages.extract_text`` of an attribute's text (known present)."""

        def with_value(v: str) -> str:
            def with_parsed(p: str) -> str:
                plain = "NULL" if mode == "system" else f"{p}.2"

                def container(j: str) -> str:
                    empty = f"JSONLength({j}) = 0"
                    found = self.found_text(j, mode)
                    if mode == "system":
                        return f"if({empty}, NULL, {found})"
                    no_messages = " OR ".join(
                        f"(JSONType({j}, {_q(k)}) = 'Array' AND JSONLength({j}, {_q(k)}) = 0)"
                        for k in ("messages", "contents", "input")
                    )
                    fallback = f"if(JSONType({j}) = 'Object' AND ({no_messages}), NULL, {v})"
                    return self.let(
                        found, lambda t: f"if({empty}, NULL, if({t} IS NULL, {fallback}, {t}))"
                    )

                return f"if({p}.1 = 0, {plain}, {self.let(f'{p}.2', container)})"

            return self.let(self.parsed(v), with_parsed)

        return self.let(value, with_value)


# --- sources and columns ----------------------------------------------------------------------


def _indexed(sql: _Sql, spec: Mapping[str, Any], mode: str) -> str:
    """A flattened message list (``prefix.<i>.role``/``content``) read in one mode."""
    prefix, role_key, content_key = spec["indexed"], spec["role_key"], spec["content_key"]
    pattern = f"^{re.escape(prefix)}\\.([0-9]+)\\.({re.escape(role_key)}|{re.escape(content_key)})$"
    leading_zero = f"^{re.escape(prefix)}\\.0[0-9]"
    keys = "mapKeys(SpanAttributes)"

    def key(i: str, suffix: str) -> str:
        return f"concat({_q(prefix + '.')}, toString({i}), {_q('.' + suffix)})"

    entry = sql.lam(
        lambda i: (
            f"tuple(mapContains(SpanAttributes, {key(i, role_key)}), "
            f"lowerUTF8(SpanAttributes[{key(i, role_key)}]), "
            f"mapContains(SpanAttributes, {key(i, content_key)}), SpanAttributes[{key(i, content_key)}])"
        )
    )
    matches = sql.lam(lambda k: f"match({k}, {_q(pattern)})")
    index = sql.lam(lambda k: f"toUInt64(extract({k}, {_q(pattern)}))")
    indices = f"arraySort(arrayDistinct(arrayMap({index}, arrayFilter({matches}, {keys}))))"

    def read(msgs: str) -> str:
        def having(roles: Sequence[str]) -> str:
            test = sql.lam(lambda m: f"{m}.1 AND {m}.2 IN {tuple(roles)!r}")
            return f"arrayFilter({test}, {msgs})"

        def text(m: str) -> str:
            return f"if({m}.3, {m}.4, NULL)"

        has_role = sql.lam(lambda m: f"{m}.1")
        if mode == "last_user":
            found = sql.let(
                having(("user", "human")),
                lambda u: f"if(length({u}) > 0, {text(f'{u}[-1]')}, NULL)",
            )
        elif mode == "system":
            content = sql.lam(lambda m: f"{m}.4")
            nonempty = sql.lam(lambda m: f"{m}.3 AND {m}.4 != ''")
            found = (
                f"nullIf(arrayStringConcat(arrayMap({content}, arrayFilter({nonempty}, "
                f"{having(('system', 'developer'))})), '\\n'), '')"
            )
        elif mode == "first_output":
            outputs = having(("assistant", "model", "ai"))
            found = sql.let(outputs, lambda o: text(f"if(length({o}) > 0, {o}[1], {msgs}[1])"))
            content = sql.lam(lambda m: f"if({m}.3, {m}.4, '')")
            nonempty = sql.lam(lambda t: f"{t} != ''")
            no_roles = (
                f"nullIf(arrayStringConcat(arrayFilter({nonempty}, arrayMap({content}, {msgs})), "
                "'\\n'), '')"
            )
            return f"if(arrayExists({has_role}, {msgs}), {found}, {no_roles})"
        else:
            raise ValueError(f"conventions: indexed messages in mode {mode!r} are not generated")
        return f"if(arrayExists({has_role}, {msgs}), {found}, NULL)"

    trigger = " OR ".join(
        f"mapContains(SpanAttributes, {_q(f'{prefix}.0.{k}')})" for k in (role_key, content_key)
    )
    odd = sql.lam(lambda k: f"match({k}, {_q(leading_zero)})")
    return (
        f"if({trigger}, if(arrayExists({odd}, {keys}), {_UNSUPPORTED}, "
        f"{sql.let(f'arrayMap({entry}, {indices})', read)}), NULL)"
    )


def _json_field(sql: _Sql, text: str, field: str, column_type: str) -> str:
    """``attr_json``: one field of the JSON object an attribute holds, coerced."""

    def read(r: str) -> str:
        kind = f"JSONType({r})"
        string = f"JSONExtractString({r})"
        if column_type == "int":
            return (
                f"multiIf({kind} = 'String', {sql.py_int(string)}, "
                f"{kind} IN ('Int64', 'UInt64', 'Double'), {sql.py_int(r)}, NULL)"
            )
        if column_type == "float":
            return (
                f"multiIf({kind} = 'String', {sql.py_float(string)}, "
                f"{kind} IN ('Int64', 'UInt64', 'Double'), {sql.py_float(r)}, NULL)"
            )
        return (
            f"multiIf({kind} = 'String', nullIf({string}, ''), {kind} IN ('Int64', 'UInt64', "
            f"'Bool'), {r}, {kind} = 'Null', NULL, {_UNSUPPORTED})"
        )

    def from_parsed(p: str) -> str:
        raw = f"JSONExtractRaw({p}.2, {_q(field)})"
        return f"if({p}.1 = 1 AND JSONType({p}.2) = 'Object', {sql.let(raw, read)}, NULL)"

    return sql.let(sql.parsed(text), from_parsed)


def _since_start(sql: _Sql, text: str) -> str:
    """An RFC 3339 time minus the span's start, in ms (NaN: a form Python may read but SQL does not)."""
    start = "toUnixTimestamp64Nano(Timestamp)"

    def read(t: str) -> str:
        moment = f"toUnixTimestamp64Nano(parseDateTime64BestEffortOrNull({t}, 9, 'UTC'))"
        strict = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
        naive = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$"
        return (
            f"multiIf(match({t}, {_q(strict)}), ifNull(({moment} - {start}) / 1e6, {_NAN}), "
            f"match({t}, {_q(naive)}), NULL, match({t}, '^\\\\d{{4}}-'), {_NAN}, NULL)"
        )

    stripped = f"replaceRegexpAll(replaceRegexpAll({text}, '^\\\\s+|\\\\s+$', ''), '^\"+|\"+$', '')"
    return sql.let(stripped, read)


def _transform(sql: _Sql, spec: Mapping[str, Any], text: str, column_type: str) -> str:
    """An attribute's text through the source's modifiers and the column's coercion."""
    if "attr_json" in spec:
        if set(spec) - {"attr_json"}:
            raise ValueError(f"conventions: attr_json with modifiers is not generated: {spec}")
        return _json_field(sql, text, spec["attr_json"][1], column_type)
    if spec.get("since_start"):
        if column_type != "float":
            raise ValueError(f"conventions: since_start needs a float column: {spec}")
        return _since_start(sql, text)
    value = text
    if spec.get("lower"):
        value = f"lowerUTF8({value})"
    if "map" in spec:
        mapping: Mapping[str, str] = spec["map"]
        keys, targets = _list(list(mapping)), _list(list(mapping.values()))
        keep = bool(spec.get("keep_unmapped"))
        value = sql.let(
            value,
            lambda x: (
                f"if(has({keys}, {x}), transform({x}, {keys}, {targets}, ''), "
                f"{x if keep else 'NULL'})"
            ),
        )
    if "scale" in spec:
        if column_type != "float":
            raise ValueError(f"conventions: scale needs a float column: {spec}")
        return f"{sql.py_float(value)} * {float(spec['scale'])!r}"
    return _coerce_text(sql, value, column_type)


def _coerce_text(sql: _Sql, value: str, column_type: str) -> str:
    if column_type == "int":
        return sql.py_int(value)
    if column_type == "float":
        return sql.py_float(value)
    return f"nullIf({value}, '')"


def _string_list(sql: _Sql, text: str) -> str:
    """``ingest.conventions._to_string_list(value)``: ``[text]``, a JSON list's items, or ``[]`` for None."""
    item = sql.lam(
        lambda x: (
            f"multiIf(JSONType({x}) = 'String', JSONExtractString({x}), JSONType({x}) IN "
            f"('Int64', 'UInt64'), {x}, JSONType({x}) = 'Bool', if({x} = 'true', 'True', 'False'), "
            f"{_UNSUPPORTED})"
        )
    )
    not_null = sql.lam(lambda x: f"JSONType({x}) != 'Null'")

    def read(p: str) -> str:
        items = f"arrayMap({item}, arrayFilter({not_null}, JSONExtractArrayRaw({p}.2)))"
        return f"if({p}.1 = 0, [{p}.2], if(JSONType({p}.2) = 'Array', {items}, []))"

    return sql.let(sql.parsed(text), read)


def _event_index(sql: _Sql, names: Sequence[str]) -> str:
    is_named = sql.lam(lambda n: f"{n} IN {_list(names).replace('[', '(').replace(']', ')')}")
    return f"arrayFirstIndex({is_named}, Events.Name)"


def _source_value(sql: _Sql, spec: Mapping[str, Any]) -> tuple[str, str] | None:
    """(present, text) of an attribute or event-attribute source; None for other sources."""
    if "attr" in spec or "attr_json" in spec:
        key = _q(spec["attr"] if "attr" in spec else spec["attr_json"][0])
        return f"mapContains(SpanAttributes, {key})", f"SpanAttributes[{key}]"
    if "event" in spec and "event_attr" in spec and not spec.get("since_start"):
        index = _event_index(sql, spec["event"])
        attr = _q(spec["event_attr"])
        return (
            f"({index} > 0 AND mapContains(Events.Attributes[{index}], {attr}))",
            f"Events.Attributes[{index}][{attr}]",
        )
    return None


def _column(sql: _Sql, name: str, column_type: str, specs: Sequence[Mapping[str, Any]]) -> str:
    """One convention column: the first source with a value, coerced, cast to its SQL type."""
    empty = "[]" if column_type == "string_list" else "NULL"
    exprs: list[str] = []
    modes: dict[str, list[tuple[str, str]]] = {}
    slots: list[tuple[str, int]] = []  # per message source: (mode, position among that mode)
    for spec in specs:
        unknown = set(spec) - _KNOWN_OPTIONS
        if unknown:
            raise ValueError(f"conventions: {name}: no SQL for source options {sorted(unknown)}")
        value = _source_value(sql, spec)
        mode = spec.get("messages")
        if mode is not None and "indexed" not in spec:
            if value is None or set(spec) & {"lower", "map", "scale", "attr_json", "since_start"}:
                raise ValueError(f"conventions: {name}: messages source not generated: {spec}")
            modes.setdefault(mode, []).append(value)
            slots.append((mode, len(modes[mode])))
            exprs.append("")  # filled in once the mode's results have a name
            continue
        if "indexed" in spec:
            expr = _indexed(sql, spec, mode or "")
            exprs.append(
                _coerce_text(sql, expr, column_type)
                if column_type != "string"
                else f"nullIf({expr}, '')"
            )
            continue
        if "event" in spec and spec.get("since_start"):
            index = _event_index(sql, spec["event"])
            exprs.append(
                f"if({index} > 0, (toUnixTimestamp64Nano(Events.Timestamp[{index}]) - "
                f"toUnixTimestamp64Nano(Timestamp)) / 1e6, NULL)"
            )
            continue
        if value is None:
            exprs.append(empty)  # an event source with nothing to read: never a value
            continue
        present, text = value
        if column_type == "string_list":
            if set(spec) != {"attr"}:
                raise ValueError(f"conventions: {name}: string_list source not generated: {spec}")
            exprs.append(f"if({present}, {_string_list(sql, text)}, [])")
        else:
            exprs.append(f"if({present}, {_transform(sql, spec, text, column_type)}, NULL)")

    def assemble(results: dict[str, str]) -> str:
        filled = iter(slots)
        parts = []
        for expr in exprs:
            if expr:
                parts.append(expr)
            else:
                mode, position = next(filled)
                text = f"{results[mode]}[{position}]"
                parts.append(
                    _coerce_text(sql, text, column_type)
                    if column_type != "string" and column_type != "hash"
                    else f"nullIf({text}, '')"
                )
        if column_type == "string_list":
            some = sql.lam(lambda a: f"length({a}) > 0")
            first = f"arrayFirst({some}, [{', '.join(parts)}])" if parts else "[]"
            return sql.let(first, lambda a: f"if(has({a}, {_UNSUPPORTED}), [], {a})")
        first = f"coalesce({', '.join(parts)})" if parts else "NULL"
        if column_type == "float":
            return sql.let(first, lambda x: f"if(isNaN({x}), NULL, {x})")
        if column_type == "int":
            return first
        checked = sql.let(
            first, lambda x: f"if(position(ifNull({x}, ''), {_UNSUPPORTED}) > 0, NULL, {x})"
        )
        if column_type == "hash":
            return sql.let(
                checked,
                lambda x: f"if({x} IS NULL, NULL, substring(lower(hex(SHA256({x}))), 1, 16))",
            )
        return checked

    def bind(pending: list[str], results: dict[str, str]) -> str:
        if not pending:
            return assemble(results)
        mode, rest = pending[0], pending[1:]
        read = sql.lam(lambda x: f"if({x}.1, {sql.extract_text(f'{x}.2', mode)}, NULL)")
        values = ", ".join(f"tuple({present}, {text})" for present, text in modes[mode])
        return sql.let(f"arrayMap({read}, [{values}])", lambda r: bind(rest, results | {mode: r}))

    return f"CAST({bind(list(modes), {})} AS {_SQL_TYPES[column_type]})"


def _conventions() -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(name, type, sources) of every convention column, as the normalizer compiled them."""
    text = resources.files("ingest").joinpath("conventions.toml").read_text(encoding="utf-8")
    table = tomllib.loads(text)["columns"]
    normalizer = load_normalizer()
    columns = [(name, spec["type"], list(spec.get("sources", []))) for name, spec in table.items()]
    compiled = [(c.name, c.type, len(c.readers)) for c in normalizer.columns]
    if [(n, t, len(s)) for n, t, s in columns] != compiled:
        raise ValueError("conventions.toml and the loaded normalizer disagree; reload both")
    return columns


#: The columns that are not conventions: straight from the exporter's columns.
_FIXED = {
    "project": f"coalesce(nullIf(ResourceAttributes[{_q(PROJECT_ATTRIBUTE)}], ''), "
    f"{_q(DEFAULT_PROJECT)})",
    "trace_id": "TraceId",
    "span_id": "SpanId",
    "parent_span_id": "nullIf(ParentSpanId, '')",
    "name": "SpanName",
    "kind": "if(SpanKind = '', 'UNSPECIFIED', upper(SpanKind))",
    "service_name": "if(mapContains(ResourceAttributes, 'service.name'), ServiceName, NULL)",
    "scope_name": "nullIf(ScopeName, '')",
    "start_time": "Timestamp",
    "end_time": "Timestamp + toIntervalNanosecond(toInt64(Duration))",
    "duration_ms": "Duration / 1e6",
    "status_code": "if(StatusCode = '', 'UNSET', upper(StatusCode))",
    "status_message": "nullIf(StatusMessage, '')",
    "resource_attributes": f"mapFilter((k, v) -> k != {_q(PROJECT_ATTRIBUTE)}, ResourceAttributes)",
    "attributes": "SpanAttributes",
    "events": "arrayMap((t, n, a) -> tuple(t, n, a), Events.Timestamp, Events.Name, "
    "Events.Attributes)",
    "links": "arrayMap((t, s, a) -> tuple(t, s, a), Links.TraceId, Links.SpanId, Links.Attributes)",
}
_FIXED_TYPES = {
    "project": "String",
    "trace_id": "String",
    "span_id": "String",
    "start_time": _TIME,
    "end_time": _TIME,
    "duration_ms": "Nullable(Float64)",
    "resource_attributes": _MAP,
    "attributes": _MAP,
    "events": f"Array(Tuple(time {_TIME}, name String, attributes {_MAP}))",
    "links": f"Array(Tuple(trace_id String, span_id String, attributes {_MAP}))",
}
#: The spans SpanBuilder.add accepts: ids present and non-zero (the exporter writes '' for a zero
#: id), a start time, and an end not before it (the exporter's unsigned Duration wraps).
_VALID = (
    "TraceId != '' AND SpanId != '' AND toUnixTimestamp64Nano(Timestamp) > 0 "
    "AND Duration < 9223372036854775808"
)


def spans_select_sql(source: str) -> str:
    """A ``SELECT`` of the canonical span columns (``SPAN_SCHEMA`` order) from ``source``.

    ``source`` is a table in the exporter's ``otel_traces`` layout, ``table`` or
    ``database.table``; other text raises ValueError.
    """
    if not _SOURCE.fullmatch(source):
        raise ValueError(f"ClickHouse table {source!r}: name or database.name, letters/digits/_")
    sql = _Sql()
    expressions = {
        name: f"CAST({expr} AS {_FIXED_TYPES.get(name, 'Nullable(String)')})"
        for name, expr in _FIXED.items()
    }
    for name, column_type, specs in _conventions():
        expressions[name] = _column(sql, name, column_type, specs)
    missing = set(SPAN_SCHEMA.names) - set(expressions)
    if missing:
        raise ValueError(f"no SQL for span columns {sorted(missing)}")
    select = ",\n    ".join(f"{expressions[name]} AS {name}" for name in SPAN_SCHEMA.names)
    return f"SELECT\n    {select}\nFROM {source}\nWHERE {_VALID}"
