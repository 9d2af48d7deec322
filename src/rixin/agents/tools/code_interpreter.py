"""``code_interpreter``: the model runs Python in the sandbox (``rixin.sandbox``).

One sandbox session per container: a request's string ``container`` names it, ``{"type":
"auto"}`` gets one per run. The sandbox has no network and a private work dir, so re-running
code after a crash cannot reach the outside world: the tool is not marked side-effecting.

Files in and out need a runner that also handles files (``ContainerFiles``): an auto container's
``file_ids`` are copied into its work dir before its first run, and what a run writes there comes
back as project files. The call item lists them in ``files`` (a rixin extension: ``file_id``,
``filename``, ``mime_type``, ``bytes``), from which the answer's ``container_file_citation``
annotations are made; images also appear in ``outputs`` as ``{"type": "image", "url"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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
MAX_FILE_IDS = 50
"""OpenAI's cap on an auto container's ``file_ids``."""
_FILE_FIELDS = ("file_id", "filename", "mime_type", "bytes")
_PARAMETERS: JSONDict = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "Python source to execute."}},
    "required": ["code"],
}


@runtime_checkable
class ContainerFiles(Protocol):
    """A ``CodeRunner`` that also copies files in and stores the files a run produces."""

    async def check_files(self, project_id: str, file_ids: Sequence[str]) -> list[Any]:
        """404 (``param`` naming the container's ``file_ids``) unless all are the project's."""
        ...

    async def __call__(
        self, project_id: str, session_id: str, code: str, *, file_ids: Sequence[str] = ()
    ) -> JSONDict:
        """As ``CodeRunner``; ``files`` are ``{file_id, filename, mime_type, bytes, url,
        image}`` of the stored outputs."""
        ...


@dataclass
class CodeInterpreterTool(BaseTool):
    runner: CodeRunner | None = None
    container_id: str = ""
    file_ids: list[str] = field(default_factory=list)

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

    async def _execute(self, project_id: str, code: str) -> JSONDict:
        assert self.runner is not None
        if isinstance(self.runner, ContainerFiles):
            return await self.runner(project_id, self.container_id, code, file_ids=self.file_ids)
        return await self.runner(project_id, self.container_id, code)

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolOutput:
        code = str(call.parsed().get("code") or "")
        result = await self._execute(ctx.project_id, code)
        logs = (str(result.get("stdout") or "") + str(result.get("stderr") or ""))[:MAX_LOG_CHARS]
        exit_code = result.get("exit_code", 0)
        files = [f for f in result.get("files") or [] if isinstance(f, dict) and f.get("file_id")]
        text = logs if logs else "(no output)"
        if exit_code:
            text = f"{text}\n(exit code {exit_code})"
        if files:
            names = ", ".join(str(f.get("filename")) for f in files)
            text = f"{text}\n(files produced: {names})"
        outputs: list[JSONDict] = [{"type": "logs", "logs": logs}]
        outputs += [{"type": "image", "url": str(f["url"])} for f in files if f.get("image")]
        item: JSONDict = {"code": code, "outputs": outputs}
        if files:
            item["files"] = [{k: f.get(k) for k in _FILE_FIELDS} for f in files]
        return ToolOutput(text, item, failed=bool(exit_code))


def checked_file_ids(raw: object, limit: int, param: str) -> list[str]:
    """``raw`` as a list of at most ``limit`` file ids, repeats dropped (``None``: none)."""
    raw = raw or []
    if (
        not isinstance(raw, list)
        or len(raw) > limit
        or not all(isinstance(f, str) and f for f in raw)
    ):
        raise InvalidRequest(f"file_ids must be a list of at most {limit} file ids.", param=param)
    return list(dict.fromkeys(raw))


async def build(spec: JSONDict, ctx: BuildContext) -> ToolBundle:
    if ctx.sandbox is None:
        raise UnsupportedParameter(
            "code_interpreter is not available on this server (no sandbox).", param="tools"
        )
    container = spec.get("container", {"type": "auto"})
    file_ids: list[str] = []
    if isinstance(container, str) and container:
        container_id = container
    elif isinstance(container, dict) and container.get("type", "auto") == "auto":
        container_id = f"cntr_{ctx.run_id}"
        file_ids = checked_file_ids(
            container.get("file_ids"), MAX_FILE_IDS, "tools.container.file_ids"
        )
    else:
        raise InvalidRequest(
            "container must be a container id or {'type': 'auto'}.", param="tools.container"
        )
    if file_ids:
        if not isinstance(ctx.sandbox, ContainerFiles):
            raise UnsupportedParameter(
                "code_interpreter file_ids are not available on this server.",
                param="tools.container.file_ids",
            )
        await ctx.sandbox.check_files(ctx.project_id, file_ids)
    tool = CodeInterpreterTool(
        name="code_interpreter",
        type="code_interpreter",
        description="Run Python code in a sandbox and see its printed output. Files written "
        "to the current directory are returned to the user.",
        parameters=_PARAMETERS,
        runner=ctx.sandbox,
        container_id=container_id,
        file_ids=file_ids,
    )
    return ToolBundle(tools=[tool])
