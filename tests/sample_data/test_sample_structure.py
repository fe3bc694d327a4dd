"""Every trace is a well-formed tree in the window, and model-call numbers agree."""

from __future__ import annotations

import json
import re
from collections import defaultdict

from sample_facts import END_NS, START_NS, Dataset

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


def test_trees_are_complete_and_nested(dataset: Dataset) -> None:
    traces = defaultdict(dict)
    for s in dataset.spans:
        assert HEX32.fullmatch(s["trace_id"]) and HEX16.fullmatch(s["span_id"])
        assert s["span_id"] not in traces[s["trace_id"]], "span ids are unique in a trace"
        traces[s["trace_id"]][s["span_id"]] = s
    assert len(traces) == 3000
    for spans in traces.values():
        roots = [s for s in spans.values() if s["parent_span_id"] is None]
        assert len(roots) == 1
        for s in spans.values():
            assert START_NS <= s["start_time"] <= s["end_time"] < END_NS
            if s["parent_span_id"] is not None:
                parent = spans[s["parent_span_id"]]  # the parent is in the same trace
                assert parent["start_time"] <= s["start_time"]
                assert s["end_time"] <= parent["end_time"]


def test_streamed_calls_last_ttft_plus_output_tokens_times_tpot(dataset: Dataset) -> None:
    checked = 0
    for s in dataset.spans:
        a = s["attributes"]
        if "gen_ai.response.time_to_first_chunk" not in a:
            continue
        assert a["gen_ai.request.stream"] is True
        duration_s = (s["end_time"] - s["start_time"]) / 1e9
        ttft_s = a["gen_ai.response.time_to_first_chunk"]
        output_tokens = a["gen_ai.usage.output_tokens"]
        assert 0 < ttft_s < duration_s
        if output_tokens >= 10:
            tpot_s = (duration_s - ttft_s) / (output_tokens - 1)
            assert 0.005 <= tpot_s <= 0.08, (s["name"], tpot_s)
            checked += 1
        assert a.get("gen_ai.usage.cache_read.input_tokens", 0) <= a["gen_ai.usage.input_tokens"]
    assert checked > 1000


def test_openinference_first_token_event_inside_the_llm_span(dataset: Dataset) -> None:
    llm = [s for s in dataset.spans if s["attributes"].get("openinference.span.kind") == "LLM"]
    assert llm
    for s in llm:
        (event,) = s["events"]
        assert event["name"] == "First Token Stream Event"
        assert s["start_time"] < event["time"] < s["end_time"]
        a = s["attributes"]
        assert (
            a["llm.token_count.total"]
            == a["llm.token_count.prompt"] + a["llm.token_count.completion"]
        )


def test_content_attributes_follow_the_message_schema(dataset: Dataset) -> None:
    for s in dataset.spans:
        a = s["attributes"]
        if "gen_ai.system_instructions" in a:
            (part,) = json.loads(a["gen_ai.system_instructions"])
            assert part["type"] == "text" and part["content"]
        for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
            if key in a:
                for message in json.loads(a[key]):
                    assert message["role"] in {"user", "assistant", "tool"}
                    assert all("type" in p for p in message["parts"])
        if "gen_ai.response.finish_reasons" in a:
            assert isinstance(a["gen_ai.response.finish_reasons"], list)


def test_feedback_points_at_real_answers(dataset: Dataset) -> None:
    spans = {(s["trace_id"], s["span_id"]): s for s in dataset.spans}
    roots = {s["trace_id"]: s for s in dataset.spans if s["parent_span_id"] is None}
    for f in dataset.feedback:
        assert f["type"] == "feedback" and f["source"] == "explicit"
        root = roots[f["trace_id"]]
        assert f["time"] > root["end_time"]
        assert f["user_id"] == root["attributes"]["user.id"]
        if f["span_id"] is not None:
            assert (f["trace_id"], f["span_id"]) in spans
        value = {"thumbs": {1.0, -1.0}, "rating": {1.0, 2.0, 3.0, 4.0, 5.0}}.get(
            f["kind"], {None} if f["kind"] in ("comment", "edit") else {1.0}
        )
        assert f["value"] in value, f
        assert (f["text"] is not None) == (f["kind"] in ("comment", "edit"))
