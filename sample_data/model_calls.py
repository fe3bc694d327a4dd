"""Model calls of rag-chat: the answer call (current OTel GenAI names), the query rewriter
(deprecated names, content as span events) and the tool round trip.
"""

from __future__ import annotations

from typing import Any

from sample_data import answers, world
from sample_data.spans import KIND_CLIENT, KIND_INTERNAL, STATUS_ERROR, Event
from sample_data.traces import (
    APP_SCOPE,
    TraceContext,
    Turn,
    jdump,
    lognormal,
    model_timing,
    ms,
)

_SCOPE_VERSIONS = {
    "opentelemetry.instrumentation.openai_v2": "2.2b0",
    "opentelemetry.instrumentation.anthropic": "0.1b0",
    "opentelemetry.instrumentation.vertexai": "2.0b0",
}
_HOSTS = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "gcp.vertex_ai": "europe-west1-aiplatform.googleapis.com",
}
ERRORS = {
    "RateLimitError": "Error code: 429 - rate limit reached for requests",
    "Timeout": "Request timed out.",
}


def chat_span(
    t: TraceContext,
    parent: bytes,
    start: int,
    model: world.Model,
    conv_id: str,
    *,
    system: str,
    prompt_version: str,
    messages: list[dict[str, Any]],
    input_tokens: int,
    output: list[dict[str, Any]],
    output_tokens: int,
    finish: str,
    cache_read: int,
    temperature: float,
    error: str | None = None,
    stream: bool = True,
) -> tuple[bytes, int]:
    """A current-convention model call span; returns (span id, end)."""
    rng = t.rng
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": model.provider,
        "gen_ai.request.model": model.request,
        "gen_ai.request.temperature": temperature,
        "gen_ai.request.max_tokens": world.MAX_TOKENS,
        "gen_ai.request.stream": stream or None,
        "gen_ai.conversation.id": conv_id,
        "server.address": _HOSTS[model.provider],
        "server.port": 443,
        "gen_ai.prompt.name": "rag-chat-system",
        "gen_ai.prompt.version": prompt_version,
        "gen_ai.system_instructions": jdump([{"type": "text", "content": system}]),
        "gen_ai.input.messages": jdump(messages),
    }
    scope = (model.scope, _SCOPE_VERSIONS[model.scope])
    name = f"chat {model.request}"
    if error is not None:
        dur = 30.0 + rng.uniform(0, 0.05) if error == "Timeout" else rng.uniform(0.05, 0.4)
        end = start + ms(dur * 1000)
        attrs["error.type"] = error
        exc = {
            "exception.type": f"{model.provider.split('.')[0]}.{error}",
            "exception.message": ERRORS[error],
        }
        sid = t.span(
            scope,
            parent,
            name,
            KIND_CLIENT,
            start,
            end,
            attrs,
            status=(STATUS_ERROR, ERRORS[error]),
            events=((end, "exception", exc),),
        )
        return sid, end
    ttft, dur = model_timing(rng, model, input_tokens, output_tokens)
    prefix = "chatcmpl-" if model.provider == "openai" else "msg_01"
    attrs |= {
        "gen_ai.response.model": model.response,
        "gen_ai.response.id": f"{prefix}{rng.getrandbits(96):024x}",
        "gen_ai.response.finish_reasons": [finish],
        "gen_ai.response.time_to_first_chunk": round(ttft, 6) if stream else None,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.usage.cache_read.input_tokens": cache_read or None,
        "gen_ai.output.messages": jdump(output),
    }
    end = start + ms(dur * 1000)
    return t.span(scope, parent, name, KIND_CLIENT, start, end, attrs), end


def rewrite_span(t: TraceContext, parent: bytes, start: int, turn: Turn) -> tuple[str, int]:
    """The query rewriter: gemini via an old instrumentation (deprecated names, content events)."""
    q = turn.question
    query = (
        f"{turn.previous.body} ({q.body})" if q.topic == "follow_up" and turn.previous else q.body
    )
    model = world.MODELS[world.REWRITE_MODEL]
    prompt_tokens = world.SYSTEM_PROMPT_TOKENS["rewrite"] + sum(
        len(a) // 4 + tok for a, _, tok in turn.history[-2:]
    )
    out_tokens = len(query) // 4 + 3
    _, dur = model_timing(t.rng, model, prompt_tokens, out_tokens)
    end = start + ms(dur * 1000)
    prompt = [
        {"role": "system", "content": answers.REWRITE_PROMPT},
        {"role": "user", "content": q.masked_text},
    ]
    events: tuple[Event, ...] = (
        (start, "gen_ai.content.prompt", {"gen_ai.prompt": jdump(prompt)}),
        (
            end,
            "gen_ai.content.completion",
            {"gen_ai.completion": jdump([{"role": "assistant", "content": query}])},
        ),
    )
    attrs = {
        "gen_ai.system": "vertex_ai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model.request,
        "gen_ai.response.model": model.response,
        "gen_ai.request.temperature": 0.0,
        "gen_ai.request.max_tokens": 128,
        "gen_ai.usage.prompt_tokens": prompt_tokens,
        "gen_ai.usage.completion_tokens": out_tokens,
        "gen_ai.response.finish_reasons": ["stop"],
        "server.address": _HOSTS[model.provider],
    }
    t.span(
        (model.scope, _SCOPE_VERSIONS[model.scope]),
        parent,
        f"chat {model.request}",
        KIND_CLIENT,
        start,
        end,
        attrs,
        events=events,
    )
    return query, end


def tool_round(
    t: TraceContext,
    parent: bytes,
    start: int,
    model: world.Model,
    turn: Turn,
    intent: str,
    messages: list[dict[str, Any]],
    input_tokens: int,
    cache_read: int,
    common: dict[str, Any],
) -> tuple[int, int]:
    """Model asks for a tool, the tool runs; ``messages`` gains the call and its result."""
    rng = t.rng
    tool, description = answers.TOOLS[intent]
    slots = dict(turn.question.slots)
    args: dict[str, Any] = {
        "billing": {"month": slots.get("month", "latest"), "limit": 5},
        "account": {"user_id": turn.user_id},
        "tech_support": {"component": slots.get("component", "the REST API")},
        "product_qa": {"query": turn.question.body, "limit": 3},
    }[intent]
    call_id = f"call_{rng.getrandbits(64):016x}"
    call = [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": call_id, "name": tool, "arguments": args}],
            "finish_reason": "tool_call",
        }
    ]
    out_tokens = rng.randint(18, 45)
    _, cursor = chat_span(
        t,
        parent,
        start,
        model,
        turn.session_id,
        messages=list(messages),
        input_tokens=input_tokens,
        output=call,
        output_tokens=out_tokens,
        finish="tool_call",
        cache_read=cache_read,
        stream=False,
        **common,
    )
    result = {"status": "ok", "items": rng.randint(0, 4)}
    tool_end = cursor + ms(lognormal(rng, 60, 0.6))
    t.span(
        APP_SCOPE,
        parent,
        f"execute_tool {tool}",
        KIND_INTERNAL,
        cursor,
        tool_end,
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.description": description,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": args,
            "gen_ai.tool.call.result": jdump(result),
        },
    )
    messages += [
        {"role": "assistant", "parts": call[0]["parts"]},
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": call_id, "response": result}],
        },
    ]
    return tool_end + ms(rng.uniform(0.5, 2)), out_tokens + 40
