"""Flywheel's analytics SQL (DuckDB dialect) rewritten for ClickHouse.

The analytics are written once, in DuckDB's dialect; on ClickHouse each statement is parsed
with sqlglot and rewritten before it runs. ``sqlglot.transpile`` alone parses them but its
output does not run (``docs/design/clickhouse-backend.md`` §3.1 lists why); :func:`to_clickhouse`
adds the rewrites below and expands the catalog's table macros (``views.sql``: ``llm_calls_of``,
``trace_parts_of``, ``traces_from_parts``, ``traces_between``, and ``<table>_between``) into
subqueries, since ClickHouse has no table macros.

Rewrites (DuckDB → ClickHouse):

* ``$name`` parameters → ``{name:Type}``, the type taken from the bound Python value
  (:func:`bind`): a datetime is ``DateTime64(6, 'UTC')``, a timedelta is Int64 microseconds;
* ``quantile_cont(x, q)`` → ``quantileExactInclusive(q)(x)`` (a list of levels: the plural
  form), which is DuckDB's linear interpolation exactly;
* ``time_bucket(width, ts)`` → the bucket start computed in integer microseconds from DuckDB's
  origin (Monday 2000-01-03), ``range(t0, t1, width)`` over timestamps → an array of bucket
  starts, ``ts ± width`` → ``addMicroseconds``;
* ``struct_pack`` → a positional ``tuple`` (an ordering key; fields are never read back),
  ``bool_or``/``bool_and`` → ``max``/``min``, ``list_has_any`` → ``hasAny``,
  ``list_position`` → ``nullIf(indexOf(...), 0)``, ``regexp_full_match`` → anchored ``match``
  (RE2 on both engines), ``//`` → ``intDiv``, ``<<``/``>>`` → ``bitShiftLeft``/``Right``;
* ``TIMESTAMPTZ`` → ``DateTime64(6, 'UTC')`` (DuckDB's precision), and ``±infinity`` → the
  ends of DateTime64's range;
* ``ILIKE … ESCAPE '\\'`` → ``ILIKE`` (backslash is ClickHouse's only escape).

What the rewriter cannot express raises :class:`UntranslatableSQL` (an interval literal, an
ordered list aggregate with mixed directions, an unbound parameter); a DuckDB function it does
not know passes through under its own name, and ClickHouse refuses it when the statement runs,
naming it: ``make test`` runs every analytics test on ClickHouse to find them. ``hash()`` differs between the engines
(ClickHouse's ``cityHash64``): Flywheel uses it only to break ties between spans that start in
the same microsecond.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlglot
from sqlglot import exp

from store.clickhouse.structure import (
    Macro,
    UntranslatableSQL,
    _fn,
    boolean_items,
    column_names,
    inline_macros,
    later_using_joins,
    order_by_aliases,
    parse_macros,
    positional_structs,
    rename_ctes,
)

__all__ = [
    "SETTINGS",
    "TIMESTAMP_TYPE",
    "Macro",
    "UntranslatableSQL",
    "bind",
    "parse_macros",
    "to_clickhouse",
]

#: DuckDB's TIMESTAMPTZ (microseconds, UTC) in ClickHouse.
TIMESTAMP_TYPE = "DateTime64(6, 'UTC')"

#: Session settings that give ClickHouse DuckDB's semantics where the analytics depend on them:
#: an unmatched outer-join column is NULL (not 0 or ''), an aggregate over no rows is NULL
#: (not 0 or nan), a name in WHERE means the column even when a select alias reuses it.
SETTINGS: dict[str, Any] = {
    "join_use_nulls": 1,
    "aggregate_functions_null_for_empty": 1,
    "prefer_column_name_to_alias": 1,
    "session_timezone": "UTC",
    # tuple(a, b) of plain columns is a named tuple, as DuckDB's struct_pack(a, b) is
    "enable_named_columns_in_function_tuple": 1,
    "allow_experimental_analyzer": 1,
}

#: DuckDB's origin for time buckets narrower than a month, in microseconds since the epoch.
_BUCKET_ORIGIN_US = 946_857_600_000_000  # 2000-01-03 00:00:00 UTC, a Monday
#: The ends of DateTime64(9)'s range (nanoseconds reach 2262), for ``-infinity`` and ``infinity``.
_NEG_INFINITY = "1900-01-01 00:00:00"
_INFINITY = "2261-12-31 23:59:59"


# --- parameters ---------------------------------------------------------------------------------


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        # Int32 when it fits: Float64 holds every Int32 exactly, so greatest(), least() and
        # CASE can mix the parameter with floats (Int64 and Float64 have no common type).
        return "Int32" if -(2**31) <= value < 2**31 else "Int64"
    if isinstance(value, float):
        return "Float64"
    if isinstance(value, dt.datetime):
        return TIMESTAMP_TYPE
    if isinstance(value, dt.timedelta):
        return "Int64"
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return "Array(String)"
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return "Array(Float64)" if any(isinstance(v, float) for v in value) else "Array(Int64)"
        raise UntranslatableSQL(f"a list parameter of mixed types: {value!r}")
    if value is None:
        return "Nullable(String)"
    return "String"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime parameter: {value!r}")
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.timedelta):
        return str(value // dt.timedelta(microseconds=1))
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_quote(v) if isinstance(v, str) else repr(v) for v in value) + "]"
    if value is None:
        return "\\N"
    if isinstance(value, str):
        # ClickHouse reads a parameter's text in its escaped format: a backslash, tab or
        # newline must be escaped to arrive as itself (a regex's \b would arrive as a backspace)
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return str(value)


def bind(params: Mapping[str, Any]) -> dict[str, str]:
    """Parameter values as ClickHouse's server-side binding takes them (text)."""
    return {name: _text_of(value) for name, value in params.items()}


