"""What a tool is to the engine: a name and JSON schema the model sees, and ``run``.

``Tool`` is the protocol; ``BaseTool`` a convenient dataclass implementation. A tool may be
*client-side* (OpenAI ``function`` tools: the engine stops and hands the call to the client),
*side-effecting* (the engine records the call in its ledger before running it and never runs it
again after a crash: RELIABILITY D4), or *approval-gated* (the engine stops at
``requires_action`` with an approval request before running it: RELIABILITY A10).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rixin.errors import RixinError

JSONDict = dict[str, Any]


class ToolError(RixinError):
    """A tool failed in a way the model may be told about (the run continues)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "tool_error"


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: ``arguments`` is the JSON text it wrote."""

    call_id: str
    name: str
    arguments: str

    def parsed(self) -> JSONDict:
        """The arguments as an object; ``ToolError`` when they are not a JSON object."""
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError as exc:
            raise ToolError(f"Arguments of {self.name} are not valid JSON.") from exc
        if not isinstance(value, dict):
            raise ToolError(f"Arguments of {self.name} must be a JSON object.")
        return value


@dataclass
class ToolOutput:
    """What a call produced: ``text`` goes back to the model, ``item`` to the client."""

    text: str
    item: JSONDict = field(default_factory=dict)
    """Type-specific fields of the output item (``results``, ``outputs``, ``output`` …)."""
    failed: bool = False


@dataclass(frozen=True)
class ToolContext:
    """Who a call runs for, and the key that makes a side effect happen at most once."""

    project_id: str
    run_id: str
    idempotency_key: str
    """``<run_id>:<call_id>``: pass it to any external system that dedupes on a key."""


@runtime_checkable
class Tool(Protocol):
    """A tool offered to the model in one run."""

    name: str
    """The function name the model calls (unique within a run)."""
    type: str
    """The API tool type that produced it: ``function``, ``file_search``, ``mcp`` …"""
    description: str
    parameters: JSONDict
    side_effects: bool
    requires_approval: bool
    client_side: bool

    def call_item(self, call: ToolCall, item_id: str, status: str) -> JSONDict:
        """The wire item for ``call`` before it has an output (``status``: in_progress …)."""
        ...

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput: ...


@dataclass
class BaseTool(abc.ABC):
    """A server-side tool; subclasses override ``run`` and usually ``call_item``."""

    name: str
    type: str
    description: str = ""
    parameters: JSONDict = field(default_factory=lambda: {"type": "object", "properties": {}})
    side_effects: bool = False
    requires_approval: bool = False
    client_side: bool = False

    def call_item(self, call: ToolCall, item_id: str, status: str) -> JSONDict:
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        }

    @abc.abstractmethod
    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput:
        """Execute the call (server-side tools) and return what the model sees."""


@dataclass
class ToolBundle:
    """What a tool spec expands to: tools, plus items to record once at the run's start."""

    tools: list[Tool] = field(default_factory=list)
    preamble: list[JSONDict] = field(default_factory=list)
    """Output items such as ``mcp_list_tools``."""


@dataclass(frozen=True)
class BuildContext:
    """What tool factories may use: the caller's project and the platform's services.

    Services are optional callables so the engine stays independent of them; a factory whose
    service is missing refuses its tool type with a clear 400.
    """

    project_id: str
    run_id: str
    settings: Any
    """``rixin.settings.AgentSettings``."""
    vector_search: VectorSearch | None = None
    vector_store_check: Callable[[str, str], Awaitable[None]] | None = None
    sandbox: CodeRunner | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    """Anything else a third-party factory needs (looked up by name)."""


class VectorSearch(Protocol):
    async def __call__(
        self,
        project_id: str,
        vector_store_id: str,
        query: str,
        max_num_results: int,
        filters: JSONDict | None,
        ranking_options: JSONDict | None,
    ) -> list[JSONDict]:
        """Hits as ``{file_id, filename, score, text, attributes}``, best first."""
        ...


class CodeRunner(Protocol):
    async def __call__(self, project_id: str, session_id: str, code: str) -> JSONDict:
        """``{"stdout", "stderr", "exit_code", "files": [...]}`` of running ``code``."""
        ...


ToolFactory = Callable[[JSONDict, BuildContext], Awaitable[ToolBundle]]
"""Builds the tools of one ``tools`` entry of a request (validates it, raising 400s)."""
