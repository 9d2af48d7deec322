"""Dify's External Knowledge API wire shapes (``POST <endpoint>/retrieval``), and rixin's
extension of ``CreateVectorStoreRequest`` that backs a vector store with such an endpoint.

Dify's contract (docs.dify.ai, "External Knowledge API"): the request carries ``knowledge_id``,
``query``, ``retrieval_setting{top_k, score_threshold}`` and an optional ``metadata_condition``
(``logical_operator`` ``and``/``or`` and ``conditions[{name, comparison_operator, value}]``;
older Dify versions send ``name`` as a list of names). The answer is ``{"records": [{content,
score, title, metadata}]}`` where ``metadata`` is an object, never null. Errors carry
``{"error_code", "error_msg"}`` (1001 malformed Authorization header, 1002 authorization failed,
2001 unknown knowledge).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rixin.schemas.common import OpenAIBaseModel

ComparisonOperator = Literal[
    "contains",
    "not contains",
    "start with",
    "end with",
    "is",
    "is not",
    "in",
    "not in",
    "empty",
    "not empty",
    "=",
    "≠",
    ">",
    "<",
    "≥",
    "≤",
    "before",
    "after",
]
COMPARISON_OPERATORS: tuple[str, ...] = get_args(ComparisonOperator)

ConditionValue = str | int | float | list[str | int | float] | None


class DifyModel(BaseModel):
    """Dify's shapes accept fields a newer Dify may add."""

    model_config = ConfigDict(extra="ignore")


class RetrievalSetting(DifyModel):
    top_k: Annotated[int, Field(ge=1)]
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0


class Condition(DifyModel):
    name: str | Annotated[list[str], Field(min_length=1, max_length=16)]
    comparison_operator: ComparisonOperator
    value: ConditionValue = None


class MetadataCondition(DifyModel):
    logical_operator: Literal["and", "or"] = "and"
    conditions: Annotated[list[Condition], Field(max_length=64)]


class RetrievalRequest(DifyModel):
    knowledge_id: Annotated[str, Field(max_length=256)]
    query: Annotated[str, Field(max_length=16_384)]
    retrieval_setting: RetrievalSetting
    metadata_condition: MetadataCondition | None = None


class Record(DifyModel):
    """One retrieved chunk. Lenient on the way in: Dify does not reject missing fields."""

    content: str = ""
    score: float = 0.0
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("content", "score", "title", "metadata", mode="before")
    @classmethod
    def _null_is_missing(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return {"content": "", "score": 0.0, "title": "", "metadata": {}}[info.field_name or ""]
        return value


class RetrievalResponse(DifyModel):
    records: list[Record]


class DifyError(DifyModel):
    error_code: int
    error_msg: str


# --- rixin extension of the Vector Stores API ----------------------------------------------


class ExternalKnowledgeParam(OpenAIBaseModel):
    """``rixin.external`` of ``CreateVectorStoreRequest``: search this store at a Dify-style
    External Knowledge API instead of in rixin's own index."""

    endpoint: Annotated[str, Field(min_length=1, max_length=2048)]
    """The API endpoint as Dify takes it; requests go to ``<endpoint>/retrieval``."""
    knowledge_id: Annotated[str, Field(min_length=1, max_length=256)]
    api_key_env: (
        Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None
    ) = None
    """The server environment variable holding the bearer key (one of
    ``settings.knowledge.api_key_envs``)."""
    api_key: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """Or the bearer key itself: stored with the store, never returned."""


class ExternalKnowledge(OpenAIBaseModel):
    """How a vector store is backed, as responses show it (never the key itself)."""

    endpoint: str
    knowledge_id: str
    api_key_env: str | None = None
    api_key_set: bool = False
