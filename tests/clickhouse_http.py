"""ClickHouse's HTTP interface on 127.0.0.1, answered by the process's chdb session.

A test double for the transport only: the SQL runs on real ClickHouse (chdb,
:func:`tests.clickhouse_session.process_session`), so ``clickhouse-connect`` (and
:class:`store.clickhouse.connect.ClientEngine` over it) can be tested end to end without a
server. A request is mapped onto ``session.query(sql, format, params=...)`` the way a ClickHouse
server reads it:

* the statement is the ``query`` URL parameter, then the body (joined by a newline); after
  ``INSERT INTO <table> … FORMAT <f>`` the rest of the text is the data, which is written to a
  temporary file and inserted with ``INSERT INTO <table> … SELECT * FROM file(path, <f>)``;
* ``param_<name>`` URL parameters are the values of ``{name:Type}`` placeholders, text passed
  on untouched (the HTTP interface and chdb both read it in the escaped format);
* ``database`` is the request's current database; ``default_format`` the output format of a
  statement without a FORMAT clause (``TabSeparated`` by default);
* every other URL parameter that is not a transport one (:data:`TRANSPORT_PARAMETERS`) is a
  setting, for that request only: it runs with ClickHouse's default settings plus its own,
  whatever the shared session had set, and the session's database and settings are put back
  after (the chdb engine of another catalog relies on them);
* the user is ``default``, by HTTP Basic authentication, with the server's ``password``;
* an error is answered as ClickHouse does: HTTP 500, ``X-ClickHouse-Exception-Code`` and the
  exception text as the body.

Not emulated: compressed request bodies (refused), compressed responses (always plain, which
the HTTP client accepts), sessions (``session_id`` is ignored: the settings a client sends with
each request are all a request has), progress headers, and the block info of a client protocol
version (so ``clickhouse-connect`` reads Native output without it, as from a proxy that strips
the parameter). Each request is recorded in :attr:`ClickHouseHTTP.requests`.
"""

from __future__ import annotations

import base64
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.clickhouse_session import process_session

__all__ = [
    "PASSWORD",
    "TRANSPORT_PARAMETERS",
    "ClickHouseHTTP",
    "Request",
    "clickhouse_http_fixture",
]

#: URL parameters of the HTTP interface that are not settings (ClickHouse's HTTPHandler).
TRANSPORT_PARAMETERS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
    }
)

_INSERT_WITH_DATA = re.compile(
    rb"\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<format>\w+)[ \t]*(?:\r?\n)?",
    re.IGNORECASE | re.DOTALL,
)
_EXCEPTION_CODE = re.compile(r"Code:\s*(\d+)")


@dataclass(frozen=True)
class Request:
    """One statement as the server received it (an insert's data left out)."""

    sql: str
    params: dict[str, str]  # param_<name>, by name
    settings: dict[str, str]
    database: str | None
    num_data_bytes: int = 0


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _RequestContext:
    """The shared session set up as a fresh request context, and put back after."""

    def __init__(self, session: Any, database: str | None, settings: dict[str, str]) -> None:
        self.session = session
        self.database = database
        self.settings = settings

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.session.query(sql, "ArrowTable").to_pylist()
        return rows

    def __enter__(self) -> None:
        self.saved_database = self._rows("SELECT currentDatabase() AS name")[0]["name"]
        self.saved = {
            row["name"]: row["value"]
            for row in self._rows(
                "SELECT name, value FROM system.settings WHERE changed AND name != 'database'"
            )
        }
        try:
            for name in self.saved:
                self.session.query(f"SET {name} = DEFAULT")
            for name, value in self.settings.items():
                self.session.query(f"SET {name} = {_quote(value)}")
            if self.database:
                self.session.query(f"USE {self.database}")
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *_: object) -> None:
        for name in self.settings.keys() - self.saved.keys():
            self.session.query(f"SET {name} = DEFAULT")
        for name, value in self.saved.items():
            self.session.query(f"SET {name} = {_quote(value)}")
        self.session.query(f"USE {self.saved_database}")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/ping":
            self._reply(200, b"Ok.\n")
        else:
            self._answer(b"")

    def do_POST(self) -> None:
        if self.headers.get("Content-Encoding"):
            self._reply(400, b"the emulator reads no compressed request body\n")
            return
        self._answer(self._body())

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass
        return b"".join(chunks)

    def _authenticated(self) -> bool:
        user, password = "default", ""
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user == "default" and password == self.server.password

    def _answer(self, body: bytes) -> None:
        if not self._authenticated():
            self._reply(
                516,
                b"Code: 516. DB::Exception: default: Authentication failed. "
                b"(AUTHENTICATION_FAILED)\n",
                code="516",
            )
            return
        url = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query = url.get("query")
        text = query.encode() + (b"\n" + body if body else b"") if query is not None else body
        try:
            result = self.server.run(text, url)
        except Exception as exc:  # a ClickHouse exception: the client raises on the 500
            message = str(exc)
            match = _EXCEPTION_CODE.search(message)
            self._reply(500, message.encode() + b"\n", code=match.group(1) if match else "1001")
            return
        self._reply(200, result)

    def _reply(self, status: int, payload: bytes, code: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        if code is not None:
            self.send_header("X-ClickHouse-Exception-Code", code)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, session: Any, password: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.session = session
        self.password = password
        self.requests: list[Request] = []
        self.lock = threading.Lock()  # one statement at a time on the one session

    def run(self, text: bytes, url: dict[str, str]) -> bytes:
        params = {k[len("param_") :]: v for k, v in url.items() if k.startswith("param_")}
        settings = {
            k: v
            for k, v in url.items()
            if k not in TRANSPORT_PARAMETERS and not k.startswith("param_")
        }
        database = url.get("database") or None
        insert = _INSERT_WITH_DATA.match(text)
        data = text[insert.end() :] if insert else b""
        sql = (text[: insert.end()] if insert else text).decode().strip()
        self.requests.append(Request(sql, params, settings, database, len(data)))
        with self.lock, _RequestContext(self.session, database, settings):
            if insert is None:
                result = self.session.query(
                    sql, url.get("default_format", "TabSeparated"), params=params
                )
                return bytes(result.bytes())
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "data"
                path.write_bytes(data)
                target, fmt = insert.group("target").decode(), insert.group("format").decode()
                self.session.query(
                    f"INSERT INTO {target} SELECT * FROM file({_quote(str(path))}, {fmt})",
                    params=params,
                )
            return b""


@dataclass
class ClickHouseHTTP:
    """The emulated server: ``with ClickHouseHTTP(session) as server: …server.port…``."""

    session: Any
    password: str = ""
    _server: _Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[Request]:
        """The statements received, in order."""
        assert self._server is not None, "not started"
        return self._server.requests

    def __enter__(self) -> ClickHouseHTTP:
        self._server = _Server(self.session, self.password)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="clickhouse-http", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


#: The password of the emulator's ``default`` user in the fixture: URL-unsafe characters, so
#: that a store URL must percent-encode it.
PASSWORD = "p@ss:w/rd %?#"


@pytest.fixture(scope="module", name="clickhouse_http")
def clickhouse_http_fixture() -> Iterator[ClickHouseHTTP]:
    """The emulated ClickHouse HTTP interface on the process's chdb session (user ``default``,
    password :data:`PASSWORD`), for a test module."""
    with ClickHouseHTTP(process_session(), PASSWORD) as server:
        yield server
