"""The span tree of one rag-chat request: input guardrail, router, agent (query rewrite,
retrieval with its embedding, model calls, tool), output guardrail, under ``POST /chat``.
"""

from __future__ import annotations

import random
from typing import Any

from sample_data import answers, world
from sample_data.model_calls import ERRORS, chat_span, rewrite_span, tool_round
from sample_data.spans import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, STATUS_ERROR, BatchBuilder
from sample_data.texts import Question, compose_answer
from sample_data.traces import (
    APP_SCOPE,
    HTTP_SCOPE,
    RAG_RESOURCES,
    Outcome,
    TraceContext,
    Turn,
    jdump,
    lognormal,
    ms,
    text_message,
)

RATE_LIMIT_RATE = 0.012  # of answer calls
TIMEOUT_RATE = 0.004
RATE_LIMIT_RETRIED = 0.85


def _retrieval(
    t: TraceContext, parent: bytes, start: int, query: str, topic: str, new_topic: bool
) -> tuple[list[tuple[str, str]], int]:
    """Retrieval (with its query embedding); returns the (doc id, title) hits and the end."""
    rng = t.rng
    retrieval_id = t.new_id()
    emb_start = start + ms(rng.uniform(0.5, 2))
    emb_end = emb_start + ms(lognormal(rng, 28, 0.3))
    model = world.EMBEDDING_MODEL
    t.span(
        ("opentelemetry.instrumentation.openai_v2", "2.2b0"),
        retrieval_id,
        f"embeddings {model}",
        KIND_CLIENT,
        emb_start,
        emb_end,
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": len(query) // 4 + 1,
            "gen_ai.embeddings.dimension.count": 1536,
            "server.address": "api.openai.com",
            "server.port": 443,
        },
    )
    end = emb_end + ms(lognormal(rng, 45, 0.4))
    titles = answers.DOC_TITLES["product_qa" if new_topic else topic]
    top = 0.45 if new_topic else 0.82
    hits = []
    docs = []
    for i in range(5):
        title = rng.choice(titles)
        doc_id = f"kb-{topic.replace('_', '-')}-{rng.randrange(400):04d}"
        hits.append((doc_id, title))
        docs.append({"id": doc_id, "score": round(top - 0.04 * i - rng.uniform(0, 0.05), 4)})
    t.span(
        APP_SCOPE,
        parent,
        "retrieval kb-docs",
        KIND_CLIENT,
        start,
        end,
        {
            "gen_ai.operation.name": "retrieval",
            "gen_ai.data_source.id": "kb-docs",
            "gen_ai.retrieval.query.text": query,
            "gen_ai.retrieval.top_k": 5,
            "gen_ai.retrieval.documents": jdump(docs),
            "db.system.name": "qdrant",
        },
        span_id=retrieval_id,
    )
    return hits, end


def _input_guardrail(t: TraceContext, start: int, q: Question) -> tuple[bool, int]:
    """Bedrock guardrail on the user message; returns (blocked, end)."""
    rng = t.rng
    end = start + ms(lognormal(rng, 55, 0.3))
    blocked = (q.injection and rng.random() < 0.95) or (not q.injection and rng.random() < 0.002)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "apply_guardrail",
        "gen_ai.provider.name": "aws.bedrock",
        "gen_ai.guardrail.component.name": "Amazon Bedrock Guardrails",
        "gen_ai.guardrail.policy.id": "gr-input-7hq2k4",
        "gen_ai.guardrail.policy.version": "3",
        "gen_ai.guardrail.source": "INPUT",
        "gen_ai.guardrail.result.type": "action",
        "gen_ai.guardrail.result.value": "NONE",
        "aws.bedrock.guardrail.id": "gr-input-7hq2k4",
    }
    if blocked:
        attrs |= {
            "gen_ai.guardrail.result.value": "GUARDRAIL_INTERVENED",
            "gen_ai.guardrail.result.reason": "prompt_attack_blocked",
            "gen_ai.guardrail.risk.category": "PROMPT_ATTACK",
            "gen_ai.guardrail.risk.score": round(rng.uniform(0.8, 0.99), 3),
        }
    elif q.has_pii:
        attrs |= {
            "gen_ai.guardrail.result.value": "GUARDRAIL_INTERVENED",
            "gen_ai.guardrail.result.reason": "pii_anonymized",
            "gen_ai.guardrail.risk.category": "PII",
            "gen_ai.guardrail.risk.score": round(rng.uniform(0.9, 1.0), 3),
        }
    t.span(
        APP_SCOPE,
        t.root_id,
        "apply_guardrail Amazon Bedrock Guardrails",
        KIND_CLIENT,
        start,
        end,
        attrs,
    )
    return blocked, end


