"""``rixin chat``: stream answers from a running server, keeping the conversation.

Plain chat uses ``/chat/completions`` and resends the history; with ``--tools`` the REPL
switches to the Responses API (server-side tools, each turn chained to the last by
``previous_response_id``) and prints tool activity before each answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape


def stream_reply(client: httpx.Client, model: str, messages: list[dict[str, Any]]) -> Iterator[str]:
    """Yield content deltas of one streamed chat completion; raise on an error event."""
    body = {"model": model, "messages": messages, "stream": True}
    with client.stream("POST", "/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(response.json()["error"]["message"])
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            for choice in event.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text


def run_repl(base_url: str, api_key: str, model: str, system: str | None, console: Console) -> None:
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=600) as client:
        console.print(f"[dim]chatting with {model}; empty line or Ctrl-D quits[/]")
        while True:
            try:
                prompt = console.input("[bold cyan]you> [/]")
            except (EOFError, KeyboardInterrupt):
                break
            if not prompt.strip():
                break
            messages.append({"role": "user", "content": prompt})
            parts: list[str] = []
            try:
                for text in stream_reply(client, model, messages):
                    parts.append(text)
                    console.print(text, end="", markup=False, highlight=False)
            except (RuntimeError, httpx.HTTPError) as exc:
                console.print(f"\n[red]error:[/] {exc}")
                messages.pop()
                continue
            console.print()
            messages.append({"role": "assistant", "content": "".join(parts)})


def run_tools_repl(
    base_url: str,
    api_key: str,
    model: str,
    system: str | None,
    tools: list[str],
    vector_stores: list[str],
    console: Console,
) -> int:
    """The REPL on the Responses API with server-side tools; the exit code."""
    from rixin.cli.agent import (
        CLIENT_ERRORS,
        AgentCliError,
        api_message,
        openai_client,
        responses_tools,
        stream_response,
    )

    try:
        specs = responses_tools(tools, vector_stores)
        client = openai_client(base_url, api_key)
    except AgentCliError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    names = ", ".join(str(t["type"]) for t in specs)
    console.print(f"[dim]chatting with {model} using {names}; empty line or Ctrl-D quits[/]")
    previous: str | None = None
    while True:
        try:
            prompt = console.input("[bold cyan]you> [/]")
        except (EOFError, KeyboardInterrupt):
            return 0
        if not prompt.strip():
            return 0
        request: dict[str, Any] = {"model": model, "input": prompt, "tools": specs}
        if system:
            request["instructions"] = system
        if previous:
            request["previous_response_id"] = previous
        try:
            outcome = stream_response(client, console, **request)
        except CLIENT_ERRORS as exc:
            console.print(f"[red]error:[/] {escape(api_message(exc))}")
            continue
        if outcome.status != "completed":
            console.print(f"[red]{escape(outcome.status)}:[/] {escape(outcome.error or '')}")
        if outcome.response_id and outcome.status in ("completed", "incomplete"):
            previous = outcome.response_id
