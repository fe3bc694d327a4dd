"""A lake whose spans carry script, HTML and remote-image Markdown, landed through ingest."""

from __future__ import annotations

import json
from pathlib import Path

from ingest.loader import ingest_paths
from store.writer import LakeWriter

SCRIPT = "<script>window.__xss = 'script'</script>"
IMG = "<img src=x onerror=\"window.__xss='img'\">"
REMOTE = "![tracking pixel](http://outside.invalid/x.png)"
LINK = "[click me](javascript:window.__xss='link')"
PAYLOADS = (SCRIPT, IMG, REMOTE, LINK)
ALL = " ".join(PAYLOADS)

TRACE_ID = "7a5500000000000000000000000000a1"
ROOT_ID = "7a550000000000b1"
CHAT_ID = "7a550000000000b2"
TOOL_ID = "7a550000000000b3"
SESSION_ID = f"sess {IMG}"
USER_ID = f"user {REMOTE}"
START_NS = 1_764_578_700_000_000_000  # 2025-12-01T08:45:00Z


def _span(
    span_id: str, parent: str | None, name: str, offset_ms: int, **extra: object
) -> dict[str, object]:
    return {
        "type": "span",
        "trace_id": TRACE_ID,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": "INTERNAL",
        "service_name": f"svc {SCRIPT}",
        "start_time": START_NS + offset_ms * 1_000_000,
        "end_time": START_NS + (offset_ms + 100) * 1_000_000,
        "status_code": "UNSET",
        "status_message": "",
        **extra,
    }


def records() -> list[dict[str, object]]:
    """Flat JSONL records: a root, a chat call and a tool call full of payloads, and feedback."""
    messages = [
        {"role": "system", "parts": [{"type": "text", "content": f"system {SCRIPT}"}]},
        {"role": "user", "parts": [{"type": "text", "content": f"question {ALL}"}]},
    ]
    output = [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": f"answer {ALL}"},
                {
                    "type": "tool_call",
                    "id": IMG,
                    "name": f"tool {SCRIPT}",
                    "arguments": {"q": REMOTE},
                },
            ],
            "finish_reason": IMG,
        }
    ]
    root = _span(
        ROOT_ID,
        None,
        f"POST /chat {IMG}",
        0,
        attributes={"user.id": USER_ID, "session.id": SESSION_ID, REMOTE: SCRIPT},
    )
    chat = _span(
        CHAT_ID,
        ROOT_ID,
        f"chat {REMOTE}",
        10,
        status_code="ERROR",
        status_message=f"failed {ALL}",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": f"model {IMG}",
            "gen_ai.request.temperature": SCRIPT,
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.output.messages": json.dumps(output),
            "user.id": USER_ID,
            "session.id": SESSION_ID,
        },
        events=[
            {"time": START_NS + 20_000_000, "name": f"event {IMG}", "attributes": {"k": REMOTE}}
        ],
    )
    tool = _span(
        TOOL_ID,
        ROOT_ID,
        f"execute_tool {LINK}",
        50,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": f"tool {SCRIPT}",
            "gen_ai.tool.call.arguments": json.dumps({"q": IMG}),
            "gen_ai.tool.call.result": REMOTE,
        },
    )
    feedback = {
        "type": "feedback",
        "trace_id": TRACE_ID,
        "time": "2025-12-01T08:46:00Z",
        "kind": "comment",
        "text": f"comment {ALL}",
        "user_id": USER_ID,
    }
    return [root, chat, tool, feedback]


def make_xss_lake(folder: Path) -> Path:
    """Ingest the records (a JSONL file, through ``ingest``) into ``folder/lake``."""
    source = folder / "xss.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in records()) + "\n", encoding="utf-8")
    data_dir = folder / "lake"
    with LakeWriter(data_dir) as writer:
        reports = ingest_paths([source], writer)
        writer.flush()
    assert [r.errors for r in reports] == [[]], reports
    assert reports[0].num_spans == 3 and reports[0].num_feedback == 1
    return data_dir
