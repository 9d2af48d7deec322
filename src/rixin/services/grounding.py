"""Grounded answers: chat completions that answer from the caller's vector stores, with citations.

A chat completion request carrying ``"rixin": {"vector_store_ids": [...]}`` is grounded: the last
user message is searched in each store (under the caller's project only, so a foreign id is a 404),
hits are merged by score, and the best ``max_num_results`` above ``score_threshold`` become
numbered sources ``[n] filename: text`` in the prompt, with instructions to answer only from them,
cite them as ``[n]`` and say plainly when they hold no answer, in the user's language. When
nothing is retrieved the model is not called at all: the reply says the knowledge base has no
answer (in Chinese for a Chinese question) and its usage is zero.

The response is an ordinary ``chat.completion`` plus a top-level extension block
``"rixin": {"citations": [{"index", "file_id", "filename", "score", "text"}]}``. Streams carry
the block on their **first** chunk: sources are known before generation starts, so a client can
show them while the answer streams. Requests without ``vector_store_ids`` pass straight through
to ``ChatService``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rixin.errors import InvalidRequest, NotFound
from rixin.schemas.chat import ChatCompletionRequest, ChatMessage, ChatRixinOptions
from rixin.schemas.vector_stores import RankingOptions, VectorStoreSearchRequest
from rixin.services.chat import _FINGERPRINT, ChatService, new_id
from rixin.services.reply import Reply
from rixin.services.streaming import sse_stream
from rixin.services.vector_stores import RANKERS, VectorStoreService

Language = Literal["zh", "en"]

MAX_SOURCE_CHARS = 1200
"""One source's text in the prompt (and in its citation) is cut to this many characters."""
SOURCE_BUDGET_CHARS = 4000
"""All sources together: small local models serve 2k-token slots, so the prompt stays short."""
_MIN_SOURCE_CHARS = 100
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_PARAM = "rixin.vector_store_ids"

NO_ANSWER: dict[Language, str] = {
    "zh": "知识库中没有找到这个问题的答案。",
    "en": "The knowledge base has no answer to this question.",
}
_INSTRUCTIONS: dict[Language, str] = {
    "zh": (
        "请只根据用户消息中编号的资料回答问题。每个事实后用方括号标注资料编号，例如 [1]。"
        "如果资料中没有答案，请直接说明知识库中没有答案，不要猜测。请用中文回答。"
    ),
    "en": (
        "Answer the question using only the numbered sources in the user's message. Cite the "
        "source of every fact with its number in square brackets, like [1]. If the sources do "
        "not contain the answer, say plainly that the knowledge base has no answer; do not "
        "guess. Answer in English."
    ),
}
_LABELS: dict[Language, tuple[str, str]] = {
    "zh": ("资料：", "问题："),
    "en": ("Sources:", "Question: "),
}


@dataclass(frozen=True)
class Citation:
    """One numbered source of a grounded answer, as sent in ``rixin.citations``."""

    index: int
    file_id: str
    filename: str
    score: float
    text: str


