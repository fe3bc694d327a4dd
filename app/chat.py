"""A span's prompt and output as chat messages (system / user / assistant / tool), for display.

Reads the message shapes GenAI telemetry carries (the same sources as the ``input_text`` and
``output_text`` columns, see ``ingest/conventions.toml``): OTel GenAI ``gen_ai.input.messages``
/ ``gen_ai.output.messages`` / ``gen_ai.system_instructions`` (parts with text, tool calls and
tool results), the deprecated ``gen_ai.prompt`` / ``gen_ai.completion`` (JSON, indexed
attributes or span events), OpenInference ``llm.input_messages.<i>.message.*`` (with tool calls)
and ``input.value`` / ``output.value``, Vercel ``ai.prompt*`` / ``ai.response.*``, Langfuse
observations; OpenAI, Anthropic and Gemini message bodies inside any of them.

Everything here is untrusted text: :func:`render_messages` shows it with ``st.text`` and
``st.code`` only, never as Markdown or HTML.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from analytics.trace_detail import SpanDetail
from app.untrusted import md_escape
from ingest.messages import parse_json_value

ROLES = ("system", "user", "assistant", "tool", "other")
_ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
}
_AVATARS = {
    "system": ":material/settings:",
    "user": ":material/person:",
    "assistant": ":material/smart_toy:",
    "tool": ":material/build:",
    "other": ":material/notes:",
}


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: its id, the tool's name and the arguments (as text)."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class ChatMessage:
    """One message: a normalised role, its text, tool calls it makes or answers."""

    role: str
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    finish_reason: str | None = None
    source_role: str | None = None
    extra: tuple[str, ...] = field(default=())


def normalize_role(role: Any) -> str:
    """One of :data:`ROLES` for a role as the data spells it."""
    return _ROLE_ALIASES.get(str(role or "").strip().lower(), "other")


def _as_text(value: Any) -> str:
    """Arguments or results as text: strings as they are, anything else as indented JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


