"""Statement-level rewrites for ClickHouse: table macros expanded, names and scopes made safe.

DuckDB resolves names per query block; ClickHouse's aliases are global to a statement, a CTE's
name is also an identifier in expressions, and its struct-valued aggregates have no named
fields. The passes here (used by :func:`store.clickhouse.transpile.to_clickhouse`) reshape a
parsed statement so it means in ClickHouse what it means in DuckDB: the catalog's table macros
become subqueries with their own table aliases, CTEs get names no column has, struct fields
are read by position, later ``USING`` joins become ``ON``, selected conditions become booleans,
a select alias wins in ORDER BY, and a selected ``t.c`` is named ``c``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

__all__ = [
    "Macro",
    "UntranslatableSQL",
    "boolean_items",
    "column_names",
    "inline_macros",
    "later_using_joins",
    "order_by_aliases",
    "parse_macros",
    "positional_structs",
    "rename_ctes",
]


class UntranslatableSQL(ValueError):
    """A statement uses something the rewriter has no ClickHouse spelling for."""


@dataclass(frozen=True)
class Macro:
    """A DuckDB table macro: ``CREATE MACRO name(params) AS TABLE <select>``."""

    name: str
    params: tuple[str, ...]
    body: str


_MACRO = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?MACRO\s+\"?(\w+)\"?\s*\(([^)]*)\)\s+AS\s+TABLE\s+(.*)",
    re.IGNORECASE | re.DOTALL,
)


def parse_macros(statements: list[str]) -> dict[str, Macro]:
    """The table macros among ``statements`` (``views.sql`` and the catalog's), by name."""
    macros = {}
    for statement in statements:
        code = "\n".join(ln for ln in statement.splitlines() if not ln.lstrip().startswith("--"))
        match = _MACRO.match(code.strip())
        if match:
            name, params, body = match.groups()
            names = tuple(p.strip() for p in params.split(",") if p.strip())
            macros[name.lower()] = Macro(name.lower(), names, body.strip())
    return macros


def _fn(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def positional_structs(tree: exp.Expression) -> exp.Expression:
    """``struct_pack(f := e, …)`` becomes a positional tuple (ClickHouse's named tuple elements
    are aliases, and its aliases are global), and reading a field of one, ``s.f`` or ``t.s.f``
    (``s`` the alias of a select item holding a struct, possibly through arg_min/arg_max),
    becomes ``tupleElement(s, i)``."""
    fields: dict[str, list[str]] = {}
    for alias in tree.find_all(exp.Alias):
        value = alias.this
        while isinstance(value, (exp.ArgMin, exp.ArgMax, exp.Filter, exp.Anonymous)):
            value = value.this if not isinstance(value, exp.Anonymous) else None
        if isinstance(value, exp.Struct):
            names = [e.this.name for e in value.expressions if isinstance(e, exp.PropertyEQ)]
            if len(names) == len(value.expressions):
                fields[alias.alias] = names
    if not fields:
        return tree

    def access(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Column):
            return node
        select = node.find_ancestor(exp.Select)
        sources = (
            []
            if select is None
            else [
                *([select.args["from_"].this] if select.args.get("from_") else []),
                *(join.this for join in select.args.get("joins") or []),
            ]
        )
        relations = {source.alias_or_name for source in sources}
        if node.db and node.table in fields and node.name in fields[node.table]:
            holder = exp.column(node.table, table=node.db)
            index = fields[node.table].index(node.name) + 1
        elif (
            not node.db
            and node.table in fields
            and node.table not in relations
            and node.name in fields[node.table]
        ):
            holder = exp.column(node.table)
            index = fields[node.table].index(node.name) + 1
        else:
            return node
        return _fn("tupleElement", holder, exp.Literal.number(index))

    return tree.transform(access)


def rename_ctes(tree: exp.Expression) -> exp.Expression:
    """Give every common table expression a name no column has (``events`` → ``events__w``),
    read under its old name as an alias: in ClickHouse a CTE's name is also an identifier in
    expressions, so a CTE ``events`` would shadow the spans' ``events`` column."""
    names = {cte.alias for cte in tree.find_all(exp.CTE)}
    if not names:
        return tree
    for cte in tree.find_all(exp.CTE):
        cte.set("alias", exp.TableAlias(this=exp.to_identifier(f"{cte.alias}__w")))
    qualifiers = {column.table for column in tree.find_all(exp.Column) if column.table}
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier) and not table.db and table.name in names:
            # the old name stays as an alias only where columns are qualified with it: an
            # alias is an identifier too (``events`` again)
            alias = table.alias or (table.name if table.name in qualifiers else None)
            table.set("this", exp.to_identifier(f"{table.name}__w"))
            if alias:
                table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return tree


def later_using_joins(tree: exp.Expression) -> exp.Expression:
    """``… JOIN b USING (k) JOIN c USING (k)``: the second ``USING`` becomes ``ON a.k = c.k``
    (``a`` the first relation). DuckDB reads ``k`` as the merged column; ClickHouse calls it
    ambiguous once a third relation has a ``k`` too."""
    for select in tree.find_all(exp.Select):
        joins = select.args.get("joins") or []
        source = select.args.get("from_")
        if len(joins) < 2 or source is None:
            continue
        left = source.this.alias_or_name
        for join in joins[1:]:
            using = join.args.get("using")
            if not using:
                continue
            right = join.this.alias_or_name
            condition = exp.and_(
                *(
                    exp.EQ(
                        this=exp.column(key.name, table=left),
                        expression=exp.column(key.name, table=right),
                    )
                    for key in using
                )
            )
            join.set("using", None)
            join.set("on", condition)
    return tree


def _is_boolean(node: exp.Expression) -> bool:
    if isinstance(node, (exp.Predicate, exp.Connector, exp.Not, exp.Boolean)):
        return True
    if isinstance(node, (exp.LogicalOr, exp.LogicalAnd)):
        return True
    if isinstance(node, exp.Paren):
        return _is_boolean(node.this)
    if isinstance(node, exp.Coalesce):
        return all(_is_boolean(e) for e in [node.this, *node.expressions])
    return False


def boolean_items(tree: exp.Expression) -> exp.Expression:
    """A selected condition is a boolean (``toBool``): ClickHouse's comparisons give UInt8 0/1,
    which Python would read as integers (``~`` of 1 is -2, not False)."""
    for select in tree.find_all(exp.Select):
        items = []
        for item in select.expressions:
            value = item.this if isinstance(item, exp.Alias) else item
            if _is_boolean(value):
                wrapped = _fn("toBool", value.copy())
                item = exp.alias_(wrapped, item.alias) if isinstance(item, exp.Alias) else wrapped
            items.append(item)
        select.set("expressions", items)
    return tree


def column_names(tree: exp.Expression) -> exp.Expression:
    """A selected ``t.c`` is named ``c`` (DuckDB's name; ClickHouse's would be ``t.c``)."""
    for select in tree.find_all(exp.Select):
        select.set(
            "expressions",
            [
                exp.alias_(e, e.name)
                if isinstance(e, exp.Column) and e.table and not isinstance(e.this, exp.Star)
                else e
                for e in select.expressions
            ],
        )
    return tree


def order_by_aliases(tree: exp.Expression) -> exp.Expression:
    """In ORDER BY a select's alias wins over a column of the same name (DuckDB, and the SQL
    standard); ClickHouse, told to prefer columns (:data:`SETTINGS`, for WHERE), would read
    the column: write the aliased expression instead."""
    for select in list(tree.find_all(exp.Select)):
        order = select.args.get("order")
        if order is None:
            continue
        aliased = {
            e.alias: e.this
            for e in select.expressions
            if isinstance(e, exp.Alias)
            and not (isinstance(e.this, exp.Column) and e.this.name == e.alias)
        }
        if not aliased:
            continue
        for column in list(order.find_all(exp.Column)):
            if not column.table and column.name in aliased:
                column.replace(aliased[column.name].copy())
    return tree


def _suffix_table_aliases(body: exp.Expression, suffix: str) -> None:
    """Rename a macro body's table aliases (``t`` → ``t__traces_from_parts``) and the column
    qualifiers that use them: ClickHouse's aliases are global to a statement, so a body's ``t``
    would meet a caller's ``… AS t``."""
    renamed = [
        alias
        for alias in body.find_all(exp.TableAlias)
        if alias.name and not isinstance(alias.parent, exp.CTE)
    ]
    aliases = {alias.name for alias in renamed}
    for alias in renamed:
        alias.set("this", exp.to_identifier(alias.name + suffix))
    for column in body.find_all(exp.Column):
        if column.table in aliases:
            column.set("table", exp.to_identifier(column.table + suffix))


def inline_macros(
    tree: exp.Expression, macros: Mapping[str, Macro], database: str | None
) -> exp.Expression:
    """Replace every call of a table macro by its body, arguments substituted, as a subquery.

    The tables a body reads are qualified with ``database``: once inlined, a body must not
    read a common table expression of the calling query that happens to share a table's name
    (a metric may call its own CTE ``spans``)."""
    for _ in range(20):  # macros call macros; a fixed point is reached in a few rounds
        calls = [
            t
            for t in tree.find_all(exp.Table)
            if isinstance(t.this, exp.Anonymous) and t.this.name.lower() in macros
        ]
        if not calls:
            return tree
        for table in calls:
            call = table.this
            macro = macros[call.name.lower()]
            if len(call.expressions) != len(macro.params):
                raise UntranslatableSQL(f"{macro.name} takes {len(macro.params)} arguments")
            args = dict(zip(macro.params, call.expressions, strict=True))
            body = sqlglot.parse_one(macro.body, read="duckdb")
            own = {cte.alias for cte in body.find_all(exp.CTE)}
            if database is not None:
                for read in body.find_all(exp.Table):
                    if (
                        isinstance(read.this, exp.Identifier)
                        and not read.db
                        and (read.name not in own)
                    ):
                        read.set("db", exp.to_identifier(database))

            def substitute(node: exp.Expression, args: dict[str, exp.Expression] = args) -> Any:
                if (
                    isinstance(node, exp.Table)
                    and isinstance(node.this, exp.Anonymous)
                    and node.this.name.lower() == "query_table"
                ):
                    relation = args[node.this.expressions[0].name]
                    replacement = exp.to_table(relation.name)
                    if node.alias:
                        replacement.set("alias", node.args["alias"].copy())
                    return replacement
                if isinstance(node, exp.Column) and not node.table and node.name in args:
                    return args[node.name].copy()
                return node

            body = body.transform(substitute)
            _suffix_table_aliases(body, f"__{macro.name}")
            alias = table.alias or macro.name
            table.replace(
                exp.Subquery(this=body, alias=exp.TableAlias(this=exp.to_identifier(alias)))
            )
    raise UntranslatableSQL("table macros nest too deep")
