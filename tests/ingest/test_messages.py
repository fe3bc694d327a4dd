"""Text out of message shapes: an empty message list is no text, not the JSON of nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import messages as messages_module
from ingest.messages import extract_text


@pytest.mark.parametrize("value", ["[]", "{}", '{"messages": []}', '{"contents": []}', [], {}])
@pytest.mark.parametrize("mode", ["last_user", "first_output", "system", "text"])
def test_no_messages_is_no_text(value: object, mode: str) -> None:
    assert extract_text(value, mode) is None  # type: ignore[arg-type]


def test_messages_still_give_their_text() -> None:
    chat = '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]'
    assert extract_text(chat, "last_user") == "Hi"
    assert extract_text(chat, "system") == "Be brief."
    # JSON of an unknown shape keeps its text (it may be all there is)
    assert extract_text('{"query": "refund"}', "last_user") == '{"query": "refund"}'
    assert extract_text("plain words", "last_user") == "plain words"


# -- the typed reading of OTel GenAI message lists gives what the general reading gives ---------

_MODES = ("last_user", "first_output", "system")
_text = st.sampled_from(["", "Hi", "two\nlines", "é ✓", '{"json": "inside"}', " "])
_any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_text, inner, max_size=2),
    max_leaves=4,
)
_text_part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_text", "output_text"]), "content": _text}
)
_part_object = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            [None, "text", "input_text", "output_text", "tool_call", "image", 3, "TEXT"]
        ),
        "content": st.one_of(_text, _any_json),
        "text": st.one_of(_text, _any_json),
        "name": st.one_of(_text, st.none()),
        "arguments": _any_json,
        "id": _text,
    },
)
_part = st.one_of(_part_object, _text, st.integers(0, 3))
_role = st.sampled_from(
    ["user", "User", "HUMAN", "assistant", "model", "AI", "system", "developer", "tool"]
)
_extras = {
    "content": st.one_of(_text, _any_json),
    "text": _text,
    "message": st.fixed_dictionaries({"content": _text}),
    "tool_calls": st.lists(
        st.fixed_dictionaries({"function": st.fixed_dictionaries({"name": _text})}),
        max_size=1,
    ),
    "finish_reason": _text,
}
# Mostly the GenAI shape (a role and a list of part objects), some of it odd.
_genai_message = st.fixed_dictionaries(
    {"role": _role, "parts": st.lists(_text_part | _text_part | _part_object, max_size=3)},
    optional=_extras,
)
_message = st.one_of(
    _genai_message,
    st.fixed_dictionaries(
        {},
        optional={
            "role": _role | st.none() | st.integers(0, 2),
            "parts": st.lists(_part, max_size=3) | st.none() | _text,
            **_extras,
        },
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    messages=st.lists(_genai_message, min_size=1, max_size=4) | st.lists(_message, max_size=4),
    indent=st.sampled_from([None, 1]),
)
def test_typed_genai_reading_equals_the_general_one(
    messages: list[dict[str, Any]], indent: int | None
) -> None:
    value = json.dumps(messages, indent=indent, ensure_ascii=False)
    for mode in _MODES:
        assert extract_text(value, mode) == messages_module._general_text(value, mode), mode  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        # a repeated key: the last one counts, in both readings
        '[{"role": "user", "parts": [{"type": "text", "content": "a"}], "role": "assistant"}]',
        '[{"role": "user", "parts": [{"type": "text", "content": "a", "content": "b"}]}]',
        ' [{"role": "user", "parts": [{"type": "text", "content": "a"}]}]',  # not JSON to us
        '"[{\\"role\\": \\"user\\", \\"parts\\": [{\\"type\\": \\"text\\", \\"content\\": \\"a\\"}]}]"',
        '[{"role": "user", "parts": [{"type": "text", "content": NaN}]}]',
        '[{"role": "user", "parts": [{"type": "text", "content": "\\ud800"}]}]',
        '[{"role": "user", "parts": [{"type": "text", "content": "a"}]}',  # cut short
        '[{"role": "assistant", "parts": [{"type": "tool_call", "name": "f", "arguments": {"b": 1, "a": [2]}}]}]',
        '[{"role": "user", "parts": []}, {"role": "user", "parts": [{"content": "x"}]}]',
        "[]",
    ],
)
def test_typed_genai_reading_equals_the_general_one_on_odd_text(value: str) -> None:
    for mode in _MODES:
        assert extract_text(value, mode) == messages_module._general_text(value, mode), mode  # type: ignore[arg-type]


def test_standard_genai_messages_are_read_without_the_general_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
            {"role": "assistant", "parts": [{"type": "text", "content": "Hello"}]},
            {"role": "user", "parts": [{"type": "text", "content": "Refund?"}, {"content": "ctx"}]},
        ]
    )
    expected = {
        mode: messages_module._general_text(value, mode)  # type: ignore[arg-type]
        for mode in _MODES
    }
    assert expected == {
        "last_user": "Refund?\nctx",
        "first_output": "Hello",
        "system": "Be brief.",
    }

    def refuse(value: object, mode: str) -> None:
        raise AssertionError("the general reading was used")

    monkeypatch.setattr(messages_module, "_general_text", refuse)
    assert {mode: extract_text(value, mode) for mode in _MODES} == expected  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="general reading"):  # tool calls: read the general way
        extract_text('[{"role": "assistant", "parts": [{"type": "tool_call"}]}]', "first_output")
