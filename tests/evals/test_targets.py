"""Targets against a real OpenAI-compatible server on loopback (``FakeOpenAI``): answers, prompt
overrides, retries and backoff, timeouts, refused connections; the rate limiter; recorded
outputs; ``apply_prompt``."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from evals.cases import Case, Completion, case_id_of
from evals.targets import OpenAITarget, RateLimiter, RecordedTarget, TargetConfig, apply_prompt
from tests.evals.openai_server import FakeOpenAI

KEY_ENV = "FLYWHEEL_TEST_FAKE_OPENAI_KEY"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # A key of our own, so a real OPENAI_API_KEY from the environment never reaches the fake.
    monkeypatch.setenv(KEY_ENV, "sk-test")


class Sleeps(list[float]):
    """A ``sleep`` that records what it was asked to wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_target(
    base_url: str, *, sleep: Sleeps | None = None, **config: Any
) -> tuple[OpenAITarget, Sleeps]:
    sleeps = Sleeps() if sleep is None else sleep
    settings: dict[str, Any] = {"model": "echo", "timeout_s": 5.0, "backoff_s": 0.01}
    settings.update(config)
    target = OpenAITarget(
        TargetConfig(base_url=base_url, api_key_env=KEY_ENV, **settings), sleep=sleeps
    )
    return target, sleeps


def make_case(*messages: tuple[str, str]) -> Case:
    msgs = tuple({"role": role, "content": content} for role, content in messages)
    return Case(case_id=case_id_of(msgs), messages=msgs)


def words(text: str) -> int:
    return len(text.split())


def received(server: FakeOpenAI, marker: str) -> list[dict[str, Any]]:
    """The request bodies whose last message contains ``marker`` (tests use unique texts)."""
    return [c for c in server.calls if marker in c["messages"][-1]["content"]]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- answers ---------------------------------------------------------------------------------


def test_answer_output_model_tokens_and_latency(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, model="upper", max_tokens=64)
    case = make_case(
        ("system", "You are a terse assistant."),
        ("user", "what is the capital of France"),
    )

    completion = target.complete(case)

    assert completion.ok, completion.error
    assert completion.output == "WHAT IS THE CAPITAL OF FRANCE"
    assert completion.model == "upper"
    assert completion.input_tokens == words("You are a terse assistant.") + 6 == 11
    assert completion.output_tokens == 6
    assert completion.latency_ms is not None and completion.latency_ms > 0
    assert completion.num_attempts == 1
    assert sleeps == []
    (body,) = received(server, "capital of France")
    assert body["model"] == "upper"
    assert body["messages"] == [dict(m) for m in case.messages]
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 64


def test_temperature_none_is_not_sent(server: FakeOpenAI) -> None:
    target, _ = make_target(server.base_url, temperature=None)

    assert target.complete(make_case(("user", "no temperature here"))).ok

    (body,) = received(server, "no temperature here")
    assert "temperature" not in body
    assert "max_tokens" not in body


def test_custom_answer_model_sees_all_messages() -> None:
    def count_messages(messages: list[dict[str, Any]]) -> str:
        return f"{len(messages)} messages"

    with FakeOpenAI(answers={"counter": count_messages}) as fake:
        target, _ = make_target(fake.base_url, model="counter")
        completion = target.complete(
            make_case(("user", "a"), ("assistant", "b c"), ("user", "d e f"))
        )

    assert completion.output == "3 messages"
    assert completion.input_tokens == 6
    assert completion.output_tokens == 2


def test_key_is_read_from_the_configured_variable(server: FakeOpenAI) -> None:
    target, _ = make_target(server.base_url)

    assert target.complete(make_case(("user", "who am I"))).ok

    index = next(
        i for i, c in enumerate(server.calls) if c["messages"][-1]["content"] == "who am I"
    )
    assert server.authorizations[index] == "Bearer sk-test"
    assert "sk-test" not in json.dumps(target.describe())


# --- prompt overrides ------------------------------------------------------------------------


def test_system_prompt_override_replaces_the_existing_one(server: FakeOpenAI) -> None:
    target, _ = make_target(server.base_url, system_prompt="New rules.")
    case = make_case(("system", "Old rules."), ("user", "override me please"))

    assert target.complete(case).output == "override me please"

    (body,) = received(server, "override me please")
    assert body["messages"] == [
        {"role": "system", "content": "New rules."},
        {"role": "user", "content": "override me please"},
    ]


