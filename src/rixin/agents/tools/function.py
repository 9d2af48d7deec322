"""OpenAI ``function`` tools: described by the client, executed by the client.

The engine never runs them: a call ends the step with a ``function_call`` item, and the client
answers with a ``function_call_output`` item in its next request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rixin.agents.tools.base import (
    BaseTool,
    BuildContext,
    JSONDict,
    ToolBundle,
    ToolCall,
    ToolContext,
    ToolOutput,
)
from rixin.errors import InvalidRequest

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass
class FunctionTool(BaseTool):
    client_side: bool = True

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput:
        raise RuntimeError("function tools are executed by the client")


async def build(spec: JSONDict, ctx: BuildContext) -> ToolBundle:
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequest(
            "A function tool needs a 'name' of 1-64 letters, digits, '_' or '-'.", param="tools"
        )
    parameters = spec.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be a JSON schema object.", param="tools")
    description = spec.get("description") or ""
    tool = FunctionTool(
        name=name, type="function", description=str(description), parameters=parameters
    )
    return ToolBundle(tools=[tool])
