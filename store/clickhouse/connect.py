"""A ClickHouse server as Flywheel's store: the ``clickhouse://`` URL and its engine.

``--store clickhouse://user:password@host:8123/database`` (``clickhouses://`` for HTTPS; the
port defaults to 8123, or 8443 over HTTPS; the database to ``default``) names a ClickHouse
server reached over its HTTP interface with ``clickhouse-connect``. :class:`ClientEngine` is
the :class:`store.clickhouse.catalog.Engine` over such a client: statements run with
server-side parameter binding (``{name:Type}``, values sent apart from the SQL) and the
settings of :data:`store.clickhouse.transpile.SETTINGS`, results come back as Arrow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from store.clickhouse.transpile import SETTINGS

__all__ = ["ClickHouseURL", "ClientEngine", "connect", "parse_store_url"]

_SCHEMES = {"clickhouse": False, "clickhouses": True}

#: A statement that returns rows: SELECT or WITH after any comments and opening parentheses
#: (the transpiler keeps a leading comment as ``/* … */``; a union may start with ``(``).
_RETURNS_ROWS = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*(?:SELECT|WITH)\b", re.IGNORECASE | re.DOTALL
)


@dataclass(frozen=True)
class ClickHouseURL:
    """Where a ClickHouse store is (the password is not shown in ``repr``)."""

    host: str
    port: int
    database: str
    username: str = "default"
    password: str = ""
    secure: bool = False

    def __repr__(self) -> str:
        scheme = "clickhouses" if self.secure else "clickhouse"
        return (
            f"ClickHouseURL('{scheme}://{self.username}@{self.host}:{self.port}/{self.database}')"
        )


def parse_store_url(url: str) -> ClickHouseURL:
    """``clickhouse[s]://[user[:password]@]host[:port][/database]``, or a ValueError saying
    what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(
            f"store URL {url.split('@')[-1]!r}: use clickhouse://host:8123/database "
            "(or clickhouses:// for HTTPS)"
        )
    if not parts.hostname:
        raise ValueError(f"store URL {parts.scheme}://…: no host")
    secure = _SCHEMES[parts.scheme]
    database = parts.path.strip("/") or "default"
    if "/" in database or not database.replace("_", "").isalnum():
        raise ValueError(f"store URL: database {database!r}: letters, digits and _ only")
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError as exc:
        raise ValueError(f"store URL: {exc}") from None
    return ClickHouseURL(
        host=parts.hostname,
        port=port,
        database=database,
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        secure=secure,
    )


class _Verbatim:
    """A parameter value already in ClickHouse's text form (:func:`transpile.bind`):
    clickhouse-connect sends ``str(value)`` of an object it does not know, unescaped."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


@dataclass
class ClientEngine:
    """A ClickHouse server through a ``clickhouse_connect`` client."""

    client: Any  # clickhouse_connect.driver.Client
    database: str

    def query(self, sql: str, params: Mapping[str, str]) -> pa.Table:
        bound = {name: _Verbatim(text) for name, text in params.items()}
        if not _RETURNS_ROWS.match(sql):
            self.client.command(sql, parameters=bound or None, settings=SETTINGS)
            return pa.table({})
        table: pa.Table = self.client.query_arrow(
            sql, parameters=bound or None, settings=SETTINGS, use_strings=True
        )
        return table

    def insert(self, table: str, rows: pa.Table) -> None:
        self.client.insert_arrow(table, rows, database=self.database, settings=SETTINGS)


def connect(url: ClickHouseURL | str) -> ClientEngine:
    """An engine on the server ``url`` names (its database is created if missing)."""
    import clickhouse_connect
    from clickhouse_connect import common

    # No server session: settings go with every query, and threads (the dashboard's) may
    # query at once, which one session would refuse ("session is locked").
    common.set_setting("autogenerate_session_id", False)
    where = parse_store_url(url) if isinstance(url, str) else url
    client = clickhouse_connect.get_client(
        host=where.host,
        port=where.port,
        username=where.username,
        password=where.password,
        secure=where.secure,
    )
    client.command(f"CREATE DATABASE IF NOT EXISTS {where.database}")
    client.database = where.database
    return ClientEngine(client, where.database)
