"""``code_interpreter``: the model runs Python in the sandbox (``rixin.sandbox``).

One sandbox session per container: a request's string ``container`` names it, ``{"type":
"auto"}`` gets one per run. The sandbox has no network and a private work dir, so re-running
code after a crash cannot reach the outside world: the tool is not marked side-effecting.
"""

from __future__ import annotations

from dataclasses import dataclass

from rixin.agents.tools.base import (
    BaseTool,
    BuildContext,
    CodeRunner,
    JSONDict,
    ToolBundle,
    ToolCall,
    ToolContext,
    ToolOutput,
)
from rixin.errors import InvalidRequest, UnsupportedParameter

MAX_LOG_CHARS = 20_000
_PARAMETERS: JSONDict = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "Python source to execute."}},
    "required": ["code"],
}


@dataclass
class CodeInterpreterTool(BaseTool):
    runner: CodeRunner | None = None
    container_id: str = ""

    def call_item(self, call: ToolCall, item_id: str, status: str) -> JSONDict:
        code = call.parsed().get("code") if status != "in_progress" else None
        return {
            "id": item_id,
            "type": "code_interpreter_call",
            "status": status,
            "container_id": self.container_id,
            "code": str(code) if code is not None else None,
            "outputs": None,
        }

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput:
        assert self.runner is not None
        code = str(call.parsed().get("code") or "")
        result = await self.runner(ctx.project_id, self.container_id, code)
        logs = (str(result.get("stdout") or "") + str(result.get("stderr") or ""))[:MAX_LOG_CHARS]
        exit_code = result.get("exit_code", 0)
        text = logs if logs else "(no output)"
        if exit_code:
            text = f"{text}\n(exit code {exit_code})"
        item = {"code": code, "outputs": [{"type": "logs", "logs": logs}]}
        return ToolOutput(text, item, failed=bool(exit_code))


async def build(spec: JSONDict, ctx: BuildContext) -> ToolBundle:
    if ctx.sandbox is None:
        raise UnsupportedParameter(
            "code_interpreter is not available on this server (no sandbox).", param="tools"
        )
    container = spec.get("container", {"type": "auto"})
    if isinstance(container, str) and container:
        container_id = container
    elif isinstance(container, dict) and container.get("type", "auto") == "auto":
        container_id = f"cntr_{ctx.run_id}"
    else:
        raise InvalidRequest(
            "container must be a container id or {'type': 'auto'}.", param="tools.container"
        )
    tool = CodeInterpreterTool(
        name="code_interpreter",
        type="code_interpreter",
        description="Run Python code in a sandbox and see its printed output.",
        parameters=_PARAMETERS,
        runner=ctx.sandbox,
        container_id=container_id,
    )
    return ToolBundle(tools=[tool])
