"""Tools for agent runs: the ``Tool`` protocol, the registry, and the built-in tool types."""

from rixin.agents.tools.base import (
    BaseTool,
    BuildContext,
    Tool,
    ToolBundle,
    ToolCall,
    ToolContext,
    ToolError,
    ToolFactory,
    ToolOutput,
)
from rixin.agents.tools.registry import ToolRegistry, Toolset, default_registry

__all__ = [
    "BaseTool",
    "BuildContext",
    "Tool",
    "ToolBundle",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolFactory",
    "ToolOutput",
    "ToolRegistry",
    "Toolset",
    "default_registry",
]
