"""Assistants v2: assistants, and what threads and runs share (tools, pages, formats).

Assistants are configuration: a model, instructions, tools and tool resources. Their tools are
checked against the agent engine's tool registry when they are saved (an unsupported type, or
another tenant's vector store, is refused then, not at the first run: A1). Every read and write
is scoped to the caller's project; another project's object is ``NotFound``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from rixin.agents.engine import RunEngine
from rixin.agents.tools.base import BuildContext
from rixin.agents.tools.code_interpreter import ContainerFiles, checked_file_ids
from rixin.errors import InvalidRequest, NotFound, UnsupportedParameter
from rixin.schemas.assistants import (
    CreateAssistantRequest,
    DeleteAssistantResponse,
    ModifyAssistantRequest,
)
from rixin.services.models import ModelManager
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import now_s
from rixin.store.records_assistants import AssistantRecord

JSONDict = dict[str, Any]
Order = Literal["asc", "desc"]
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_FORMATS = ("text", "json_object", "json_schema")
MAX_CODE_FILES = 20
"""OpenAI's cap on ``tool_resources.code_interpreter.file_ids``."""


# -- pages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    data: list[JSONDict]
    has_more: bool

    def body(self) -> JSONDict:
        return {
            "object": "list",
            "data": self.data,
            "first_id": self.data[0]["id"] if self.data else None,
            "last_id": self.data[-1]["id"] if self.data else None,
            "has_more": self.has_more,
        }