# --- rewriting ----------------------------------------------------------------------------------


def _us(node: exp.Expression) -> exp.Expression:
    """A timestamp as Int64 microseconds since the epoch, nanoseconds truncated (DuckDB's
    cast of a nanosecond timestamp; ClickHouse's toDateTime64(x, 6) would round)."""
    nanos = _fn("toUnixTimestamp64Nano", _fn("toDateTime64", node, exp.Literal.number(9)))
    return _fn("intDiv", nanos, exp.Literal.number(1000))


def _from_us(node: exp.Expression) -> exp.Expression:
    return _fn("fromUnixTimestamp64Micro", node, exp.Literal.string("UTC"))


def _bucket_start(width_us: exp.Expression, ts: exp.Expression) -> exp.Expression:
    origin = exp.Literal.number(_BUCKET_ORIGIN_US)
    offset = exp.Sub(this=_us(ts), expression=origin)
    floored = exp.Mul(
        this=_fn("intDiv", offset, width_us.copy()), expression=exp.paren(width_us.copy())
    )
    return _from_us(exp.Add(this=floored, expression=origin.copy()))


def _quantile(node: exp.PercentileCont, condition: exp.Expression | None) -> exp.Expression:
    """``quantile_cont(x, q)`` [``FILTER (WHERE c)``]: NULL over no values, as in DuckDB
    (ClickHouse gives nan)."""
    levels = node.expression
    plural = isinstance(levels, exp.Array)
    name = "quantilesExactInclusive" if plural else "quantileExactInclusive"
    args = [node.this.copy()]
    count: exp.Expression = _fn("count", node.this.copy())  # counts the non-NULL values
    if condition is not None:
        name += "If"
        args.append(condition.copy())
        count = _fn("countIf", node.this.copy(), condition.copy())
    quantile = exp.ParameterizedAgg(
        this=name, expressions=list(levels.expressions) if plural else [levels], params=args
    )
    return exp.If(
        this=exp.GT(this=count, expression=exp.Literal.number(0)), true=quantile, false=exp.Null()
    )


