"""The README tells the truth: its examples ingest, and every metric, command and setting is in it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from analytics import METRICS
from app.cli import build_parser
from ingest.jsonl import decode_records
from ingest.receiver_config import Limits

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def _json_examples() -> list[dict[str, object]]:
    blocks = re.findall(r"```json\n(.*?)```", README, flags=re.DOTALL)
    return [json.loads(block) for block in blocks]


def test_readme_json_examples_ingest_cleanly() -> None:
    examples = _json_examples()
    assert {e["type"] for e in examples} == {"span", "feedback"}
    decoded = decode_records(((f"example {i}", e) for i, e in enumerate(examples)), source="README")
    assert decoded.errors == []
    assert decoded.spans.num_rows == 1 and decoded.feedback.num_rows == 1
    span = decoded.spans.to_pylist()[0]
    assert span["request_model"] == "gpt-4o" and span["input_tokens"] == 812
    assert span["ttft_ms"] == pytest.approx(275.0)
    assert span["duration_ms"] == pytest.approx(1125.0)


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.__name__)
def test_every_metric_has_a_readme_row(metric: object) -> None:
    assert f"| `{metric.__name__}` |" in README  # type: ignore[attr-defined]


def test_every_command_is_documented() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in commands:
        assert f"`flywheel {command}" in README, command


@pytest.mark.parametrize(
    "variable",
    [
        "FLYWHEEL_DATA_DIR",
        "FLYWHEEL_PROJECT",
        "FLYWHEEL_DASHBOARD_HOST",
        "FLYWHEEL_DASHBOARD_PORT",
        "FLYWHEEL_PRICE_FILE",
        "FLYWHEEL_SLO_FILE",
        "FLYWHEEL_REDACTION_FILE",
        "FLYWHEEL_ALERTS_FILE",
        "FLYWHEEL_DASHBOARD_PASSWORD_HASH",
        "FLYWHEEL_TOKENS",
        "FLYWHEEL_TOKENS_FILE",
        *("FLYWHEEL_" + f.name.upper() for f in dataclasses.fields(Limits)),
    ],
)
def test_every_setting_is_documented(variable: str) -> None:
    assert f"| `{variable}` |" in README


def test_readme_eval_dataset_example_imports_cleanly(tmp_path: Path) -> None:
    from evals.datasets import read_jsonl_cases

    [block] = re.findall(r"```jsonl\n(.*?)```", README, flags=re.DOTALL)
    path = tmp_path / "cases.jsonl"
    path.write_text(block, encoding="utf-8")
    imported = read_jsonl_cases(path)
    assert imported.errors == []
    first, second = imported.cases
    assert first.user_input == "How do I get a refund?" and first.metadata == {"topic": "billing"}
    assert second.system_prompt == "Be brief." and second.reference is not None
