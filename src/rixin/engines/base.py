"""What a model backend is: small protocols with declared capabilities.

Backends speak OpenAI's wire shapes as plain dicts (``ChatBody``/``ChatResult``/``ChatChunk``):
every runtime we drive (llama.cpp's server, vLLM, Ollama, SenseNova's gateway, OpenAI) already
does, so a backend's job is transport and error mapping, not translation. Requests arrive
validated by ``rixin.schemas``; results leave through the services that finish them (ids, tool
calls, usage) before they reach the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

ChatBody = dict[str, Any]
"""An OpenAI ``/chat/completions`` request body (``model`` is the upstream name)."""
ChatResult = dict[str, Any]
"""An OpenAI ``chat.completion`` object."""
ChatChunk = dict[str, Any]
"""An OpenAI ``chat.completion.chunk`` object."""
CompletionBody = dict[str, Any]
CompletionResult = dict[str, Any]


@dataclass(frozen=True)
class Capabilities:
    streaming: bool = True
    tools: bool = False
    constrained_tools: bool = False
    """The runtime cannot enforce ``tool_choice`` itself: rixin constrains decoding to a JSON
    schema of the allowed calls and parses calls out of the text (small local models)."""
    json_schema: bool = False
    """Constrained decoding to a JSON schema (llama.cpp grammars, vLLM guided decoding)."""
    logprobs: bool = False
    fim: bool = False
    vision: bool = False
    context_window: int = 8192
    embedding_dims: int | None = None
    matryoshka_dims: tuple[int, ...] = ()
    """Extra sizes an embedder can truncate to (``dimensions``); empty: only its native size."""
    languages: tuple[str, ...] = ("en", "zh")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@runtime_checkable
class Closeable(Protocol):
    async def aclose(self) -> None: ...


class ChatModel(Protocol):
    """A text generator that speaks OpenAI's chat and completions shapes."""

    name: str
    capabilities: Capabilities

    async def chat(self, body: ChatBody) -> ChatResult: ...

    def stream_chat(self, body: ChatBody) -> AsyncIterator[ChatChunk]:
        """Chunks as OpenAI streams them; closing the iterator cancels generation."""
        ...

    async def complete(self, body: CompletionBody) -> CompletionResult: ...

    def stream_complete(self, body: CompletionBody) -> AsyncIterator[dict[str, Any]]: ...

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...


@dataclass
class EmbeddingResult:
    vectors: npt.NDArray[np.float32]
    """Shape (n, dims), L2-normalised."""
    prompt_tokens: int


class EmbeddingModel(Protocol):
    name: str
    capabilities: Capabilities

    async def embed(self, texts: Sequence[str], *, input_type: str = "passage") -> EmbeddingResult:
        """``input_type`` is ``query`` or ``passage`` (asymmetric models prefix accordingly)."""
        ...

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...


@dataclass
class RerankResult:
    scores: list[float]
    """One relevance score per document, in input order."""
    prompt_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class RerankModel(Protocol):
    name: str
    capabilities: Capabilities

    async def rerank(self, query: str, documents: Sequence[str]) -> RerankResult: ...

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...
