"""A reranker built on a served chat model: one yes/no relevance question per document.

No cross-encoder ships in any package, but the packaged chat model can judge relevance. For each
document the chat model is asked, with ``max_tokens=1`` and greedy decoding, whether the document
is relevant to the query; the score is P(yes) normalised over yes/no among the first token's
``top_logprobs`` (``yes``/``Yes``/`` yes``, and ``是``/``否`` for a model that answers in Chinese).
Only the ordering is meaningful: small models are poorly calibrated, so scores of relevant
documents may sit well below 1.

The chat model is looked up by id through ``EngineContext.resolve_chat`` on first use, not in the
factory, because it may be loaded after the reranker is built.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rixin.engines.base import Capabilities, ChatResult, RerankResult
from rixin.errors import BackendError, ModelUnavailable, RixinError

if TYPE_CHECKING:
    from rixin.engines.registry import EngineContext
    from rixin.settings import ReplicaConfig

SYSTEM_PROMPT = (
    "Judge whether the document answers or is relevant to the query. The query and the document "
    "may be in English or Chinese. Reply with exactly one word: yes or no."
)
USER_TEMPLATE = (
    "Query: {query}\n\nDocument: {document}\n\nIs the document relevant to the query? "
    "Answer yes or no."
)
YES = frozenset({"yes", "y", "true", "是", "是的", "相关"})
NO = frozenset({"no", "n", "false", "否", "不", "不是", "不相关"})
NEUTRAL = 0.5
"""The score of a document whose judgement named neither answer."""


@dataclass(frozen=True)
class LLMRerankOptions:
    """What ``replica.options`` may set for an ``llm_rerank`` replica."""

    chat_model: str
    concurrency: int = 4
    """Documents judged at once per request; the chat model's own queue bounds the rest."""
    max_document_chars: int = 1500
    max_query_chars: int = 500
    top_logprobs: int = 5

    @classmethod
    def parse(cls, options: dict[str, Any]) -> LLMRerankOptions:
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ModelUnavailable(f"llm_rerank: unknown option(s) {unknown}")
        if not isinstance(options.get("chat_model"), str) or not options["chat_model"]:
            raise ModelUnavailable("llm_rerank: options.chat_model must name a served chat model")
        opts = cls(**options)
        sizes = (opts.concurrency, opts.max_document_chars, opts.max_query_chars, opts.top_logprobs)
        if any(not isinstance(v, int) or v < 1 for v in sizes):
            raise ModelUnavailable("llm_rerank: sizes and bounds must be positive integers")
        return opts


def _answer(token: str) -> bool | None:
    """True for a yes token, False for a no token, None for anything else."""
    word = token.strip().strip(".,!?:;\"'。，！？：；").lower()
    if word in YES:
        return True
    if word in NO:
        return False
    return None


def relevance(choice: dict[str, Any]) -> float | None:
    """P(yes) over yes+no from a choice's first-token logprobs; None when neither is listed.

    When only one side is listed, the other's probability is taken as the smallest listed one
    (an upper bound on every unlisted token), so confident judgements still rank among
    themselves instead of all scoring 1.0 or 0.0.
    """
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return None
    first = content[0]
    candidates = list(first.get("top_logprobs") or []) or [first]
    p_yes = p_no = 0.0
    listed: list[float] = []
    for entry in candidates:
        p = math.exp(float(entry.get("logprob", -math.inf)))
        listed.append(p)
        side = _answer(str(entry.get("token", "")))
        if side is True:
            p_yes += p
        elif side is False:
            p_no += p
    if p_yes == 0.0 and p_no == 0.0:
        return None
    floor = min(listed)
    p_yes, p_no = p_yes or floor, p_no or floor
    return p_yes / (p_yes + p_no)


def _score(result: ChatResult) -> tuple[float, bool]:
    """The relevance score of one judgement, and whether it had to fall back."""
    choice = (result.get("choices") or [{}])[0]
    score = relevance(choice)
    if score is not None:
        return score, False
    # A backend without logprobs still answers in text.
    text = str((choice.get("message") or {}).get("content") or "")
    side = _answer(text.split()[0]) if text.split() else None
    if side is None:
        return NEUTRAL, True
    return (1.0 if side else 0.0), False


class LLMRerank:
    """A ``RerankModel`` that asks a chat model about each document."""

    def __init__(
        self, name: str, options: LLMRerankOptions, resolve_chat: Callable[[str], Any] | None
    ) -> None:
        self.name = name
        self.options = options
        self.capabilities = Capabilities(streaming=False, languages=("en", "zh"))
        self._resolve_chat = resolve_chat
        self._chat: Any = None

    def _chat_model(self) -> Any:
        if self._chat is None:
            model_id = self.options.chat_model
            if self._resolve_chat is None:
                raise ModelUnavailable(f"reranker {self.name!r}: no chat models to judge with")
            try:
                chat = self._resolve_chat(model_id)
            except Exception as exc:
                raise ModelUnavailable(
                    f"reranker {self.name!r}: chat model {model_id!r} is not available ({exc})"
                ) from exc
            if chat is None:
                raise ModelUnavailable(
                    f"reranker {self.name!r}: chat model {model_id!r} is not served"
                )
            self._chat = chat
        return self._chat

    def _body(self, query: str, document: str) -> dict[str, Any]:
        prompt = USER_TEMPLATE.format(
            query=query[: self.options.max_query_chars],
            document=document[: self.options.max_document_chars],
        )
        return {
            "model": self.options.chat_model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.options.top_logprobs,
            "stream": False,
        }

    async def rerank(self, query: str, documents: Sequence[str]) -> RerankResult:
        if not documents:
            return RerankResult(scores=[])
        chat = self._chat_model()
        gate = asyncio.Semaphore(self.options.concurrency)

        async def judge(document: str) -> ChatResult:
            async with gate:
                try:
                    result: ChatResult = await chat.chat(self._body(query, document))
                except RixinError:
                    raise
                except Exception as exc:
                    raise BackendError(f"reranker {self.name!r}: judge failed: {exc}") from exc
                return result

        tasks = [asyncio.ensure_future(judge(d)) for d in documents]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        judged = [_score(r) for r in results]
        tokens = sum(int((r.get("usage") or {}).get("prompt_tokens") or 0) for r in results)
        return RerankResult(
            scores=[score for score, _ in judged],
            prompt_tokens=tokens,
            extra={"fallbacks": sum(fell for _, fell in judged)},
        )

    async def health(self) -> bool:
        try:
            chat = self._chat_model()
        except ModelUnavailable:
            return False
        check = getattr(chat, "health", None)
        return bool(await check()) if check is not None else True

    async def aclose(self) -> None:
        """Nothing to release: the chat model belongs to its own deployment."""
        self._chat = None


def create(replica: ReplicaConfig, ctx: EngineContext) -> LLMRerank:
    """Registry factory ``llm_rerank``; ``replica.options.chat_model`` names the judge."""
    options = LLMRerankOptions.parse(replica.options)
    name = replica.upstream_model or f"llm-rerank:{options.chat_model}"
    return LLMRerank(name, options, ctx.resolve_chat)