def _glob_regex(pattern: exp.Expression) -> exp.Expression:
    """A glob (``*``, ``?``, ``[...]``, ``[!...]``) as an anchored RE2 pattern, in SQL."""
    escaped = _fn(
        "replaceRegexpAll",
        pattern,
        exp.Literal.string(r"([.+^$(){}|\\])"),
        exp.Literal.string(r"\\\1"),
    )
    star = _fn("replaceAll", escaped, exp.Literal.string("*"), exp.Literal.string(".*"))
    one = _fn("replaceAll", star, exp.Literal.string("?"), exp.Literal.string("."))
    negated = _fn("replaceAll", one, exp.Literal.string("[!"), exp.Literal.string("[^"))
    return exp.Concat(expressions=[exp.Literal.string("^(?:"), negated, exp.Literal.string(")$")])


def _ordered_list(order: exp.Order, condition: exp.Expression | None) -> exp.Expression:
    """``list(x ORDER BY k…)`` [``FILTER (WHERE c)``]: ``x`` sorted by the keys (one direction)."""
    value = order.this
    keys = order.expressions
    descending = {bool(k.args.get("desc")) for k in keys}
    if len(descending) != 1:
        raise UntranslatableSQL("an ordered list aggregate with mixed directions")
    key = exp.Tuple(expressions=[k.this.copy() for k in keys])
    pair = exp.Tuple(expressions=[value.copy(), key])
    gathered = (
        _fn("groupArrayIf", pair, condition.copy())
        if condition is not None
        else _fn("groupArray", pair)
    )
    p = exp.to_identifier("_p")
    by_key = exp.Lambda(
        this=_fn("tupleElement", exp.column(p.copy()), exp.Literal.number(2)), expressions=[p]
    )
    sort = "arrayReverseSort" if descending.pop() else "arraySort"
    first = exp.Lambda(
        this=_fn("tupleElement", exp.column(p.copy()), exp.Literal.number(1)),
        expressions=[p.copy()],
    )
    return _fn("arrayMap", first, _fn(sort, by_key, gathered))


