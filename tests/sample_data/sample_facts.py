"""A plain-Python reference for the facts sample_data/README.md states about the committed
dataset, computed from flat span and feedback records (the ``traces.jsonl`` format).

Definitions match the README: a trace's day is floor((root start − window start) / 24 h);
percentiles interpolate linearly (numpy's default).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from sample_data.generator import Batch

NUM_TRACES, DAYS, SEED = 3000, 14, 7  # the committed dataset
DAY_NS = 86_400 * 10**9
START_NS = 1_794_528_000 * 10**9  # 2026-11-13T00:00Z: 14 days before the default end
END_NS = START_NS + DAYS * DAY_NS
AB_INTENTS = ("tech_support", "smalltalk", "account")


@dataclass
class Dataset:
    """Batches, their spans as flat records, and the feedback records."""

    batches: list[Batch]
    spans: list[dict[str, Any]]
    feedback: list[dict[str, Any]]


def _day(ns: int, start_ns: int) -> int:
    return (ns - start_ns) // DAY_NS


def _per_day(counter: Counter[int], days: int) -> str:
    return " ".join(str(counter[d]) for d in range(days))


def last_user_text(span: dict[str, Any]) -> str | None:
    """The first text part of the last user message in ``gen_ai.input.messages``."""
    raw = span["attributes"].get("gen_ai.input.messages")
    if not raw:
        return None
    last = json.loads(raw)[-1]
    return last["parts"][0]["content"] if last["role"] == "user" else None


def compute_facts(
    spans: list[dict[str, Any]], feedback: list[dict[str, Any]], start_ns: int, days: int
) -> dict[str, str]:
    """Every README fact, keyed as in the README table, as the text the table shows."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        traces[s["trace_id"]].append(s)
    roots = {t: next(s for s in ss if s["parent_span_id"] is None) for t, ss in traces.items()}
    day = {t: _day(r["start_time"], start_ns) for t, r in roots.items()}
    rag = [t for t, r in roots.items() if r["service_name"] == "rag-chat"]
    facts: dict[str, str] = {
        "traces": str(len(traces)),
        "spans": str(len(spans)),
        "feedback_records": str(len(feedback)),
        "rag_chat_traces": str(len(rag)),
        "support_bot_traces": str(len(traces) - len(rag)),
        "users": str(len({r["attributes"]["user.id"] for r in roots.values()})),
        "sessions": str(len({r["attributes"]["session.id"] for r in roots.values()})),
        "traces_per_day": _per_day(Counter(day.values()), days),
    }

    # Scenario 1: gpt-4o TTFT before / from day 9.
    for label, lo, hi in (("days_0_8", 0, 9), ("days_9_13", 9, days)):
        calls = [
            s
            for t in rag
            if lo <= day[t] < hi
            for s in traces[t]
            if s["attributes"].get("gen_ai.request.model") == "gpt-4o"
            and "gen_ai.response.time_to_first_chunk" in s["attributes"]
        ]
        ttft_ms = [s["attributes"]["gen_ai.response.time_to_first_chunk"] * 1000 for s in calls]
        facts[f"gpt4o_streamed_calls_{label}"] = str(len(calls))
        facts[f"gpt4o_response_models_{label}"] = ", ".join(
            sorted({s["attributes"]["gen_ai.response.model"] for s in calls})
        )
        facts[f"gpt4o_ttft_p50_ms_{label}"] = f"{np.percentile(ttft_ms, 50):.1f}"
        facts[f"gpt4o_ttft_p95_ms_{label}"] = f"{np.percentile(ttft_ms, 95):.1f}"

    # Scenario 2: the new topic, by the retrieval query text.
    topic: Counter[int] = Counter()
    # Scenario 3: input guardrail interventions for prompt attacks.
    attacks: Counter[int] = Counter()
    rag_per_day: Counter[int] = Counter()
    for t in rag:
        rag_per_day[day[t]] += 1
        for s in traces[t]:
            a = s["attributes"]
            if "vector export" in a.get("gen_ai.retrieval.query.text", "").lower():
                topic[day[t]] += 1
            if a.get("gen_ai.guardrail.risk.category") == "PROMPT_ATTACK":
                attacks[day[t]] += 1
    facts["rag_chat_traces_per_day"] = _per_day(rag_per_day, days)
    facts["vector_export_queries_per_day"] = _per_day(topic, days)
    facts["prompt_attacks_blocked_per_day"] = _per_day(attacks, days)

    # Scenarios 4 and 7: thumbs on rag-chat answers.
    by_span = {s["span_id"]: s for s in spans}
    route = {
        t: s["attributes"]["app.route"] for t in rag for s in traces[t] if s["name"] == "route"
    }
    thumbs = [f for f in feedback if f["kind"] == "thumbs" and f["trace_id"] in route]
    for label, lo, hi in (("days_0_10", 0, 11), ("days_11_13", 11, days)):
        part = [f for f in thumbs if lo <= day[f["trace_id"]] < hi]
        down = sum(f["value"] < 0 for f in part)
        facts[f"thumbs_up_down_{label}"] = f"{len(part) - down}/{down}"
    ab: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for f in thumbs:
        model = by_span[f["span_id"]]["attributes"]["gen_ai.request.model"]
        ab[(route[f["trace_id"]], model)][0 if f["value"] > 0 else 1] += 1
    for intent in AB_INTENTS:
        for model in ("gpt-4o", "gpt-4o-mini"):
            up, down = ab[(intent, model)]
            facts[f"thumbs_up_down_{intent}_{model}"] = f"{up}/{down}"

    # Scenario 5: model calls and tokens by response model.
    usage: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in spans:
        a = s["attributes"]
        model = a.get("gen_ai.response.model") or a.get("llm.model_name")
        if model is None or a.get("gen_ai.operation.name") == "embeddings":
            continue
        row = usage[model]
        row[0] += 1
        row[1] += a.get("gen_ai.usage.input_tokens", a.get("gen_ai.usage.prompt_tokens", 0))
        row[1] += a.get("llm.token_count.prompt", 0)
        row[2] += a.get("gen_ai.usage.output_tokens", a.get("gen_ai.usage.completion_tokens", 0))
        row[2] += a.get("llm.token_count.completion", 0)
        row[3] += a.get("gen_ai.usage.cache_read.input_tokens", 0)
    for model, (calls, inp, out, cached) in sorted(usage.items()):
        facts[f"usage_{model}"] = f"{calls} / {inp} / {out} / {cached}"

    # Scenario 6 and implicit feedback.
    first_session: dict[str, str] = {}
    repeats = 0
    regenerations = 0
    last: dict[str, tuple[int, str]] = {}
    for t in sorted(rag, key=lambda t: roots[t]["start_time"]):
        root = roots[t]
        session = root["attributes"]["session.id"]
        text = next((x for s in traces[t] if (x := last_user_text(s))), None)
        if text is None:
            continue
        if text in first_session and first_session[text] != session:
            repeats += 1
        first_session.setdefault(text, session)
        before = last.get(session)
        if before and before[1] == text and root["start_time"] - before[0] <= 30 * 10**9:
            regenerations += 1
        last[session] = (root["end_time"], text)
    facts["repeat_questions_from_other_sessions"] = str(repeats)
    facts["regenerations"] = str(regenerations)
    facts["error_traces"] = str(
        sum(any(s["status_code"] == "ERROR" for s in ss) for ss in traces.values())
    )
    facts["root_error_traces"] = str(sum(r["status_code"] == "ERROR" for r in roots.values()))
    facts["feedback_by_kind"] = ", ".join(
        f"{k} {n}" for k, n in sorted(Counter(f["kind"] for f in feedback).items())
    )
    return facts
