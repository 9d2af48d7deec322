"""``rixin agent run`` and the tool mode of ``rixin chat``: Responses runs with server-side tools.

Both speak to a running server over HTTP with the official ``openai`` client, stream the run
and print each step as it happens: tool calls with what they did (``⚙ file_search: "query" →
3 results``, ``⚙ code_interpreter`` with its code and output), then the answer as it streams.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from rich.console import Console
from rich.markup import escape

JSONDict = dict[str, Any]
TOOLS = ("file_search", "code_interpreter")
MAX_SHOWN = 2000
"""Characters of code or tool output shown; the rest is elided."""


class AgentCliError(Exception):
    """A problem the user can fix (bad options); printed without a trace."""


def split_names(values: Iterable[str] | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``: options that may repeat or hold commas."""
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


def responses_tools(tools: list[str], vector_stores: list[str]) -> list[JSONDict]:
    """The ``tools`` of a Responses request for tool names given on the command line."""
    specs: list[JSONDict] = []
    for name in tools:
        if name == "file_search":
            if not vector_stores:
                raise AgentCliError("file_search needs --vector-store vs_...")
            specs.append({"type": "file_search", "vector_store_ids": vector_stores})
        elif name == "code_interpreter":
            specs.append({"type": "code_interpreter", "container": {"type": "auto"}})
        else:
            raise AgentCliError(f"unknown tool {name!r}; choose from {', '.join(TOOLS)}")
    if vector_stores and "file_search" not in tools:
        raise AgentCliError("--vector-store is only used with --tools file_search")
    return specs


def openai_client(base_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)


CLIENT_ERRORS: tuple[type[Exception], ...] = (openai.OpenAIError, httpx.HTTPError)
"""What a request may raise: the client's own errors, and ``httpx``'s for a broken stream."""


@dataclass
class Outcome:
    """How a streamed response ended."""

    response_id: str | None = None
    status: str = "failed"
    text: str = ""
    error: str | None = None


class StepPrinter:
    """Prints a Responses event stream step by step (tool activity, then the streamed answer)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.outcome = Outcome()
        self._mid_line = False

    def feed(self, event: Any) -> None:
        kind = getattr(event, "type", "")
        if kind in ("response.created", "response.in_progress"):
            self.outcome.response_id = event.response.id
        elif kind == "response.output_item.added":
            self._announce(event.item)
        elif kind == "response.output_text.delta":
            self._write(event.delta)
        elif kind == "response.output_item.done":
            self._done(event.item)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._finish(event.response)
        elif kind == "error":
            self._end_line()
            self.outcome.status = "failed"
            self.outcome.error = str(getattr(event, "message", "stream error"))

    def _write(self, text: str) -> None:
        self.console.print(text, end="", markup=False, highlight=False)
        self._mid_line = not text.endswith("\n")

    def _end_line(self) -> None:
        if self._mid_line:
            self.console.print()
            self._mid_line = False

    def _tool(self, line: str) -> None:
        self._end_line()
        self.console.print(f"[yellow]⚙[/] {line}", highlight=False)

    def _block(self, text: str, style: str = "dim") -> None:
        if len(text) > MAX_SHOWN:
            text = text[:MAX_SHOWN] + f"\n… ({len(text) - MAX_SHOWN} more characters)"
        for line in text.rstrip("\n").splitlines() or [""]:
            self.console.print(f"  [{style}]│ {escape(line)}[/]", highlight=False)

    def _announce(self, item: Any) -> None:
        if item.type == "reasoning":
            self._tool("[dim]thinking…[/]")

    def _done(self, item: Any) -> None:
        kind = item.type
        if kind == "file_search_call":
            query = "; ".join(item.queries or [])
            count = len(item.results or [])
            noun = "result" if count == 1 else "results"
            self._tool(f'file_search: "{escape(query)}" → {count} {noun}')
            for result in item.results or []:
                self.console.print(
                    f"  [dim]· {escape(str(result.filename or result.file_id))}"
                    f" ({(result.score or 0):.2f})[/]",
                    highlight=False,
                )
        elif kind == "code_interpreter_call":
            self._tool("code_interpreter")
            self._block(item.code or "", "cyan")
            logs = "".join(
                str(getattr(o, "logs", "")) for o in item.outputs or [] if o.type == "logs"
            )
            self._block(logs or "(no output)")
        elif kind == "mcp_call":
            self._tool(f"{escape(item.server_label)}.{escape(item.name)}({escape(item.arguments)})")
            self._block(str(item.output if item.error is None else item.error))
        elif kind == "function_call":
            self._tool(f"function {escape(item.name)}({escape(item.arguments)})")
        elif kind == "reasoning":
            summary = " ".join(getattr(s, "text", "") for s in item.summary or [])
            if summary:
                self._block(summary, "italic dim")
        elif kind == "message":
            self._end_line()

    def _finish(self, response: Any) -> None:
        self._end_line()
        self.outcome.response_id = response.id
        self.outcome.status = response.status
        self.outcome.text = response.output_text
        if response.status == "failed" and response.error is not None:
            self.outcome.error = response.error.message
        elif response.status == "incomplete" and response.incomplete_details is not None:
            details = response.incomplete_details
            extra = getattr(details, "rixin", None) or {}
            reason = extra.get("reason") if isinstance(extra, dict) else None
            self.outcome.error = str(reason or details.reason)


def stream_response(client: openai.OpenAI, console: Console, **request: Any) -> Outcome:
    """Run one streamed Responses request, printing its steps; how it ended."""
    printer = StepPrinter(console)
    stream = client.responses.create(
        stream=True,
        include=["file_search_call.results", "code_interpreter_call.outputs"],
        **request,
    )
    with stream:
        for event in stream:
            printer.feed(event)
    return printer.outcome


def run_task(
    base_url: str,
    api_key: str,
    task: str,
    *,
    model: str,
    tools: list[str],
    vector_stores: list[str],
    instructions: str | None,
    console: Console,
) -> int:
    """``rixin agent run``: one streamed response; the exit code (0 only when completed)."""
    request: JSONDict = {"model": model, "input": task}
    try:
        specs = responses_tools(tools, vector_stores)
        client = openai_client(base_url, api_key)
    except AgentCliError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    if specs:
        request["tools"] = specs
    if instructions:
        request["instructions"] = instructions
    try:
        outcome = stream_response(client, console, **request)
    except CLIENT_ERRORS as exc:
        console.print(f"[red]error:[/] {escape(api_message(exc))}")
        return 1
    if outcome.status != "completed":
        console.print(f"[red]{escape(outcome.status)}:[/] {escape(outcome.error or '')}")
        return 1
    return 0


def api_message(exc: BaseException) -> str:
    """The server's own message for an ``openai`` client error (its error envelope), if any."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(exc) or type(exc).__name__