def _parts(content: Any) -> tuple[list[str], list[ToolCall], str | None, list[str]]:
    """Texts, tool calls, an answered tool-call id and other notes from message content."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    answered: str | None = None
    notes: list[str] = []
    items = content if isinstance(content, list) else [content]
    for part in items:
        if part is None:
            continue
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            texts.append(_as_text(part))
            continue
        kind = str(part.get("type") or "")
        if kind in ("tool_call", "tool_use", "function_call") or "functionCall" in part:
            fn = part.get("functionCall") or part
            calls.append(
                ToolCall(
                    name=str(fn.get("name") or "?"),
                    arguments=_as_text(fn.get("arguments", fn.get("input", fn.get("args")))),
                    id=part.get("id") or part.get("call_id"),
                )
            )
        elif kind in ("tool_call_response", "tool_result", "function_response") or (
            "functionResponse" in part
        ):
            response = part.get("functionResponse") or part
            answered = part.get("id") or part.get("tool_use_id") or part.get("call_id")
            body = response.get("response", response.get("result", response.get("content")))
            texts.append(_as_text(body))
        elif kind in ("", "text", "input_text", "output_text", "reasoning", "thinking"):
            text = part.get("content", part.get("text", part.get("thinking")))
            if text is not None:
                texts.append(text if isinstance(text, str) else _as_text(text))
            if kind in ("reasoning", "thinking"):
                notes.append("reasoning")
        else:
            notes.append(f"{kind} part")
            texts.append(_as_text(part))
    return texts, calls, answered, notes


def _message(raw: Any, default_role: str) -> ChatMessage | None:
    """A :class:`ChatMessage` from one message object in any supported schema."""
    if isinstance(raw, str):
        return ChatMessage(role=default_role, text=raw)
    if not isinstance(raw, dict):
        return None
    if isinstance(raw.get("message"), dict):  # OpenAI choice, OpenInference wrapper
        inner = _message(raw["message"], default_role)
        if inner is not None and raw.get("finish_reason"):
            return ChatMessage(**{**inner.__dict__, "finish_reason": str(raw["finish_reason"])})
        return inner
    role_value = raw.get("role", default_role)
    content = raw.get("parts", raw.get("content", raw.get("text")))
    texts, calls, answered, notes = _parts(parse_json_value(content))
    for call in raw.get("tool_calls") or []:  # OpenAI
        if isinstance(call, dict):
            fn = call.get("function") if isinstance(call.get("function"), dict) else call
            calls.append(
                ToolCall(str(fn.get("name") or "?"), _as_text(fn.get("arguments")), call.get("id"))
            )
    text = "\n\n".join(t for t in texts if t) or None
    if text is None and not calls:
        return None
    return ChatMessage(
        role=normalize_role(role_value),
        text=text,
        tool_calls=tuple(calls),
        tool_call_id=raw.get("tool_call_id") or answered,
        finish_reason=raw.get("finish_reason"),
        source_role=str(role_value) if role_value is not None else None,
        extra=tuple(notes),
    )


def messages_from_value(value: Any, default_role: str) -> list[ChatMessage]:
    """Messages from a JSON value: a message list, a ``{messages|contents|choices|…}`` object,
    a single message, or plain text (one message of ``default_role``)."""
    parsed = parse_json_value(value)
    if parsed is None or parsed == "":
        return []
    if isinstance(parsed, str):
        return [ChatMessage(role=default_role, text=parsed)]
    if isinstance(parsed, dict):
        for key in ("messages", "contents", "choices", "candidates"):
            if isinstance(parsed.get(key), list):
                return messages_from_value(parsed[key], default_role)
        if "prompt" in parsed or "system" in parsed:  # Vercel ai.prompt
            out = messages_from_value(parsed.get("system"), "system")
            return out + messages_from_value(parsed.get("prompt"), "user")
        if "role" not in parsed and isinstance(parsed.get("content"), dict):  # Gemini output
            return messages_from_value(parsed["content"], default_role)
        one = _message(parsed, default_role)
        return [one] if one else [ChatMessage(role=default_role, text=_as_text(parsed))]
    if isinstance(parsed, list):
        if all(isinstance(p, dict) and "role" not in p and "message" not in p for p in parsed):
            one = _message({"role": default_role, "parts": parsed}, default_role)
            return [one] if one else []
        return [m for m in (_message(p, default_role) for p in parsed) if m is not None]
    return [ChatMessage(role=default_role, text=_as_text(parsed))]


def _indexed(attributes: Mapping[str, str], prefix: str, default_role: str) -> list[ChatMessage]:
    """Messages flattened into ``<prefix>.<i>.<field>`` attributes (OpenInference, OpenLLMetry)."""
    head = prefix + "."
    fields: dict[int, dict[str, str]] = {}
    for key, value in attributes.items():
        if key.startswith(head):
            index, _, rest = key[len(head) :].partition(".")
            if index.isdigit():
                fields.setdefault(int(index), {})[rest.removeprefix("message.")] = value
    messages = []
    for index in sorted(fields):
        f = fields[index]
        calls: dict[int, dict[str, str]] = {}
        for key, value in f.items():
            if key.startswith("tool_calls."):
                number, _, rest = key[len("tool_calls.") :].partition(".")
                if number.isdigit():
                    calls.setdefault(int(number), {})[rest.removeprefix("tool_call.")] = value
        texts = [f[k] for k in sorted(f) if k.startswith("contents.") and k.endswith(".text")]
        text = f.get("content") or "\n\n".join(texts) or None
        tool_calls = tuple(
            ToolCall(
                name=c.get("function.name") or c.get("name") or "?",
                arguments=c.get("function.arguments") or c.get("arguments") or "",
                id=c.get("id"),
            )
            for _, c in sorted(calls.items())
        )
        if text is None and not tool_calls:
            continue
        role = f.get("role", default_role)
        messages.append(
            ChatMessage(
                role=normalize_role(role),
                text=text,
                tool_calls=tool_calls,
                tool_call_id=f.get("tool_call_id"),
                finish_reason=f.get("finish_reason"),
                source_role=role,
            )
        )
    return messages


_INPUT_ATTRIBUTES = (
    "gen_ai.input.messages",
    "gen_ai.prompt",
    "ai.prompt.messages",
    "ai.prompt",
    "langfuse.observation.input",
    "input.value",
    "traceloop.entity.input",
)
_OUTPUT_ATTRIBUTES = (
    "gen_ai.output.messages",
    "gen_ai.completion",
    "ai.response.text",
    "ai.response.object",
    "langfuse.observation.output",
    "output.value",
    "traceloop.entity.output",
)
_INPUT_EVENTS = {
    "gen_ai.content.prompt": "gen_ai.prompt",
    "gen_ai.system.message": "content",
    "gen_ai.user.message": "content",
    "gen_ai.assistant.message": "content",
    "gen_ai.tool.message": "content",
}
_OUTPUT_EVENTS = {"gen_ai.content.completion": "gen_ai.completion", "gen_ai.choice": "message"}


def _first(candidates: Iterable[list[ChatMessage]]) -> list[ChatMessage]:
    for messages in candidates:
        if messages:
            return messages
    return []


def _system_messages(attributes: Mapping[str, str]) -> list[ChatMessage]:
    value = attributes.get("gen_ai.system_instructions")
    if not value:
        return []
    messages = messages_from_value(value, "system")
    return [ChatMessage(**{**m.__dict__, "role": "system"}) for m in messages]


def _event_messages(span: SpanDetail, names: Mapping[str, str], role: str) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for event in span.events:
        key = names.get(event.name or "")
        if key is None or key not in event.attributes:
            continue
        event_role = (event.name or "").removeprefix("gen_ai.").removesuffix(".message")
        default = event_role if event_role in _ROLE_ALIASES else role
        messages += messages_from_value(event.attributes[key], default)
    return messages


def input_messages(span: SpanDetail) -> list[ChatMessage]:
    """The prompt the span's model (or chain) received, system instructions first."""
    attributes = span.attributes
    found = _first(
        [
            *(messages_from_value(attributes.get(key), "user") for key in _INPUT_ATTRIBUTES[:2]),
            _indexed(attributes, "llm.input_messages", "user"),
            _indexed(attributes, "gen_ai.prompt", "user"),
            *(messages_from_value(attributes.get(key), "user") for key in _INPUT_ATTRIBUTES[2:]),
            _event_messages(span, _INPUT_EVENTS, "user"),
        ]
    )
    if not found and span.input_text:
        found = [ChatMessage(role="user", text=span.input_text)]
    system = _system_messages(attributes)
    if system and not any(m.role == "system" for m in found):
        found = system + found
    return found


