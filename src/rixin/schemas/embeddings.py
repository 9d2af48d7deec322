"""``/v1/embeddings``, ``/v1/rerank`` and ``/v1/models`` wire shapes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from rixin.schemas.common import OpenAIBaseModel

EmbeddingInput = (
    Annotated[str, Field(max_length=1_000_000)]
    | Annotated[list[str], Field(min_length=1, max_length=2048)]
    | Annotated[list[int], Field(min_length=1)]
    | Annotated[list[list[int]], Field(min_length=1, max_length=2048)]
)


class EmbeddingRequest(OpenAIBaseModel):
    input: EmbeddingInput
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    # --- rixin extension -------------------------------------------------------------------
    input_type: Literal["query", "passage"] = "passage"
    """Asymmetric embedders (e5) prefix queries and passages differently."""


class RerankRequest(OpenAIBaseModel):
    """The Cohere/Jina shape vLLM serves at ``/v1/rerank``."""

    model: str
    query: Annotated[str, Field(min_length=1)]
    documents: Annotated[list[str], Field(min_length=1, max_length=1000)]
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool = True