async def keyset(
    session: AsyncSession,
    query: Select[Any],
    columns: Sequence[InstrumentedAttribute[Any]],
    *,
    limit: int,
    order: Order,
    after: tuple[Any, ...] | None,
    before: tuple[Any, ...] | None,
) -> tuple[list[Any], bool]:
    """Rows of ``query`` in ``order`` of ``columns``, strictly after / before the anchor keys."""
    key = tuple_(*columns)
    ascending = order == "asc"
    if after is not None:
        query = query.where(key > tuple_(*after) if ascending else key < tuple_(*after))
    if before is not None:
        query = query.where(key < tuple_(*before) if ascending else key > tuple_(*before))
    backwards = before is not None and after is None
    forward = ascending != backwards
    query = query.order_by(*[c.asc() if forward else c.desc() for c in columns])
    rows = list(await session.scalars(query.limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    return rows, has_more


# -- tools, resources, formats -----------------------------------------------------------------


def normalize_tools(raw: Sequence[JSONDict] | None, param: str = "tools") -> list[JSONDict]:
    """Assistants tools in their wire shape (function, file_search, code_interpreter)."""
    tools: list[JSONDict] = []
    for i, spec in enumerate(raw or []):
        kind = spec.get("type")
        where = f"{param}[{i}]"
        if kind == "function":
            tools.append({"type": "function", "function": _function(spec.get("function"), where)})
        elif kind == "file_search":
            options = spec.get("file_search") or {}
            if not isinstance(options, dict):
                raise InvalidRequest("file_search must be an object.", param=f"{where}.file_search")
            limit = options.get("max_num_results")
            if limit is not None and (not isinstance(limit, int) or not 1 <= limit <= 50):
                raise InvalidRequest(
                    "max_num_results must be between 1 and 50.",
                    param=f"{where}.file_search.max_num_results",
                )
            tool: JSONDict = {"type": "file_search"}
            if options:
                tool["file_search"] = options
            tools.append(tool)
        elif kind == "code_interpreter":
            tools.append({"type": "code_interpreter"})
        else:
            raise InvalidRequest(f"Tool type {kind!r} is not supported.", param=f"{where}.type")
    return tools


def _function(raw: Any, param: str) -> JSONDict:
    if not isinstance(raw, dict):
        raise InvalidRequest(
            "A function tool needs a 'function' object.", param=f"{param}.function"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            "The function name must be 1-64 letters, digits, '_' or '-'.",
            param=f"{param}.function.name",
        )
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest(
            "parameters must be a JSON schema object.", param=f"{param}.function.parameters"
        )
    function: JSONDict = {"name": name}
    if raw.get("description") is not None:
        function["description"] = str(raw["description"])
    function["parameters"] = parameters or {"type": "object", "properties": {}}
    if raw.get("strict") is not None:
        function["strict"] = bool(raw["strict"])
    return function


def engine_tools(
    tools: Sequence[JSONDict], vector_store_ids: Sequence[str], code_file_ids: Sequence[str] = ()
) -> list[JSONDict]:
    """The run's tools as the engine's tool registry expects them (Responses shape); the
    ``code_interpreter`` container gets the tool resources' ``code_file_ids``."""
    specs: list[JSONDict] = []
    for tool in tools:
        kind = tool["type"]
        if kind == "function":
            function = tool["function"]
            specs.append(
                {
                    "type": "function",
                    "name": function["name"],
                    "description": function.get("description") or "",
                    "parameters": function.get("parameters"),
                }
            )
        elif kind == "file_search" and vector_store_ids:
            options = tool.get("file_search") or {}
            spec: JSONDict = {"type": "file_search", "vector_store_ids": list(vector_store_ids)}
            if options.get("max_num_results") is not None:
                spec["max_num_results"] = options["max_num_results"]
            if options.get("ranking_options") is not None:
                spec["ranking_options"] = options["ranking_options"]
            specs.append(spec)
        elif kind == "code_interpreter":
            container: JSONDict = {"type": "auto"}
            if code_file_ids:
                container["file_ids"] = list(code_file_ids)
            specs.append({"type": "code_interpreter", "container": container})
    return specs


def normalize_resources(raw: JSONDict | None, param: str = "tool_resources") -> JSONDict:
    """``tool_resources`` as stored: code_interpreter file ids and vector store ids (one store)."""
    if not raw:
        return {}
    out: JSONDict = {}
    code = raw.get("code_interpreter")
    if code:
        if not isinstance(code, dict):
            raise InvalidRequest(
                "code_interpreter must be an object.", param=f"{param}.code_interpreter"
            )
        ids = checked_file_ids(
            code.get("file_ids"), MAX_CODE_FILES, f"{param}.code_interpreter.file_ids"
        )
        out["code_interpreter"] = {"file_ids": ids}
    search = raw.get("file_search")
    if search:
        if search.get("vector_stores"):
            raise UnsupportedParameter(
                "Creating vector stores inline is not supported; create one first.",
                param=f"{param}.file_search.vector_stores",
            )
        ids = search.get("vector_store_ids") or []
        if not isinstance(ids, list) or len(ids) > 1 or not all(isinstance(i, str) for i in ids):
            raise InvalidRequest(
                "vector_store_ids must be a list of at most one id.",
                param=f"{param}.file_search.vector_store_ids",
            )
        out["file_search"] = {"vector_store_ids": ids}
    return out


def code_file_ids(*resources: JSONDict | None) -> list[str]:
    """The code_interpreter file ids of ``resources``, in order, without repeats."""
    return _resource_ids(resources, "code_interpreter", "file_ids")


def vector_store_ids(*resources: JSONDict | None) -> list[str]:
    """The file_search vector store ids of ``resources``, in order, without repeats."""
    return _resource_ids(resources, "file_search", "vector_store_ids")


def _resource_ids(resources: Sequence[JSONDict | None], tool: str, key: str) -> list[str]:
    ids = (i for r in resources for i in ((r or {}).get(tool) or {}).get(key) or [])
    return list(dict.fromkeys(ids))


def normalize_format(raw: str | JSONDict | None, param: str = "response_format") -> Any:
    if raw is None or raw == "auto":
        return "auto"
    if not isinstance(raw, dict) or raw.get("type") not in _FORMATS:
        raise InvalidRequest(
            "response_format must be 'auto' or an object of type text, json_object or json_schema.",
            param=param,
        )
    if raw["type"] == "json_schema":
        schema = raw.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise InvalidRequest("json_schema needs a 'name'.", param=f"{param}.json_schema")
    return raw


def chat_format(fmt: Any) -> JSONDict | None:
    """The chat ``response_format`` for an Assistants one (``auto``/``text``: none)."""
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return fmt
    return None


# -- the service -------------------------------------------------------------------------------


class AssistantsService:
    def __init__(self, db: Database, engine: RunEngine, models: ModelManager) -> None:
        self.db = db
        self.engine = engine
        self.models = models

    async def check_tools(
        self, project_id: str, tools: list[JSONDict], resources: JSONDict
    ) -> None:
        """Refuse tools the registry cannot build, and vector stores and files the caller
        cannot see."""
        ctx = self.engine.build_context(project_id, "check")
        stores = vector_store_ids(resources)
        if ctx.vector_store_check is not None:
            for store_id in stores:
                await ctx.vector_store_check(project_id, store_id)
        files = code_file_ids(resources)
        if files:
            await _check_code_files(ctx, project_id, files)
        await self.engine.registry.build(engine_tools(tools, stores, files), ctx)

    async def create(self, project_id: str, body: CreateAssistantRequest) -> JSONDict:
        self.models.get(body.model, "chat")
        tools = normalize_tools(body.tools)
        resources = normalize_resources(body.tool_resources)
        await self.check_tools(project_id, tools, resources)
        record = AssistantRecord(
            id=new_id("asst"),
            project_id=project_id,
            rank=time.time_ns(),
            model=body.model,
            name=body.name,
            description=body.description,
            instructions=body.instructions,
            tools=tools,
            tool_resources=resources,
            metadata_=body.metadata or {},
            temperature=body.temperature,
            top_p=body.top_p,
            response_format=normalize_format(body.response_format),
            reasoning_effort=body.reasoning_effort,
            created_at=now_s(),
        )
        async with self.db.session() as session:
            session.add(record)
        return render_assistant(record)

    async def retrieve(self, project_id: str, assistant_id: str) -> JSONDict:
        async with self.db.session(readonly=True) as session:
            return render_assistant(await get_assistant(session, project_id, assistant_id))

    async def modify(
        self, project_id: str, assistant_id: str, body: ModifyAssistantRequest
    ) -> JSONDict:
        fields = body.model_fields_set
        if body.model is not None:
            self.models.get(body.model, "chat")
        async with self.db.session(readonly=True) as session:
            current = await get_assistant(session, project_id, assistant_id)
        tools = normalize_tools(body.tools) if "tools" in fields else current.tools
        resources = (
            normalize_resources(body.tool_resources)
            if "tool_resources" in fields
            else current.tool_resources or {}
        )
        await self.check_tools(project_id, tools, resources)
        async with self.db.session() as session:
            record = await get_assistant(session, project_id, assistant_id)
            record.tools = tools
            record.tool_resources = resources
            for name in ("model", "name", "description", "instructions", "reasoning_effort"):
                if name in fields and (name != "model" or body.model is not None):
                    setattr(record, name, getattr(body, name))
            for name in ("temperature", "top_p"):
                if name in fields:
                    setattr(record, name, getattr(body, name))
            if "metadata" in fields:
                record.metadata_ = body.metadata or {}
            if "response_format" in fields:
                record.response_format = normalize_format(body.response_format)
            return render_assistant(record)

    async def delete(self, project_id: str, assistant_id: str) -> DeleteAssistantResponse:
        async with self.db.session() as session:
            await session.delete(await get_assistant(session, project_id, assistant_id))
        return DeleteAssistantResponse(id=assistant_id)

    async def list(
        self,
        project_id: str,
        *,
        limit: int = 20,
        order: Order = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> Page:
        async with self.db.session(readonly=True) as session:
            anchors: list[tuple[Any, ...] | None] = []
            for cursor in (after, before):
                if cursor is None:
                    anchors.append(None)
                    continue
                anchor = await get_assistant(session, project_id, cursor, param="after")
                anchors.append((anchor.rank,))
            rows, has_more = await keyset(
                session,
                select(AssistantRecord).where(AssistantRecord.project_id == project_id),
                [AssistantRecord.rank],
                limit=limit,
                order=order,
                after=anchors[0],
                before=anchors[1],
            )
        return Page([render_assistant(r) for r in rows], has_more)


async def _check_code_files(ctx: BuildContext, project_id: str, file_ids: list[str]) -> None:
    param = "tool_resources.code_interpreter.file_ids"
    if not isinstance(ctx.sandbox, ContainerFiles):
        raise UnsupportedParameter(
            "code_interpreter file_ids are not available on this server.", param=param
        )
    try:
        await ctx.sandbox.check_files(project_id, file_ids)
    except NotFound as exc:
        raise NotFound(exc.message, param=param) from exc


async def get_assistant(
    session: AsyncSession, project_id: str, assistant_id: str, *, param: str = "assistant_id"
) -> AssistantRecord:
    record = await session.get(AssistantRecord, assistant_id) if len(assistant_id) <= 64 else None
    if record is None or record.project_id != project_id:
        raise NotFound(f"No assistant found with id '{assistant_id[:64]}'.", param=param)
    return record


def render_assistant(record: AssistantRecord) -> JSONDict:
    return {
        "id": record.id,
        "object": "assistant",
        "created_at": record.created_at,
        "name": record.name,
        "description": record.description,
        "model": record.model,
        "instructions": record.instructions,
        "tools": list(record.tools or []),
        "tool_resources": dict(record.tool_resources or {}),
        "metadata": dict(record.metadata_ or {}),
        "temperature": record.temperature if record.temperature is not None else 1.0,
        "top_p": record.top_p if record.top_p is not None else 1.0,
        "response_format": record.response_format or "auto",
    }
