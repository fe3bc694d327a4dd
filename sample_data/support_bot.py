"""The span tree of one support-bot request, instrumented with OpenInference (LlamaIndex):
a CHAIN root, a RETRIEVER and an LLM span with TTFT as a ``First Token Stream Event``.
"""

from __future__ import annotations

import random
from typing import Any

from sample_data import answers, world
from sample_data.spans import KIND_INTERNAL, STATUS_OK, BatchBuilder, flatten_messages
from sample_data.texts import compose_answer, doc_snippet
from sample_data.traces import (
    OI_SCOPE,
    SUPPORT_RESOURCE,
    Outcome,
    TraceContext,
    Turn,
    jdump,
    lognormal,
    model_timing,
    ms,
)


def support_trace(b: BatchBuilder, rng: random.Random, turn: Turn) -> Outcome:
    """One support-bot request, instrumented with OpenInference (LlamaIndex)."""
    t = TraceContext(b, rng, SUPPORT_RESOURCE)
    out = Outcome(t.trace_id, 0)
    q = turn.question
    who = {"session.id": turn.session_id, "user.id": turn.user_id}
    ret_start = turn.start_ns + ms(rng.uniform(1, 3))
    ret_end = ret_start + ms(lognormal(rng, 90, 0.4))
    docs: dict[str, Any] = {"openinference.span.kind": "RETRIEVER", "input.value": q.text, **who}
    for i in range(3):
        base = f"retrieval.documents.{i}.document"
        docs |= {
            f"{base}.id": f"hc-{rng.randrange(900):04d}",
            f"{base}.score": round(0.85 - 0.05 * i - rng.uniform(0, 0.05), 4),
            f"{base}.content": doc_snippet(rng, q.intent),
        }
    t.span(
        OI_SCOPE,
        t.root_id,
        "retrieve",
        KIND_INTERNAL,
        ret_start,
        ret_end,
        docs,
        status=(STATUS_OK, ""),
    )

    acc, name = 0.0, world.SUPPORT_BOT_MODELS[-1][0]
    for candidate, share in world.SUPPORT_BOT_MODELS:
        acc += share
        if turn.bucket < acc:
            name = candidate
            break
    model = world.MODELS[name]
    bad = rng.random() < world.SUPPORT_BOT_BAD_RATE
    median, sigma = world.OUTPUT_TOKENS[q.intent]
    out_tokens = min(600, max(5, int(lognormal(rng, median, sigma))))
    text = compose_answer(rng, q, min(out_tokens * 4, 600), bad, "v1")
    prompt_tokens = world.SYSTEM_PROMPT_TOKENS["support-bot"] + 3 * 180 + len(q.text) // 4
    ttft, dur = model_timing(rng, model, prompt_tokens, out_tokens)
    llm_start = ret_end + ms(rng.uniform(0.5, 2))
    llm_end = llm_start + ms(dur * 1000)
    msgs = [("system", answers.SUPPORT_BOT_PROMPT), ("user", q.text)]
    llm: dict[str, Any] = {
        "openinference.span.kind": "LLM",
        "llm.model_name": model.response,
        "llm.provider": model.provider,
        "llm.system": model.provider,
        "llm.invocation_parameters": jdump(
            {"model": model.request, "temperature": 0.2, "max_tokens": 600, "stream": True}
        ),
        **flatten_messages("llm.input_messages", msgs),
        **flatten_messages("llm.output_messages", [("assistant", text)]),
        "llm.token_count.prompt": prompt_tokens,
        "llm.token_count.completion": out_tokens,
        "llm.token_count.total": prompt_tokens + out_tokens,
        "input.value": jdump([{"role": r, "content": c} for r, c in msgs]),
        "input.mime_type": "application/json",
        "output.value": text,
        "output.mime_type": "text/plain",
        **who,
    }
    label = "OpenAI" if model.provider == "openai" else "Anthropic"
    out.answer_span_id = t.span(
        OI_SCOPE,
        t.root_id,
        f"{label}.astream_chat",
        KIND_INTERNAL,
        llm_start,
        llm_end,
        llm,
        status=(STATUS_OK, ""),
        events=((llm_start + ms(ttft * 1000), "First Token Stream Event", {}),),
    )
    out.end_ns = llm_end + ms(rng.uniform(1, 4))
    t.span(
        OI_SCOPE,
        None,
        "query",
        KIND_INTERNAL,
        turn.start_ns,
        out.end_ns,
        {
            "openinference.span.kind": "CHAIN",
            "input.value": q.text,
            "input.mime_type": "text/plain",
            "output.value": text,
            "output.mime_type": "text/plain",
            **who,
            "metadata": jdump({"channel": "zendesk", "ticket_id": f"T-{rng.randrange(10**6):06d}"}),
            "tag.tags": ["support", q.intent],
        },
        span_id=t.root_id,
        status=(STATUS_OK, ""),
    )
    out.answered, out.bad, out.answer, out.answer_tokens = True, bad, text, out_tokens
    return out