def test_system_prompt_override_is_inserted_when_missing(server: FakeOpenAI) -> None:
    target, _ = make_target(server.base_url, system_prompt="Be kind.")
    case = make_case(("user", "no system here"), ("assistant", "ok"), ("user", "insert one"))

    completion = target.complete(case)

    (body,) = received(server, "insert one")
    assert body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "no system here"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "insert one"},
    ]
    assert completion.input_tokens == 2 + 3 + 1 + 2


def test_user_template_wraps_the_last_user_message(server: FakeOpenAI) -> None:
    target, _ = make_target(server.base_url, user_template='Answer in JSON {"q": "{input}"}')
    case = make_case(("user", "first turn"), ("assistant", "x"), ("user", "templated turn"))

    completion = target.complete(case)

    assert completion.output == 'Answer in JSON {"q": "templated turn"}'
    (body,) = received(server, "templated turn")
    assert [m["content"] for m in body["messages"]] == [
        "first turn",
        "x",
        'Answer in JSON {"q": "templated turn"}',
    ]


# --- retries ---------------------------------------------------------------------------------


def test_429_twice_then_success(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=2)

    completion = target.complete(make_case(("user", "[429x2] rate limited twice")))

    assert completion.ok, completion.error
    assert completion.output == "[429x2] rate limited twice"
    assert completion.num_attempts == 3
    assert server.num_calls("rate limited twice") == 3
    assert len(sleeps) == 2


def test_429_beyond_the_retries_is_an_error(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=2)

    completion = target.complete(make_case(("user", "[429x5] rate limited five times")))

    assert not completion.ok
    assert completion.output is None
    assert completion.error is not None and "429" in completion.error
    assert "rate limited" in completion.error
    assert completion.num_attempts == 3
    assert server.num_calls("rate limited five times") == 3
    assert len(sleeps) == 2


def test_500_once_then_success(server: FakeOpenAI) -> None:
    target, _ = make_target(server.base_url, max_retries=3)

    completion = target.complete(make_case(("user", "[500x1] flaky server")))

    assert completion.ok, completion.error
    assert completion.num_attempts == 2
    assert server.num_calls("flaky server") == 2


def test_always_500_fails_after_every_retry(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=3)

    completion = target.complete(make_case(("user", "[always500] broken server")))

    assert completion.error is not None and completion.error.startswith("HTTP 500")
    assert completion.num_attempts == 4
    assert server.num_calls("broken server") == 4
    assert len(sleeps) == 3


def test_400_is_not_retried(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=4)

    completion = target.complete(make_case(("user", "[400] bad input")))

    assert completion.error is not None and completion.error.startswith("HTTP 400")
    assert completion.num_attempts == 1
    assert server.num_calls("bad input") == 1
    assert sleeps == []


def test_unknown_model_is_a_404_without_retry(server: FakeOpenAI) -> None:
    target, _ = make_target(server.base_url, model="no-such-model", max_retries=4)

    completion = target.complete(make_case(("user", "which model")))

    assert completion.error is not None
    assert "404" in completion.error
    assert "model no-such-model not found" in completion.error
    assert completion.num_attempts == 1
    assert server.num_calls("which model") == 1


def test_timeout_is_retried_then_reported(server: FakeOpenAI) -> None:
    # Real sleeps: the backoff is short, and the 3 s answer must be cut at 0.5 s each time.
    target = OpenAITarget(
        TargetConfig(
            base_url=server.base_url,
            model="echo",
            api_key_env=KEY_ENV,
            timeout_s=0.5,
            max_retries=1,
            backoff_s=0.01,
        )
    )

    started = time.monotonic()
    completion = target.complete(make_case(("user", "[slow=3] too slow")))
    elapsed_s = time.monotonic() - started

    assert completion.error == "timeout"
    assert completion.num_attempts == 2
    assert 0.9 < elapsed_s < 2.0
    assert server.num_calls("too slow") == 2
    # The server outlives a client that hung up on it.
    assert target.complete(make_case(("user", "still serving"))).output == "still serving"


