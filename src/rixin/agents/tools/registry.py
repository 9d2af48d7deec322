"""The tool registry: API tool type -> factory, built-ins registered like third-party tools.

``register(type, factory)`` adds a tool type; ``build(specs, ctx)`` turns a request's ``tools``
array into the run's ``Toolset``. Third parties register through the ``rixin.tools`` entry-point
group or a module listed in ``settings.agents.tool_modules``: either exposes
``register_tools(registry)``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from rixin.agents.tools.base import BuildContext, JSONDict, Tool, ToolFactory
from rixin.errors import InvalidRequest

log = logging.getLogger("rixin.agents")

ENTRY_POINT_GROUP = "rixin.tools"


@dataclass
class Toolset:
    """The tools of one run, by the name the model calls them."""

    tools: dict[str, Tool] = field(default_factory=dict)
    preamble: list[JSONDict] = field(default_factory=list)

    def get(self, name: str) -> Tool | None:
        return self.tools.get(name)

    def chat_tools(self) -> list[JSONDict]:
        """The tools as OpenAI chat ``tools`` entries (what the model step offers)."""
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in self.tools.values()
        ]


class ToolRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, ToolFactory] = {}

    def register(self, tool_type: str, factory: ToolFactory, *, replace: bool = False) -> None:
        if tool_type in self._factories and not replace:
            raise ValueError(f"a factory for tool type {tool_type!r} is already registered")
        self._factories[tool_type] = factory

    def types(self) -> frozenset[str]:
        return frozenset(self._factories)

    async def build(self, specs: Sequence[JSONDict], ctx: BuildContext) -> Toolset:
        toolset = Toolset()
        for index, spec in enumerate(specs):
            tool_type = spec.get("type")
            factory = self._factories.get(tool_type) if isinstance(tool_type, str) else None
            if factory is None:
                raise InvalidRequest(
                    f"Tool type {tool_type!r} is not supported.", param=f"tools[{index}].type"
                )
            bundle = await factory(spec, ctx)
            for tool in bundle.tools:
                if tool.name in toolset.tools:
                    raise InvalidRequest(
                        f"Tool name {tool.name!r} is used twice.", param=f"tools[{index}]"
                    )
                toolset.tools[tool.name] = tool
            toolset.preamble.extend(bundle.preamble)
        return toolset

    def load_plugins(self, modules: Iterable[str] = ()) -> None:
        """Let installed plugins and configured modules register their tools."""
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()(self)
            log.info("tools registered by plugin %s", ep.name)
        for name in modules:
            importlib.import_module(name).register_tools(self)
            log.info("tools registered by module %s", name)


def default_registry() -> ToolRegistry:
    """A registry with rixin's built-in tool types."""
    from rixin.agents.tools.code_interpreter import build as code_interpreter
    from rixin.agents.tools.file_search import build as file_search
    from rixin.agents.tools.function import build as function
    from rixin.agents.tools.mcp import build as mcp

    registry = ToolRegistry()
    registry.register("function", function)
    registry.register("file_search", file_search)
    registry.register("code_interpreter", code_interpreter)
    registry.register("mcp", mcp)
    return registry