def _root(t: TraceContext, turn: Turn, end: int, status_code: int, error: str | None) -> None:
    attrs = {
        "http.request.method": "POST",
        "http.route": "/chat",
        "url.path": "/chat",
        "url.scheme": "https",
        "server.address": "chat.acme.example",
        "http.response.status_code": status_code,
        "user.id": turn.user_id,
        "session.id": turn.session_id,
        "gen_ai.conversation.id": turn.session_id,
        "error.type": error,
    }
    status = (STATUS_ERROR, f"upstream model call failed: {error}") if error else (0, "")
    t.span(
        HTTP_SCOPE,
        None,
        "POST /chat",
        KIND_SERVER,
        turn.start_ns,
        end,
        attrs,
        span_id=t.root_id,
        status=status,
    )


def rag_trace(b: BatchBuilder, rng: random.Random, tl: world.Timeline, turn: Turn) -> Outcome:
    """One rag-chat request: guardrail, route, agent (rewrite, retrieval, model calls, tool), guardrail."""
    q = turn.question
    version = "v2" if turn.start_ns >= tl.at_day(world.PROMPT_V2_DAY) else "v1"
    t = TraceContext(b, rng, RAG_RESOURCES[version])
    out = Outcome(t.trace_id, 0)
    blocked, cursor = _input_guardrail(t, turn.start_ns + ms(rng.uniform(1, 4)), q)
    if blocked:
        out.answer, out.end_ns = answers.REFUSAL, cursor + ms(rng.uniform(2, 6))
        _root(t, turn, out.end_ns, 200, None)
        return out
    intent = "smalltalk" if q.injection else q.intent
    route_end = cursor + ms(rng.uniform(3, 9))
    t.span(
        APP_SCOPE,
        t.root_id,
        "route",
        KIND_INTERNAL,
        cursor,
        route_end,
        {"app.route": intent, "app.route.confidence": round(rng.uniform(0.55, 0.99), 3)},
    )
    agent_id, agent_start = t.new_id(), route_end + ms(0.3)
    cursor = agent_start + ms(0.5)
    query = q.body
    if turn.history and (q.topic == "follow_up" or rng.random() < 0.25):
        query, cursor = rewrite_span(t, agent_id, cursor, turn)
    hits, cursor = _retrieval(t, agent_id, cursor, query, intent, q.new_topic)

    model = world.answer_model(intent, turn.bucket, turn.start_ns, tl)
    system = answers.SYSTEM_PROMPTS[version]
    has_tool = intent in answers.TOOLS
    messages, input_tokens, cache_read = _prompt(rng, turn, version, hits, has_tool, model)
    temperature = 0.7 if intent == "smalltalk" else 0.2
    common = {"system": system, "prompt_version": version, "temperature": temperature}

    # Errors on the answer call: rate limits are usually retried, timeouts never are.
    r, error = rng.random(), None
    if r < RATE_LIMIT_RATE:
        error = "RateLimitError"
    elif r < RATE_LIMIT_RATE + TIMEOUT_RATE:
        error = "Timeout"
    if error is not None:
        out.error = True
        _, cursor = chat_span(
            t,
            agent_id,
            cursor,
            model,
            turn.session_id,
            messages=messages,
            input_tokens=input_tokens,
            output=[],
            output_tokens=0,
            finish="error",
            cache_read=0,
            error=error,
            **common,
        )
        if error == "Timeout" or rng.random() >= RATE_LIMIT_RETRIED:
            return _fail(t, turn, out, agent_id, agent_start, cursor, error)
        cursor += ms(rng.uniform(500, 2000))  # back-off before the retry

    if has_tool and rng.random() < 0.25:
        cursor, extra = tool_round(
            t, agent_id, cursor, model, turn, intent, messages, input_tokens, cache_read, common
        )
        input_tokens += extra
    median, sigma = world.OUTPUT_TOKENS["vector_export" if q.new_topic else intent]
    scale = world.PROMPT_V2_OUTPUT_SCALE if version == "v2" else 1.0
    out_tokens = max(3, int(lognormal(rng, median * scale, sigma)))
    finish = "stop"
    if out_tokens > world.MAX_TOKENS:
        out_tokens, finish = world.MAX_TOKENS, "length"
    elif rng.random() < 0.002:
        out_tokens, finish = rng.randint(4, 30), "content_filter"
    bad = finish != "stop" or rng.random() < world.bad_probability(
        intent, model.request, version, q.new_topic
    )
    text = (
        ""
        if finish == "content_filter"
        else compose_answer(rng, q, min(out_tokens * 4, 700), bad, version)
    )
    if bad and len(text) < 120 and finish == "stop":
        out_tokens = max(8, len(text) // 4 + rng.randint(0, 6))  # a hedge is short
    output = [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": text}] if text else [],
            "finish_reason": finish,
        }
    ]
    out.answer_span_id, cursor = chat_span(
        t,
        agent_id,
        cursor,
        model,
        turn.session_id,
        messages=messages,
        input_tokens=input_tokens,
        output=output,
        output_tokens=out_tokens,
        finish=finish,
        cache_read=cache_read,
        **common,
    )
    agent_end = cursor + ms(rng.uniform(0.5, 2))
    _agent(t, agent_id, agent_start, agent_end, turn.session_id)

    tripped, g_end = _output_guardrail(t, agent_end, bad)
    out.end_ns = g_end + ms(rng.uniform(1, 3))
    _root(t, turn, out.end_ns, 200, None)
    out.answered, out.bad, out.answer, out.answer_tokens = True, bad or tripped, text, out_tokens
    return out