def test_refused_connection_is_a_result_after_every_retry() -> None:
    target, sleeps = make_target(f"http://127.0.0.1:{closed_port()}/v1", max_retries=2)

    completion = target.complete(make_case(("user", "anyone there")))

    assert completion.output is None
    assert completion.error is not None and completion.error.startswith("APIConnectionError")
    assert completion.num_attempts == 3
    assert len(sleeps) == 2


def test_backoff_grows_exponentially_up_to_the_cap(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=5, backoff_s=0.1, max_backoff_s=0.5)

    completion = target.complete(make_case(("user", "[429noretryx5] back off")))

    assert completion.ok, completion.error
    assert completion.num_attempts == 6
    # Full delay backoff_s * 2**(k-1), capped, then jittered down to at most half of it.
    caps = [0.1, 0.2, 0.4, 0.5, 0.5]
    assert len(sleeps) == len(caps)
    for wait, cap in zip(sleeps, caps, strict=True):
        assert cap / 2 <= wait <= cap
    assert sleeps[0] <= sleeps[1] <= sleeps[2]
    assert max(sleeps) <= 0.5


def test_retry_after_header_sets_the_wait(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=1, max_backoff_s=20.0)

    completion = target.complete(make_case(("user", "[429after=2x1] told to wait")))

    assert completion.ok, completion.error
    assert sleeps == [2.0]


def test_retry_after_is_capped_at_the_max_backoff(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=1, max_backoff_s=1.5)

    assert target.complete(make_case(("user", "[429after=30x1] told to wait long"))).ok

    assert sleeps == [1.5]


def test_retry_after_zero_retries_at_once(server: FakeOpenAI) -> None:
    target, sleeps = make_target(server.base_url, max_retries=1, backoff_s=1.0)

    assert target.complete(make_case(("user", "[429x1] retry at once"))).ok

    assert sleeps == [0.0]


# --- rate limiter ----------------------------------------------------------------------------


