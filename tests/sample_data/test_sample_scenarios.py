"""The seeded scenarios of sample_data/README.md are in the data, and the data looks like a
real product's (several conventions, users with heavy-tailed activity, a few errors)."""

from __future__ import annotations

from collections import Counter

import pytest
from sample_facts import START_NS, Dataset, compute_facts


@pytest.fixture(scope="module")
def facts(dataset: Dataset) -> dict[str, str]:
    """The README facts of the in-memory dataset."""
    return compute_facts(dataset.spans, dataset.feedback, START_NS, 14)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split()]


def _up_share(up_down: str) -> float:
    up, down = (int(x) for x in up_down.split("/"))
    return up / (up + down)


def test_gpt4o_ttft_doubles_with_the_new_version_on_day_9(facts: dict[str, str]) -> None:
    before = float(facts["gpt4o_ttft_p95_ms_days_0_8"])
    after = float(facts["gpt4o_ttft_p95_ms_days_9_13"])
    assert after > 1.5 * before
    assert facts["gpt4o_response_models_days_0_8"] == "gpt-4o-2024-08-06"
    assert facts["gpt4o_response_models_days_9_13"] == "gpt-4o-2024-11-20"


def test_vector_export_questions_appear_on_day_10(facts: dict[str, str]) -> None:
    per_day = _ints(facts["vector_export_queries_per_day"])
    assert per_day[:10] == [0] * 10
    assert all(n > 0 for n in per_day[10:])


def test_prompt_injection_spike_on_day_6(facts: dict[str, str]) -> None:
    attacks = _ints(facts["prompt_attacks_blocked_per_day"])
    traffic = _ints(facts["rag_chat_traces_per_day"])
    share = [a / t for a, t in zip(attacks, traffic, strict=True)]
    assert share[6] > 0.15
    assert all(share[6] > 5 * s for d, s in enumerate(share) if d != 6)


def test_thumbs_down_share_rises_after_the_day_11_prompt(facts: dict[str, str]) -> None:
    before = 1 - _up_share(facts["thumbs_up_down_days_0_10"])
    after = 1 - _up_share(facts["thumbs_up_down_days_11_13"])
    assert 0.08 < before < 0.25
    assert after > before + 0.1


def test_tech_support_is_better_on_the_bigger_model(facts: dict[str, str]) -> None:
    big = _up_share(facts["thumbs_up_down_tech_support_gpt-4o"])
    small = _up_share(facts["thumbs_up_down_tech_support_gpt-4o-mini"])
    assert big > small + 0.15


def test_priced_models_all_answer(facts: dict[str, str]) -> None:
    models = {k.removeprefix("usage_") for k in facts if k.startswith("usage_")}
    assert {
        "gpt-4o-2024-08-06",
        "gpt-4o-2024-11-20",
        "gpt-4o-mini-2024-07-18",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-haiku-20241022",
        "gemini-1.5-flash-002",
    } == models
    for model in models:
        calls, inputs, outputs, cached = (int(x) for x in facts[f"usage_{model}"].split(" / "))
        assert 200 < inputs / calls < 5000, model  # a RAG prompt, not a toy
        assert 10 < outputs / calls < 800, model
        assert cached < inputs


def test_repeated_questions_and_regenerations(facts: dict[str, str]) -> None:
    rag = int(facts["rag_chat_traces"])
    assert 0.05 < int(facts["repeat_questions_from_other_sessions"]) / rag < 0.25
    assert int(facts["regenerations"]) > 50


def test_errors_are_rare(facts: dict[str, str]) -> None:
    share = int(facts["error_traces"]) / int(facts["traces"])
    assert 0.005 < share < 0.03
    assert 0 < int(facts["root_error_traces"]) < int(facts["error_traces"])


def test_several_conventions_are_exercised(dataset: Dataset) -> None:
    keys = Counter(k for s in dataset.spans for k in s["attributes"])
    model_spans = sum(
        s["attributes"].get("gen_ai.operation.name") == "chat"
        or s["attributes"].get("openinference.span.kind") == "LLM"
        for s in dataset.spans
    )
    assert 0 < keys["gen_ai.system"] < 0.25 * model_spans  # deprecated names, a small share
    assert keys["gen_ai.usage.prompt_tokens"] == keys["gen_ai.system"]
    assert keys["llm.input_messages.0.message.content"] > 100  # OpenInference
    assert keys["gen_ai.usage.cache_read.input_tokens"] > 100
    services = {s["service_name"] for s in dataset.spans}
    assert services == {"rag-chat", "support-bot"}
    categories = Counter(
        s["attributes"].get("gen_ai.guardrail.risk.category") for s in dataset.spans
    )
    assert categories["PII"] > 10 and categories["PROMPT_ATTACK"] > 50


def test_users_are_heavy_tailed_and_sessions_multi_turn(dataset: Dataset) -> None:
    roots = [s for s in dataset.spans if s["parent_span_id"] is None]
    per_user = sorted(Counter(r["attributes"]["user.id"] for r in roots).values(), reverse=True)
    top_tenth = sum(per_user[: len(per_user) // 10])
    assert 100 < len(per_user) < 500
    assert top_tenth > 0.3 * len(roots)
    per_session = Counter(r["attributes"]["session.id"] for r in roots)
    assert max(per_session.values()) >= 5
    assert sum(n == 1 for n in per_session.values()) > 0.2 * len(per_session)