class _Rewriter:
    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params
        self.timedeltas = {k for k, v in params.items() if isinstance(v, dt.timedelta)}

    # A timedelta parameter (a bucket width) stands for Int64 microseconds.
    def is_width(self, node: exp.Expression) -> bool:
        if isinstance(node, exp.Cast):
            node = node.this
        return (
            isinstance(node, exp.Placeholder)
            and node.args.get("kind") is None  # not yet rewritten as Int64 microseconds
            and node.name in self.timedeltas
        )

    def width_us(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Cast):
            node = node.this
        if isinstance(node, exp.Placeholder):
            return self.placeholder(node)
        if isinstance(node, exp.Interval):
            raise UntranslatableSQL(f"an interval literal: {node.sql('duckdb')}")
        return node

    def placeholder(self, node: exp.Placeholder) -> exp.Expression:
        if node.name not in self.params:
            raise UntranslatableSQL(f"parameter ${node.name} is not bound")
        kind = _type_of(self.params[node.name])
        return exp.Placeholder(this=node.name, kind=exp.DataType.build(kind, dialect="clickhouse"))

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and node.args.get("kind") is None:
            return self.placeholder(node)
        if isinstance(node, exp.DataType):
            if node.this in (exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMP):
                return exp.DataType.build(TIMESTAMP_TYPE, dialect="clickhouse")
            if node.this == exp.DataType.Type.INT128:
                return exp.DataType.build("Int128", dialect="clickhouse")
            return node
        if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal):
            text = node.this.name.lower()
            if node.this.is_string and text in ("infinity", "-infinity", "+infinity"):
                moment = _NEG_INFINITY if text.startswith("-") else _INFINITY
                return _fn(
                    "toDateTime64",
                    exp.Literal.string(moment),
                    exp.Literal.number(6),
                    exp.Literal.string("UTC"),
                )
        if isinstance(node, exp.Filter) and isinstance(node.this, exp.PercentileCont):
            return _quantile(node.this, node.expression.this)
        if isinstance(node, exp.PercentileCont):
            return _quantile(node, None)
        if isinstance(node, exp.DateBin):  # time_bucket(width, ts[, 'UTC'])
            return _bucket_start(self.width_us(node.this), node.expression)
        if isinstance(node, exp.GenerateSeries):  # range(t0, t1, width) over timestamps
            start, end, step = node.args["start"], node.args["end"], node.args.get("step")
            if step is None or not self.is_width(step):
                return _fn("range", *(a for a in (start, end, step) if a is not None))
            width = self.width_us(step)
            t0 = _us(start)
            count = _fn(
                "intDiv",
                exp.Sub(
                    this=exp.Add(
                        this=exp.Sub(this=_us(end), expression=t0.copy()), expression=width.copy()
                    ),
                    expression=exp.Literal.number(1),
                ),
                width.copy(),
            )
            i = exp.to_identifier("_i")
            element = _from_us(
                exp.Add(
                    this=t0.copy(),
                    expression=exp.Mul(this=exp.column(i.copy()), expression=width.copy()),
                )
            )
            return _fn(
                "arrayMap",
                exp.Lambda(this=element, expressions=[i]),
                _fn("range", _fn("toUInt64", _fn("greatest", count, exp.Literal.number(0)))),
            )
        if isinstance(node, (exp.Add, exp.Sub)) and (
            self.is_width(node.expression) or self.is_width(node.this)
        ):
            ts, width = (
                (node.this, node.expression)
                if self.is_width(node.expression)
                else (node.expression, node.this)
            )
            name = "addMicroseconds" if isinstance(node, exp.Add) else "subtractMicroseconds"
            return _fn(name, ts, self.width_us(width))
        if isinstance(node, exp.Struct):
            return exp.Tuple(
                expressions=[
                    e.expression if isinstance(e, (exp.PropertyEQ, exp.Slice)) else e
                    for e in node.expressions
                ]
            )
        if isinstance(node, exp.LogicalOr):
            return exp.Max(this=node.this)
        if isinstance(node, exp.LogicalAnd):
            return exp.Min(this=node.this)
        if isinstance(node, exp.ArrayOverlaps):
            return _fn("hasAny", node.this, node.expression)
        if isinstance(node, exp.RegexpFullMatch):
            pattern = exp.Concat(
                expressions=[exp.Literal.string("^(?:"), node.expression, exp.Literal.string(")$")]
            )
            return _fn("match", node.this, pattern)
        if isinstance(node, exp.IntDiv):
            return _fn("intDiv", node.this, node.expression)
        if isinstance(node, exp.BitwiseLeftShift):
            return _fn("bitShiftLeft", node.this, node.expression)
        if isinstance(node, exp.BitwiseAnd):
            return _fn("bitAnd", node.this, node.expression)
        if isinstance(node, exp.BitwiseOr):
            return _fn("bitOr", node.this, node.expression)
        if isinstance(node, exp.BitwiseRightShift):
            return _fn("bitShiftRight", node.this, node.expression)
        if (
            isinstance(node, exp.Escape)
            and isinstance(node.this, (exp.ILike, exp.Like))
            and node.expression.name == "\\"
        ):
            return node.this
        if isinstance(node, exp.Literal) and node.is_int and abs(int(node.name)) >= 2**63:
            return _fn("toInt128", exp.Literal.string(node.name))
        if isinstance(node, exp.Glob):
            return _fn("match", node.this, _glob_regex(node.expression))
        if (
            isinstance(node, exp.Filter)
            and isinstance(node.this, exp.ArrayAgg)
            and isinstance(node.this.this, exp.Order)
        ):
            return _ordered_list(node.this.this, node.expression.this)
        if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order):
            return _ordered_list(node.this, None)
        if isinstance(node, (exp.Lead, exp.Lag)) and not (
            isinstance(node.this, exp.Anonymous) and node.this.name == "toNullable"
        ):
            # past the partition's end DuckDB gives NULL, ClickHouse the type's default value
            node.set("this", _fn("toNullable", node.this))
            return node
        if isinstance(node, exp.ArraySort):
            return _fn("arraySort", node.this)
        if isinstance(node, exp.Flatten):
            return _fn("arrayFlatten", node.this)
        if isinstance(node, exp.ArrayAgg) and not isinstance(node.this, (exp.Order, exp.Distinct)):
            return _fn("groupArray", node.this)
        if isinstance(node, exp.Anonymous):
            return self.function(node)
        return node

    def function(self, node: exp.Anonymous) -> exp.Expression:
        name = node.name.lower()
        args = node.expressions
        if name == "list_position":
            return _fn("nullIf", _fn("indexOf", *args), exp.Literal.number(0))
        if name == "epoch_us":  # of a timestamp, or of an interval (a bucket width)
            return self.width_us(args[0]) if self.is_width(args[0]) else _us(args[0])
        if name == "epoch_ns":
            return _fn("toUnixTimestamp64Nano", _fn("toDateTime64", args[0], exp.Literal.number(9)))
        if name == "map_entries":  # a list of {key, value} structs, values of the map's type
            first_value = exp.Bracket(  # sqlglot counts from 0; ClickHouse's [1] is written
                this=_fn("mapValues", args[0].copy()), expressions=[exp.Literal.number(0)]
            )
            value_type = _fn(
                "concat",
                exp.Literal.string("Array(Tuple(key String, value "),
                _fn("toTypeName", first_value),
                exp.Literal.string("))"),
            )
            keys, values = _fn("mapKeys", args[0]), _fn("mapValues", args[0].copy())
            return _fn("CAST", _fn("arrayZip", keys, values), value_type)
        if name == "hash":
            return _fn("cityHash64", *args)
        return node