def test_rate_limiter_spaces_acquisitions_across_threads() -> None:
    interval_s = 1 / 20
    started = time.monotonic()
    limiter = RateLimiter(20)
    acquired: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for _ in range(n):
            limiter.acquire()
            with lock:
                acquired.append(time.monotonic())

    threads = [threading.Thread(target=worker, args=(n,)) for n in (3, 3, 2, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(acquired) == 10
    # The k-th acquisition cannot come before the k-th slot.
    for k, at in enumerate(sorted(acquired)):
        assert at - started >= k * interval_s - 1e-3
    assert 0.45 - 1e-3 <= max(acquired) - started < 1.5


def test_rate_limiter_none_does_not_wait() -> None:
    limiter = RateLimiter(None)
    started = time.monotonic()

    for _ in range(1000):
        limiter.acquire()

    assert time.monotonic() - started < 0.05


@pytest.mark.parametrize("per_second", [0, -1.0])
def test_rate_limiter_rejects_a_non_positive_rate(per_second: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(per_second)


def test_target_waits_for_its_limiter(server: FakeOpenAI) -> None:
    config = TargetConfig(base_url=server.base_url, model="echo", api_key_env=KEY_ENV)
    target = OpenAITarget(config, RateLimiter(10))
    started = time.monotonic()

    for i in range(3):
        assert target.complete(make_case(("user", f"limited call {i}"))).ok

    assert time.monotonic() - started >= 0.2 - 1e-3


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"timeout_s": 0}, "timeout"),
        ({"max_retries": -1}, "retries"),
        ({"user_template": "no placeholder"}, "{input}"),
    ],
)
def test_target_config_rejects_bad_settings(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        TargetConfig(base_url="http://127.0.0.1:1/v1", model="m", **overrides)


# --- recorded outputs ------------------------------------------------------------------------


def test_recorded_target_returns_the_stored_completion() -> None:
    known = make_case(("user", "recorded question"))
    stored = Completion("recorded answer", latency_ms=12.0, model="prod", input_tokens=2)
    target = RecordedTarget({known.case_id: stored}, source="reference")

    assert target.complete(known) is stored
    assert target.describe() == {"kind": "recorded", "source": "reference"}


def test_recorded_target_reports_an_unknown_case() -> None:
    target = RecordedTarget({}, source="run-7")
    unknown = make_case(("user", "never recorded"))

    completion = target.complete(unknown)

    assert not completion.ok
    assert completion.output is None
    assert completion.error == f"no recorded output for case {unknown.case_id}"


# --- apply_prompt ----------------------------------------------------------------------------

SYS = {"role": "system", "content": "old"}
DEV = {"role": "developer", "content": "dev"}
U1 = {"role": "user", "content": "one"}
A1 = {"role": "assistant", "content": "reply"}
U2 = {"role": "user", "content": "two"}


@pytest.mark.parametrize(
    ("messages", "system_prompt", "user_template", "expected"),
    [
        pytest.param([SYS, U1], None, None, [SYS, U1], id="no-overrides"),
        pytest.param(
            [SYS, U1], "new", None, [{"role": "system", "content": "new"}, U1], id="replace"
        ),
        pytest.param(
            [U1, A1], "new", None, [{"role": "system", "content": "new"}, U1, A1], id="insert"
        ),
        pytest.param(
            [DEV, SYS, U1],
            "new",
            None,
            [{"role": "system", "content": "new"}, U1],
            id="drops-developer-too",
        ),
        pytest.param(
            [U1, A1, U2],
            None,
            "<{input}>",
            [U1, A1, {"role": "user", "content": "<two>"}],
            id="template-last-user-only",
        ),
        pytest.param(
            [U1, A1],
            None,
            "Q: {input}",
            [{"role": "user", "content": "Q: one"}, A1],
            id="template-user-before-assistant",
        ),
        pytest.param([SYS, A1], None, "Q: {input}", [SYS, A1], id="template-without-user"),
        pytest.param(
            [U1],
            None,
            "{input} / {input} {x}",
            [{"role": "user", "content": "one / one {x}"}],
            id="template-is-not-format",
        ),
        pytest.param(
            [SYS, U1],
            "new",
            "Q: {input}",
            [{"role": "system", "content": "new"}, {"role": "user", "content": "Q: one"}],
            id="both",
        ),
    ],
)
def test_apply_prompt(
    messages: list[dict[str, str]],
    system_prompt: str | None,
    user_template: str | None,
    expected: list[dict[str, str]],
) -> None:
    before = json.dumps(messages)

    assert apply_prompt(messages, system_prompt, user_template) == expected
    assert json.dumps(messages) == before  # the input is not modified


# --- the fake server itself ------------------------------------------------------------------


def request(server: FakeOpenAI, method: str, path: str, body: bytes | None = None) -> Any:
    port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def test_server_rejects_malformed_json(server: FakeOpenAI) -> None:
    status, _, payload = request(server, "POST", "/v1/chat/completions", b"{not json")

    assert status == 400
    assert payload["error"]["type"] == "invalid_request_error"


def test_server_429_body_and_retry_after(server: FakeOpenAI) -> None:
    body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "[429x1] raw"}]})

    status, headers, payload = request(server, "POST", "/v1/chat/completions", body.encode())
    status_again, _, answer = request(server, "POST", "/v1/chat/completions", body.encode())

    assert status == 429
    assert headers["Retry-After"] == "0"
    assert payload == {"error": {"message": "rate limited", "type": "rate_limit_error"}}
    assert status_again == 200
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "[429x1] raw"}
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}


def test_server_lists_its_models(server: FakeOpenAI) -> None:
    status, _, payload = request(server, "GET", "/v1/models")

    assert status == 200
    assert [m["id"] for m in payload["data"]] == ["const", "echo", "upper"]


def test_server_stop_wakes_waiting_requests_and_refuses_new_ones() -> None:
    fake = FakeOpenAI().start()
    target, _ = make_target(fake.base_url, timeout_s=30.0, max_retries=0)
    results: list[Completion] = []
    waiting = threading.Thread(
        target=lambda: results.append(target.complete(make_case(("user", "[slow=30] hang"))))
    )
    waiting.start()
    deadline = time.monotonic() + 5
    while fake.num_calls("hang") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    fake.stop()
    waiting.join(timeout=5)

    assert time.monotonic() - started < 1.0
    assert not waiting.is_alive()
    (hung,) = results
    assert hung.error is not None and hung.error.startswith("APIConnectionError")
    refused = target.complete(make_case(("user", "after stop")))
    assert refused.error is not None and refused.error.startswith("APIConnectionError")
