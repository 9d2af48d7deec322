"""The grounding prompt: numbered sources, instructions in the user's language, history kept."""

from __future__ import annotations

import pytest

from rixin.errors import InvalidRequest
from rixin.schemas.chat import ChatMessage
from rixin.services.grounding import (
    Citation,
    detect_language,
    grounded_messages,
    last_user_text,
)

CITATIONS = [
    Citation(1, "file_a", "a.txt", 0.9, "The lamp is green."),
    Citation(2, "file_b", "b.md", 0.5, "Tomatoes like sun."),
]


def msg(role: str, content: str) -> ChatMessage:
    return ChatMessage.model_validate({"role": role, "content": content})


def test_sources_are_numbered_in_the_last_user_turn() -> None:
    history = [msg("user", "hi"), msg("assistant", "hello"), msg("user", "What colour is it?")]
    out = grounded_messages(history, CITATIONS, "en")
    assert [m.role for m in out] == ["system", "user", "assistant", "user"]
    assert out[1:3] == history[:2]
    assert out[-1].content == (
        "Sources:\n[1] a.txt: The lamp is green.\n\n[2] b.md: Tomatoes like sun.\n\n"
        "Question: What colour is it?"
    )
    system = str(out[0].content)
    assert "only" in system and "[1]" in system and "no answer" in system


def test_instructions_join_an_existing_system_message_in_chinese() -> None:
    out = grounded_messages(
        [msg("system", "你是助手。"), msg("user", "灯是什么颜色？")], CITATIONS, "zh"
    )
    assert len(out) == 2 and out[0].role == "system"
    system = str(out[0].content)
    assert system.endswith("你是助手。") and "知识库中没有答案" in system and "中文" in system
    assert str(out[1].content).startswith("资料：\n[1] a.txt:")


def test_the_query_is_the_last_user_text() -> None:
    parts = ChatMessage.model_validate(
        {
            "role": "user",
            "content": [{"type": "text", "text": "熊猫"}, {"type": "text", "text": "吃什么"}],
        }
    )
    assert last_user_text([msg("user", "old"), msg("assistant", "x"), parts]) == "熊猫吃什么"
    with pytest.raises(InvalidRequest) as info:
        last_user_text([msg("user", "  ")])
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    ("text", "language"), [("What is this?", "en"), ("这是什么？", "zh"), ("rixin 是什么", "zh")]
)
def test_language(text: str, language: str) -> None:
    assert detect_language(text) == language