def _agent(t: TraceContext, agent_id: bytes, start: int, end: int, conv_id: str) -> None:
    t.span(
        APP_SCOPE,
        t.root_id,
        "invoke_agent rag-chat",
        KIND_INTERNAL,
        start,
        end,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "rag-chat",
            "gen_ai.data_source.id": "kb-docs",
            "gen_ai.conversation.id": conv_id,
        },
        span_id=agent_id,
    )


def _fail(
    t: TraceContext,
    turn: Turn,
    out: Outcome,
    agent_id: bytes,
    agent_start: int,
    cursor: int,
    error: str,
) -> Outcome:
    end = cursor + ms(t.rng.uniform(0.5, 2))
    t.span(
        APP_SCOPE,
        t.root_id,
        "invoke_agent rag-chat",
        KIND_INTERNAL,
        agent_start,
        end,
        {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "rag-chat",
            "gen_ai.data_source.id": "kb-docs",
            "gen_ai.conversation.id": turn.session_id,
            "error.type": error,
        },
        span_id=agent_id,
        status=(STATUS_ERROR, ERRORS[error]),
    )
    out.end_ns = end + ms(t.rng.uniform(1, 3))
    _root(t, turn, out.end_ns, 504 if error == "Timeout" else 429, error)
    return out


def _prompt(
    rng: random.Random,
    turn: Turn,
    version: str,
    hits: list[tuple[str, str]],
    has_tool: bool,
    model: world.Model,
) -> tuple[list[dict[str, Any]], int, int]:
    """The answer call's input messages, input tokens and cache-read tokens."""
    q = turn.question
    context = "Context:\n" + "\n".join(f"[{d}] {title}" for d, title in hits)
    history_tokens = 0
    messages: list[dict[str, Any]] = []
    for past_q, past_a, past_tokens in turn.history[-2:]:
        messages += [text_message("user", past_q), text_message("assistant", past_a[:300])]
        history_tokens += len(past_q) // 4 + past_tokens
    parts = [{"type": "text", "content": q.masked_text}, {"type": "text", "content": context}]
    messages.append({"role": "user", "parts": parts})
    system_tokens = world.SYSTEM_PROMPT_TOKENS[version]
    input_tokens = (
        system_tokens
        + (120 if has_tool else 0)
        + history_tokens
        + sum(rng.randint(110, 260) for _ in hits)
        + len(q.text) // 4
        + 4
    )
    # Providers cache a stable prompt prefix (system prompt, tools, history) of 1024+ tokens.
    prefix = system_tokens + 120 + history_tokens
    hit_rate = 0.7 if model.provider == "openai" else 0.5
    cached = prefix >= 1024 and input_tokens >= 1024 and rng.random() < hit_rate
    return messages, input_tokens, prefix // 128 * 128 if cached else 0


def _output_guardrail(t: TraceContext, start: int, bad: bool) -> tuple[bool, int]:
    """Groundedness check on the answer; returns (tripped, end)."""
    tripped = t.rng.random() < (0.08 if bad else 0.004)
    end = start + ms(lognormal(t.rng, 30, 0.3))
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "apply_guardrail",
        "gen_ai.guardrail.component.name": "groundedness-check",
        "gen_ai.guardrail.policy.id": "grounding-v1",
        "gen_ai.guardrail.source": "OUTPUT",
        "gen_ai.guardrail.result.type": "tripwire_triggered",
        "gen_ai.guardrail.result.value": "true" if tripped else "false",
        "gen_ai.guardrail.result.reason": "ungrounded_answer" if tripped else None,
    }
    t.span(
        APP_SCOPE, t.root_id, "apply_guardrail groundedness-check", KIND_INTERNAL, start, end, attrs
    )
    return tripped, end
