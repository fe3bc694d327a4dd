"""Text out of message shapes: an empty message list is no text, not the JSON of nothing."""

from __future__ import annotations

import pytest

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