class GroundingService:
    """Chat completions grounded in vector stores; plain ones are handed to ``ChatService``."""

    def __init__(self, chat: ChatService, vector_stores: VectorStoreService) -> None:
        self.chat = chat
        self.vector_stores = vector_stores

    async def create(self, project_id: str, req: ChatCompletionRequest) -> Reply:
        options = req.rixin
        if options is None or not options.vector_store_ids:
            return await self.chat.create(req)
        self.chat.check(req)  # a bad model or parameter fails before any retrieval
        question = last_user_text(req.messages)
        language = detect_language(question)
        citations = await self.retrieve(project_id, options, question)
        extension = {"rixin": {"citations": [asdict(c) for c in citations]}}
        if not citations:
            return _no_answer(req, NO_ANSWER[language], extension)
        grounded = req.model_copy(
            update={
                "messages": grounded_messages(req.messages, citations, language),
                "rixin": None,
            }
        )
        if not req.stream:
            reply = await self.chat.complete(grounded)
            assert isinstance(reply.content, dict)
            return Reply({**reply.content, **extension}, reply.replica)
        opened = await self.chat.open_chunks(grounded)
        chunks = _with_extension(opened.chunks, extension)
        return Reply(sse_stream(chunks, on_close=opened.aclose), opened.replica)

    async def retrieve(
        self, project_id: str, options: ChatRixinOptions, question: str
    ) -> list[Citation]:
        """The best hits over all stores, numbered from 1; every store is checked first."""
        if options.ranker not in RANKERS:
            raise InvalidRequest(
                f"Unknown ranker {options.ranker[:40]!r}; expected one of {', '.join(RANKERS)}.",
                param="rixin.ranker",
            )
        store_ids = list(dict.fromkeys(options.vector_store_ids or []))
        for store_id in store_ids:
            try:
                await self.vector_stores.retrieve(project_id, store_id)
            except NotFound as exc:
                raise NotFound(exc.message, param=_PARAM) from exc
        request = VectorStoreSearchRequest(
            query=question,
            max_num_results=options.max_num_results,
            ranking_options=RankingOptions(
                ranker=options.ranker, score_threshold=options.score_threshold
            ),
        )
        hits = []
        for store_id in store_ids:
            hits.extend((await self.vector_stores.search(project_id, store_id, request)).data)
        hits.sort(key=lambda hit: -hit.score)
        citations: list[Citation] = []
        budget = SOURCE_BUDGET_CHARS
        for hit in hits[: options.max_num_results]:
            if budget < _MIN_SOURCE_CHARS:
                break
            text = "".join(part.text for part in hit.content).strip()
            text = text[: min(MAX_SOURCE_CHARS, budget)]
            if not text:
                continue
            budget -= len(text)
            citations.append(
                Citation(len(citations) + 1, hit.file_id, hit.filename, hit.score, text)
            )
        return citations


# -- prompt ---------------------------------------------------------------------------------------


def detect_language(text: str) -> Language:
    """Chinese when the text holds any CJK ideograph, else English."""
    return "zh" if _CJK.search(text) else "en"


def last_user_text(messages: list[ChatMessage]) -> str:
    """The text of the last user message: the retrieval query."""
    for message in reversed(messages):
        if message.role == "user":
            text = _text(message).strip()
            if text:
                return text
            break
    raise InvalidRequest("Grounded answers need a last user message with text.", param="messages")


def grounded_messages(
    messages: list[ChatMessage], citations: list[Citation], language: Language
) -> list[ChatMessage]:
    """The conversation with the instructions in front and the sources in the last user turn."""
    heading, question_label = _LABELS[language]
    sources = "\n\n".join(f"[{c.index}] {c.filename}: {c.text}" for c in citations)
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    out = list(messages)
    out[last] = ChatMessage(
        role="user",
        content=f"{heading}\n{sources}\n\n{question_label}{_text(messages[last]).strip()}",
    )
    instructions = _INSTRUCTIONS[language]
    if out[0].role in ("system", "developer"):
        out[0] = ChatMessage(role=out[0].role, content=f"{instructions}\n\n{_text(out[0])}")
    else:
        out.insert(0, ChatMessage(role="system", content=instructions))
    return out


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text or "" for part in message.content or [] if part.type == "text")


# -- replies --------------------------------------------------------------------------------------


async def _with_extension(
    chunks: AsyncIterator[dict[str, Any]], extension: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    first = True
    async for chunk in chunks:
        yield {**chunk, **extension} if first else chunk
        first = False


def _no_answer(req: ChatCompletionRequest, content: str, extension: dict[str, Any]) -> Reply:
    """The knowledge base holds nothing relevant: say so without calling the model."""
    base = {
        "id": new_id("chatcmpl"),
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": _FINGERPRINT,
    }
    indexes = range(req.n or 1)
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    if not req.stream:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
            for i in indexes
        ]
        body = {**base, "object": "chat.completion", "choices": choices, "usage": usage}
        return Reply({**body, **extension}, "none")
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        head = {**base, "object": "chat.completion.chunk"}
        opening = [
            {"index": i, "delta": {"role": "assistant", "content": content}, "finish_reason": None}
            for i in indexes
        ]
        yield {**head, "choices": opening, **extension}
        yield {
            **head,
            "choices": [{"index": i, "delta": {}, "finish_reason": "stop"} for i in indexes],
        }
        if include_usage:
            yield {**head, "choices": [], "usage": usage}

    return Reply(sse_stream(chunks()), "none")
