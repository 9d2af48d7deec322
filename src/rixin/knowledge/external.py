"""Vector stores backed by an external knowledge endpoint (Dify's External Knowledge API).

A bank's own retrieval service, a Dify-compatible product or another rixin (``/v1/dify``) can
back a vector store: searching it sends ``POST <endpoint>/retrieval`` with Dify's body and maps
the ``records`` to OpenAI's search results. Such a store holds no files.

* The bearer key is either named by ``api_key_env`` (one of ``settings.knowledge.api_key_envs``,
  read once at start-up, so a tenant can never make the server send another of its secrets) or
  given as ``api_key`` and stored with the store; it is never returned.
* Every call passes ``rixin.netguard.check_url`` with ``settings.knowledge.allowed_hosts``
  (also at creation, to fail early); redirects are never followed; answers are size-capped.
* A record's ``file_id`` is derived from the source and its document (``file_id``,
  ``document_id`` or ``doc_id`` in its metadata, else its title), so it is stable across
  searches; ``filename`` is its title; scores are clamped to [0, 1].
* ``max_num_results``, ``score_threshold`` and ``filters`` are applied here whatever the
  endpoint did with them; filters Dify can express are forwarded as ``metadata_condition``,
  others make the search over-fetch and filter locally.
* Failures are ``BackendError`` (502) or ``BackendTimeout`` (504) with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from rixin import netguard
from rixin.errors import BackendError, BackendTimeout, InvalidRequest
from rixin.knowledge.conditions import to_metadata_condition
from rixin.knowledge.filters import Filter, matches, parse_filter
from rixin.schemas.dify import ExternalKnowledge, ExternalKnowledgeParam, Record, RetrievalResponse
from rixin.schemas.vector_stores import (
    VectorStoreSearchRequest,
    VectorStoreSearchResultContentObject,
    VectorStoreSearchResultItem,
)
from rixin.settings import KnowledgeSettings
from rixin.store.ids import base62

MAX_FETCH = 50
"""Records asked for when filters must be applied here (OpenAI's ``max_num_results`` cap)."""
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_ATTRIBUTES, MAX_VALUE_CHARS = 16, 512
DOCUMENT_KEYS = ("file_id", "document_id", "doc_id")


@dataclass(frozen=True)
class ExternalSource:
    """What a vector store record keeps about its endpoint."""

    endpoint: str
    knowledge_id: str
    api_key_env: str | None = None
    api_key: str | None = None

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> ExternalSource:
        return cls(
            endpoint=str(data["endpoint"]),
            knowledge_id=str(data["knowledge_id"]),
            api_key_env=data.get("api_key_env"),
            api_key=data.get("api_key"),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "knowledge_id": self.knowledge_id,
            "api_key_env": self.api_key_env,
            "api_key": self.api_key,
        }

    def view(self) -> ExternalKnowledge:
        return ExternalKnowledge(
            endpoint=self.endpoint,
            knowledge_id=self.knowledge_id,
            api_key_env=self.api_key_env,
            api_key_set=bool(self.api_key or self.api_key_env),
        )

    @property
    def retrieval_url(self) -> str:
        return self.endpoint.rstrip("/") + "/retrieval"


class ExternalKnowledgeClient:
    """Searches external knowledge endpoints on behalf of vector stores."""

    def __init__(
        self,
        settings: KnowledgeSettings,
        secrets: Mapping[str, str] | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._secrets = dict(secrets or {})
        self._transport = transport

    @classmethod
    def from_settings(
        cls, settings: KnowledgeSettings, environ: Mapping[str, str]
    ) -> ExternalKnowledgeClient:
        """Reads the allowed ``api_key_envs`` from ``environ`` once, at start-up."""
        names = settings.api_key_envs
        return cls(settings, {n: environ[n] for n in names if n in environ})

    # ------------------------------------------------------------------------------- create

    async def source(self, param: ExternalKnowledgeParam) -> ExternalSource:
        """The checked source of a ``rixin.external`` create parameter."""
        prefix = "rixin.external"
        if param.api_key and param.api_key_env:
            raise InvalidRequest(
                "Give at most one of 'api_key' and 'api_key_env'.", param=f"{prefix}.api_key"
            )
        if param.api_key_env and param.api_key_env not in self.settings.api_key_envs:
            raise InvalidRequest(
                f"api_key_env {param.api_key_env!r} is not one this server allows "
                "(settings.knowledge.api_key_envs).",
                param=f"{prefix}.api_key_env",
            )
        source = ExternalSource(
            endpoint=param.endpoint.strip(),
            knowledge_id=param.knowledge_id,
            api_key_env=param.api_key_env,
            api_key=param.api_key,
        )
        await self._target(source, param=f"{prefix}.endpoint")
        return source

    # ------------------------------------------------------------------------------- search

    async def search(
        self, source: ExternalSource, req: VectorStoreSearchRequest
    ) -> list[VectorStoreSearchResultItem]:
        """The endpoint's records for ``req`` as OpenAI search results, best first."""
        queries = [req.query] if isinstance(req.query, str) else list(req.query)
        queries = [q for q in queries if q.strip()]
        if not queries:
            raise InvalidRequest("'query' must not be empty.", param="query")
        threshold = req.ranking_options.score_threshold if req.ranking_options else 0.0
        flt = parse_filter(req.filters) if req.filters is not None else None
        condition = to_metadata_condition(req.filters) if req.filters is not None else None
        top_k = req.max_num_results if flt is None or condition is not None else MAX_FETCH
        url, host = await self._target(source, param="vector_store_id")
        best: dict[tuple[str, str], VectorStoreSearchResultItem] = {}
        async with self._client() as client:
            for query in queries:
                body: dict[str, Any] = {
                    "knowledge_id": source.knowledge_id,
                    "query": query,
                    "retrieval_setting": {"top_k": top_k, "score_threshold": threshold},
                }
                if condition is not None:
                    body["metadata_condition"] = condition
                for record in await self._retrieve(client, source, url, host, body):
                    item = result_item(source, record)
                    key = (item.file_id, item.content[0].text)
                    if key not in best or best[key].score < item.score:
                        best[key] = item
        return select(list(best.values()), flt, threshold, req.max_num_results)

    async def _retrieve(
        self,
        client: httpx.AsyncClient,
        source: ExternalSource,
        url: str,
        host: str,
        body: dict[str, Any],
    ) -> list[Record]:
        headers = {"Host": host, "Content-Type": "application/json", "Accept": "application/json"}
        key = self._key(source)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            async with client.stream("POST", url, json=body, headers=headers) as response:
                raw = await _read_capped(response)
        except httpx.TimeoutException as exc:
            raise BackendTimeout(
                "The external knowledge endpoint did not answer within "
                f"{self.settings.timeout_s:g} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise BackendError(
                f"The external knowledge endpoint could not be reached ({type(exc).__name__})."
            ) from exc
        if response.status_code != 200:
            raise BackendError(
                f"The external knowledge endpoint answered HTTP {response.status_code}"
                f"{_upstream_detail(raw)}."
            )
        try:
            return RetrievalResponse.model_validate_json(raw).records
        except ValidationError as exc:
            raise BackendError(
                "The external knowledge endpoint's answer is not a Dify retrieval response."
            ) from exc

    async def _target(self, source: ExternalSource, *, param: str) -> tuple[str, str]:
        return await netguard.check_url(
            source.retrieval_url,
            self.settings.allowed_hosts,
            param=param,
            name="The external knowledge endpoint",
        )

    def _key(self, source: ExternalSource) -> str | None:
        if source.api_key_env:
            key = self._secrets.get(source.api_key_env)
            if key is None:
                raise BackendError(
                    f"The key of this external knowledge source ({source.api_key_env}) is not "
                    "set in the server's environment."
                )
            return key
        return source.api_key

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.settings.timeout_s,
            follow_redirects=False,
            trust_env=False,
            transport=self._transport,
        )


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise BackendError("The external knowledge endpoint's answer is too large.")
        chunks.append(chunk)
    return b"".join(chunks)


def _upstream_detail(raw: bytes) -> str:
    """``: 1002 Authorization failed`` from a Dify error body, else nothing."""
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(body, dict) or "error_code" not in body:
        return ""
    return f" (error_code {str(body.get('error_code'))[:16]}: {str(body.get('error_msg'))[:200]})"


# --- mapping ------------------------------------------------------------------------------------


def result_item(source: ExternalSource, record: Record) -> VectorStoreSearchResultItem:
    score = record.score if math.isfinite(record.score) else 0.0
    return VectorStoreSearchResultItem(
        file_id=document_id(source, record),
        filename=record.title,
        score=round(min(1.0, max(0.0, score)), 6),
        attributes=attributes(record.metadata),
        content=[VectorStoreSearchResultContentObject(text=record.content)],
    )


def document_id(source: ExternalSource, record: Record) -> str:
    """A stable file id for the record's document at this source."""
    doc = next((record.metadata[k] for k in DOCUMENT_KEYS if record.metadata.get(k)), None)
    name = f"{source.endpoint}\n{source.knowledge_id}\n{doc if doc is not None else record.title}"
    return "extfile_" + base62(hashlib.sha256(name.encode()).digest()[:16])


def attributes(metadata: Mapping[str, Any]) -> dict[str, str | bool | float | int]:
    """The scalar metadata as OpenAI attributes (16 keys, strings cut to 512 characters)."""
    attrs: dict[str, str | bool | float | int] = {}
    for key, value in metadata.items():
        if len(attrs) >= MAX_ATTRIBUTES:
            break
        if not isinstance(key, str) or not key or len(key) > 64:
            continue
        if isinstance(value, str):
            attrs[key] = value[:MAX_VALUE_CHARS]
        elif isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
            attrs[key] = value
    return attrs


def select(
    items: Sequence[VectorStoreSearchResultItem],
    flt: Filter | None,
    threshold: float,
    limit: int,
) -> list[VectorStoreSearchResultItem]:
    """The items passing the filter and the threshold, best first, at most ``limit``."""
    kept = [
        item
        for item in items
        if item.score >= threshold and (flt is None or matches(flt, item.attributes))
    ]
    kept.sort(key=lambda item: (-item.score, item.file_id))
    return kept[:limit]


__all__ = ["ExternalKnowledgeClient", "ExternalSource", "attributes", "document_id", "select"]
