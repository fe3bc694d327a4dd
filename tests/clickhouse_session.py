"""The one chdb session of a test process, and a fresh database per test.

chdb runs one embedded ClickHouse server per process, bound to one data path: a second
``Session`` with another path fails (even after the first is closed). So every user in the
process shares the session :func:`process_session` opens (it closes at exit) and isolates its
data in a database of its own (:func:`new_database`). Test modules import
``clickhouse_fixture`` and ``database_fixture`` (named so that a test's ``clickhouse`` and
``database`` arguments do not shadow the imports): ``clickhouse`` is the session, ``database``
a fresh one per test, dropped after it;
``tests/clickhouse_lake.py`` uses the functions.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["clickhouse_fixture", "database_fixture", "new_database", "process_session"]

_SESSION: list[Any] = []


def process_session() -> Any:
    """The process's chdb session (``chdb.session.Session``), opened on first use."""
    if not _SESSION:
        from chdb import session as chdb_session

        path = tempfile.mkdtemp(prefix="flywheel-chdb-")
        session = chdb_session.Session(path)
        _SESSION.append(session)

        def close() -> None:
            session.close()
            shutil.rmtree(path, ignore_errors=True)

        atexit.register(close)
    return _SESSION[0]


def new_database() -> str:
    """A fresh, empty database in the process's session; its name."""
    name = f"t_{secrets.token_hex(6)}"
    process_session().query(f"CREATE DATABASE {name}")
    return name


@pytest.fixture(scope="session", name="clickhouse")
def clickhouse_fixture() -> Any:
    """The process's chdb session."""
    return process_session()


@pytest.fixture(name="database")
def database_fixture(clickhouse: Any) -> Iterator[str]:
    """A database of the test's own, dropped after it."""
    name = new_database()
    yield name
    # A chdb engine made it the session's current database: leave one that exists, or the next
    # user of currentDatabase() (the HTTP emulator restores it after each request) fails.
    clickhouse.query("USE default")
    clickhouse.query(f"DROP DATABASE IF EXISTS {name}")