def output_messages(span: SpanDetail) -> list[ChatMessage]:
    """What the span's model (or chain) answered: messages, tool calls, choices."""
    attributes = span.attributes
    calls = attributes.get("ai.response.toolCalls")
    found = _first(
        [
            *(messages_from_value(attributes.get(k), "assistant") for k in _OUTPUT_ATTRIBUTES[:2]),
            _indexed(attributes, "llm.output_messages", "assistant"),
            _indexed(attributes, "gen_ai.completion", "assistant"),
            *(messages_from_value(attributes.get(k), "assistant") for k in _OUTPUT_ATTRIBUTES[2:]),
            _event_messages(span, _OUTPUT_EVENTS, "assistant"),
        ]
    )
    if calls:
        parsed = parse_json_value(calls)
        tool_calls = tuple(
            ToolCall(
                str(c.get("toolName") or c.get("name") or "?"),
                _as_text(c.get("args", c.get("input"))),
                c.get("toolCallId"),
            )
            for c in (parsed if isinstance(parsed, list) else [])
            if isinstance(c, dict)
        )
        if tool_calls:
            found = [*found, ChatMessage(role="assistant", tool_calls=tool_calls)]
    if not found and span.output_text:
        found = [ChatMessage(role="assistant", text=span.output_text)]
    return found


@dataclass(frozen=True)
class ToolExecution:
    """A tool the span ran: name, call id, arguments and result (as text)."""

    name: str | None
    call_id: str | None
    arguments: str | None
    result: str | None
    description: str | None = None


def tool_execution(span: SpanDetail) -> ToolExecution | None:
    """The tool call a tool span made (OTel ``gen_ai.tool.*``, OpenInference ``tool.*``)."""
    a = span.attributes
    name = a.get("gen_ai.tool.name") or a.get("tool.name")
    arguments = a.get("gen_ai.tool.call.arguments") or a.get("tool.parameters")
    result = a.get("gen_ai.tool.call.result")
    if span.category == "tool":
        arguments = arguments or a.get("input.value") or span.input_text
        result = result or a.get("output.value") or span.output_text
    if name is None and arguments is None and result is None:
        return None
    return ToolExecution(
        name=name,
        call_id=a.get("gen_ai.tool.call.id"),
        arguments=arguments,
        result=result,
        description=a.get("gen_ai.tool.description") or a.get("tool.description"),
    )


def show_payload(text: str | None, *, empty: str = "(empty)") -> None:
    """Untrusted text or JSON, inert: pretty JSON in a code block, else plain text."""
    if text is None or text == "":
        st.caption(empty)
        return
    parsed = parse_json_value(text)
    if isinstance(parsed, dict | list):
        st.code(json.dumps(parsed, ensure_ascii=False, indent=2), language="json", wrap_lines=True)
    else:
        st.text(text)


def render_messages(messages: list[ChatMessage]) -> None:
    """Messages as a chat, one bubble per message; every text shown with ``st.text``."""
    if not messages:
        st.caption("No messages recorded on this span.")
        return
    for message in messages:
        with st.chat_message(message.role, avatar=_AVATARS[message.role]):
            label = message.role
            if message.role == "other" and message.source_role:
                label = "other role"
            details = [label]
            if message.tool_call_id:
                details.append(f"answers call {message.tool_call_id}")
            if message.finish_reason:
                details.append(f"finish: {message.finish_reason}")
            details += list(message.extra)
            st.caption(" · ".join(md_escape(d, 120) for d in details))
            if message.text:
                st.text(message.text)
            for call in message.tool_calls:
                ident = f" (id {call.id})" if call.id else ""
                st.caption(md_escape(f"Tool call: {call.name}{ident}", 160))
                show_payload(call.arguments, empty="(no arguments)")
