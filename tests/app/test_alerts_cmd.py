"""``flywheel alerts check``: exit codes, the table, recorded alerts, and the webhook payload
received by a local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from app.cli import main
from tests.analytics.guardrails_lake import ingest_sample

SPIKE_END = "2026-11-20T00:00:00Z"  # the end of the sample's injection day
CALM_END = "2026-11-17T00:00:00Z"
RULES = """
[[rule]]
name = "guardrail spike"
metric = "guardrail_spikes"
window = "1d"
threshold = 1
severity = "page"

[[rule]]
name = "daily spend"
metric = "cost_per_day"
window = "1d"
threshold = 1000.0
"""


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_sample(tmp_path_factory.mktemp("alerts-cmd"))


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.toml"
    path.write_text(RULES)
    return path


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append(
            {"body": json.loads(self.rfile.read(length)), "type": self.headers["Content-Type"]}
        )
        self.send_response(_Hook.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    _Hook.received = []
    _Hook.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def _check(lake: Path, rules: Path, *extra: str) -> int:
    return main(["alerts", "check", "--data-dir", str(lake), "--rules", str(rules), *extra])


def test_nothing_fires_on_a_calm_day(
    lake: Path, rules: Path, webhook: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(lake, rules, "--at", CALM_END, "--webhook", webhook) == 0
    out = capsys.readouterr().out
    assert "guardrail spike  page      ok" in out and "FIRING" not in out
    assert _Hook.received == []  # nothing fired, nothing sent


def test_a_spike_fires_is_recorded_and_posted(
    lake: Path, rules: Path, webhook: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(lake, rules, "--at", SPIKE_END, "--webhook", webhook) == 1
    captured = capsys.readouterr()
    assert "FIRING" in captured.out and "FIRING [page] guardrail spike" in captured.err
    [request] = _Hook.received
    assert request["type"] == "application/json"
    body = request["body"]
    assert body["text"].startswith("Flywheel: 1 alert(s) firing for project default")
    [alert] = body["alerts"]
    assert (alert["rule"], alert["severity"], alert["window_end"]) == (
        "guardrail spike",
        "page",
        "2026-11-20T00:00:00+00:00",
    )
    assert {s["category"] for s in alert["evidence"]["spikes"]} >= {"prompt_injection"}
    # recorded in the lake's alerts table, once however often the same moment is checked
    assert _check(lake, rules, "--at", SPIKE_END) == 1
    capsys.readouterr()
    assert main(["alerts", "check", "--data-dir", str(lake), "--rules", str(rules),
                 "--at", SPIKE_END, "--format", "json"]) == 1  # fmt: skip
    listed = json.loads(capsys.readouterr().out)
    assert [r["fired"] for r in listed["rules"]] == [True, False]
    stored = list((lake / "alerts").rglob("*.parquet"))
    assert len(stored) == 1


def test_a_failing_webhook_is_reported_and_the_exit_code_still_says_fired(
    lake: Path, rules: Path, webhook: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _Hook.status = 500
    assert _check(lake, rules, "--at", SPIKE_END, "--webhook", webhook) == 1
    assert "webhook answered HTTP 500" in capsys.readouterr().err


def test_unusable_rules_exit_2_naming_the_rule(
    lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "x"\nmetric = "vibes"\nwindow = "1h"\nthreshold = 1\n')
    assert _check(lake, bad, "--at", SPIKE_END) == 2
    err = capsys.readouterr().err
    assert f"{bad}: [[rule]] #1 (x): metric 'vibes' is not one of" in err
