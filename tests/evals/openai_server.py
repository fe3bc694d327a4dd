"""A deterministic OpenAI-compatible chat-completions server on loopback, for tests and benchmarks.

Standard library only. ``POST /v1/chat/completions`` answers like OpenAI's ``chat.completion``
object; ``GET /v1/models`` lists the models. The answer comes from the requested model:

* ``echo``: the last user message; ``upper``: it upper-cased; ``const``: ``I don't know.``;
* any model given in ``answers`` (a function of the request's messages); an unknown model is a 404.

Markers in the last user message plant failures per case (counts are per exact message text):

* ``[429xN]``: the first N requests answer 429 with ``Retry-After: 0``, later ones succeed;
* ``[429noretryxN]``: the same without a ``Retry-After`` header;
* ``[429after=SxN]``: the same with ``Retry-After: S``;
* ``[500xN]``: the first N requests answer 500; ``[always500]``: every request does;
* ``[400]``: always 400 (not retryable);
* ``[slow=S]``: wait S seconds before answering (to go past a client's timeout).

Token counts are whitespace-split word counts (at least 1): the prompt counts the words of every
message, the completion those of the answer.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

__all__ = ["DEFAULT_ANSWERS", "FakeOpenAI", "last_user_text", "num_words", "text_of"]

Answer = Callable[[list[dict[str, Any]]], str]


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message ("" when there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def num_words(text: str) -> int:
    """Whitespace-split words, at least 1 (how the server counts tokens)."""
    return max(1, len(text.split()))


DEFAULT_ANSWERS: Mapping[str, Answer] = {
    "echo": last_user_text,
    "upper": lambda messages: last_user_text(messages).upper(),
    "const": lambda messages: "I don't know.",
}

# (marker, status, Retry-After): the first N requests fail; [429after] sets its own Retry-After.
_FAIL_FIRST = (
    (re.compile(r"\[429x(?P<n>\d+)\]"), 429, "0"),
    (re.compile(r"\[429noretryx(?P<n>\d+)\]"), 429, None),
    (re.compile(r"\[429after=(?P<after>\d+(?:\.\d+)?)x(?P<n>\d+)\]"), 429, None),
    (re.compile(r"\[500x(?P<n>\d+)\]"), 500, None),
)
_SLOW = re.compile(r"\[slow=(\d+(?:\.\d+)?)\]")
_ERRORS = {
    400: ("bad request", "invalid_request_error"),
    429: ("rate limited", "rate_limit_error"),
    500: ("boom", "server_error"),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops connections when a benchmark opens many at once.
    request_queue_size = 256

    def __init__(self, fake: FakeOpenAI) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as OpenAI clients expect; stop() closes the connections still open.
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two small writes; with Nagle on, the second waits for the
    # client's delayed ACK on a keep-alive connection: 40 ms a response.
    disable_nagle_algorithm = True

    @property
    def fake(self) -> FakeOpenAI:
        return cast(_Server, self.server).fake

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._track(self.connection, open_=False)

    def handle(self) -> None:
        # A client that timed out has gone: the late answer has nowhere to go.
        try:
            super().handle()
        except ConnectionError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read ``calls`` instead of the request log."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            models = [
                {"id": m, "object": "model", "created": 0, "owned_by": "flywheel-tests"}
                for m in self.fake.models
            ]
            self._send(200, {"object": "list", "data": models})
        else:
            self._send_error(404, f"no route {self.path}", "invalid_request_error")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_error(404, f"no route {self.path}", "invalid_request_error")
            return
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send_error(400, f"malformed JSON body: {exc}", "invalid_request_error")
            return
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            self._send_error(400, "messages must be a list of objects", "invalid_request_error")
            return
        authorization = self.headers.get("Authorization")
        status, payload, headers = self.fake._answer(body, messages, authorization)
        if status == 0:  # stopped while waiting
            self.close_connection = True
            return
        self._send(status, payload, headers)

    def _send_error(self, status: int, message: str, kind: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind}})

    def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class FakeOpenAI:
    """An OpenAI-compatible chat-completions server on ``127.0.0.1`` (a free port).

    ``latency_s`` delays every answer (for benchmarks); ``answers`` adds or replaces models.
    Use as a context manager, or ``start()``/``stop()``. ``calls`` holds every well-formed
    request body received, in order; ``authorizations`` their ``Authorization`` headers.
    """

    def __init__(
        self, *, latency_s: float = 0.0, answers: Mapping[str, Answer] | None = None
    ) -> None:
        self.latency_s = latency_s
        self.answers: dict[str, Answer] = {**DEFAULT_ANSWERS, **(answers or {})}
        self.calls: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.base_url = ""
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def models(self) -> list[str]:
        """The model names this server answers."""
        return sorted(self.answers)

    def start(self) -> FakeOpenAI:
        """Bind a free loopback port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the server is already running")
        self._stopping.clear()
        self._server = _Server(self)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits for one poll
            name=f"fake-openai-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake requests still waiting and close open connections."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the peer may have closed it already
                connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def num_calls(self, content_substring: str | None = None) -> int:
        """Requests received, or those whose last user message contains ``content_substring``."""
        with self._lock:
            calls = list(self.calls)
        if content_substring is None:
            return len(calls)
        return sum(content_substring in last_user_text(c["messages"]) for c in calls)

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _answer(
        self, body: dict[str, Any], messages: list[dict[str, Any]], authorization: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON payload, extra headers) for one request; status 0 when stopped."""
        text = last_user_text(messages)
        with self._lock:
            self.calls.append(body)
            self.authorizations.append(authorization)
            self._seen[text] += 1
            nth = self._seen[text]
            call_id = next(self._ids)
        slow = _SLOW.search(text)
        wait_s = self.latency_s + (float(slow.group(1)) if slow else 0.0)
        if wait_s > 0 and self._stopping.wait(wait_s):
            return 0, {}, {}
        model = body.get("model")
        if not isinstance(model, str) or model not in self.answers:
            error = {
                "message": f"model {model} not found",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
            return 404, {"error": error}, {}
        failure = _failure(text, nth)
        if failure is not None:
            status, headers = failure
            message, kind = _ERRORS[status]
            return status, {"error": {"message": message, "type": kind}}, headers
        answer = self.answers[model](messages)
        prompt_tokens = num_words(" ".join(text_of(m.get("content")) for m in messages))
        completion_tokens = num_words(answer)
        return (
            200,
            {
                "id": f"chatcmpl-fake{call_id:06d}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            {},
        )


def _failure(text: str, nth: int) -> tuple[int, dict[str, str]] | None:
    """The planted failure for the ``nth`` request with this last user message, if any."""
    if "[400]" in text:
        return 400, {}
    if "[always500]" in text:
        return 500, {}
    for pattern, status, retry_after in _FAIL_FIRST:
        match = pattern.search(text)
        if match is None or nth > int(match["n"]):
            continue
        retry_after = match.groupdict().get("after") or retry_after
        return status, {} if retry_after is None else {"Retry-After": retry_after}
    return None