@functools.lru_cache(maxsize=2048)
def _translate(
    sql: str,
    signature: tuple[tuple[str, str], ...],
    macros_key: int,
    database: str | None,
) -> str:
    params = {name: _SAMPLES[kind] for name, kind in signature}
    macros = _MACRO_SETS[macros_key]
    # DuckDB's len() is a list's length here; sqlglot reads it as a string's (lengthUTF8).
    parsed = sqlglot.parse_one(re.sub(r"\blen\(", "array_length(", sql), read="duckdb")
    assert isinstance(parsed, exp.Expression)
    tree: exp.Expression = parsed
    tree = inline_macros(tree, macros, database)
    tree = boolean_items(positional_structs(tree))
    tree = rename_ctes(order_by_aliases(column_names(later_using_joins(tree))))
    rewriter = _Rewriter(params)
    for _ in range(4):  # transform() does not descend into the nodes it just replaced
        tree = tree.transform(rewriter.rewrite)
    for node in tree.find_all(exp.CTE):
        node.set("materialized", None)
    return tree.sql(dialect="clickhouse")


# A parameter's rewrite depends only on its type: cache by type, rewrite with a sample value.
_SAMPLES: dict[str, Any] = {}
_MACRO_SETS: dict[int, Mapping[str, Macro]] = {}


def _signature_of(value: Any) -> str:
    kind = "timedelta" if isinstance(value, dt.timedelta) else _type_of(value)
    _SAMPLES.setdefault(kind, value)
    return kind


def _named(sql: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``?`` placeholders (outside quotes) as ``$_p1``, ``$_p2``…, with their values."""
    parts = re.split(r"('(?:[^']|'')*'|\"(?:[^\"]|\"\")*\")", sql)
    count = 0
    for i in range(0, len(parts), 2):  # even parts are outside quotes

        def number(_: re.Match[str]) -> str:
            nonlocal count
            count += 1
            return f"$_p{count}"

        parts[i] = re.sub(r"\?", number, parts[i])
    if count != len(values):
        raise UntranslatableSQL(f"{count} placeholders for {len(values)} values")
    return "".join(parts), {f"_p{i}": v for i, v in enumerate(values, start=1)}


def to_clickhouse(
    sql: str,
    params: Mapping[str, Any] | Sequence[Any] | None = None,
    macros: Mapping[str, Macro] | None = None,
    database: str | None = None,
) -> tuple[str, dict[str, str]]:
    """A DuckDB-dialect statement and its parameters, as ClickHouse runs them (the tables the
    expanded ``macros`` read qualified with ``database``)."""
    if params is not None and not isinstance(params, Mapping):
        sql, params = _named(sql, params)
    params = dict(params or {})
    macros = macros or {}
    key = id(macros)
    _MACRO_SETS[key] = macros
    signature = tuple(sorted((name, _signature_of(value)) for name, value in params.items()))
    return _translate(sql, signature, key, database), bind(params)
