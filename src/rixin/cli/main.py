"""The ``rixin`` command: serve, chat, models, keys. Commands parse and print; work lives below."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Column, Table

from rixin.cli.common import ApiKey, BaseUrl, DataDir, console
from rixin.cli.common import api_key as _api_key
from rixin.cli.common import settings as _settings
from rixin.cli.kb import kb_app

app = typer.Typer(no_args_is_help=True, help="rixin (日新): a private OpenAI-compatible platform.")
models_app = typer.Typer(no_args_is_help=True, help="Models served by a running rixin.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the default project.")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
agent_app = typer.Typer(no_args_is_help=True, help="Agent runs on a running rixin.")
app.add_typer(agent_app, name="agent")
app.add_typer(kb_app, name="kb")
Tools = Annotated[
    list[str] | None,
    typer.Option("--tools", help="Server-side tools: file_search,code_interpreter."),
]
VectorStores = Annotated[
    list[str] | None, typer.Option("--vector-store", help="Vector store id(s) for file_search.")
]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Serve the platform (OpenAI-compatible API under /v1)."""
    from rixin.cli.serve import serve as run_server
    from rixin.observability import configure_logging

    configure_logging()
    run_server(_settings(data_dir, host=host, port=port), console)


@app.command()
def chat(
    model: Annotated[str, typer.Option(help="Model id.")] = "qwen2.5-coder-0.5b-instruct",
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    api_key: ApiKey = None,
    tools: Tools = None,
    vector_store: VectorStores = None,
) -> None:
    """A streaming chat REPL with history (empty line or Ctrl-D quits); --tools: Responses API."""
    from rixin.cli.agent import split_names
    from rixin.cli.repl import run_repl, run_tools_repl

    if tools or vector_store:
        code = run_tools_repl(
            base_url,
            _api_key(api_key),
            model,
            system,
            split_names(tools),
            split_names(vector_store),
            console,
        )
        raise typer.Exit(code)
    run_repl(base_url, _api_key(api_key), model, system, console)


@agent_app.command("run")
def agent_run(
    task: Annotated[str, typer.Argument(help="What the agent should do.")],
    model: Annotated[str, typer.Option(help="Model id.")] = "qwen2.5-coder-0.5b-instruct",
    instructions: Annotated[str | None, typer.Option(help="System instructions.")] = None,
    tools: Tools = None,
    vector_store: VectorStores = None,
    base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    api_key: ApiKey = None,
) -> None:
    """Run one task as a streamed response, printing each step; non-zero unless completed."""
    from rixin.cli.agent import run_task, split_names

    code = run_task(
        base_url,
        _api_key(api_key),
        task,
        model=model,
        tools=split_names(tools),
        vector_stores=split_names(vector_store),
        instructions=instructions,
        console=console,
    )
    raise typer.Exit(code)


@models_app.command("list")
def models_list(base_url: BaseUrl = "http://127.0.0.1:8000/v1", api_key: ApiKey = None) -> None:
    """List the models a running server serves."""
    response = httpx.get(
        f"{base_url}/models", headers={"Authorization": f"Bearer {_api_key(api_key)}"}
    )
    if response.status_code != 200:
        console.print(f"[red]{response.json()['error']['message']}[/]")
        raise typer.Exit(1)
    table = Table("id", "kind", "ready", "note")
    for item in response.json()["data"]:
        extra = item.get("rixin", {})
        table.add_row(
            item["id"], extra.get("kind", ""), str(extra.get("ready", "")), extra.get("error") or ""
        )
    console.print(table)


def _auth(data_dir: Path | None) -> Any:
    from rixin.auth.service import AuthService
    from rixin.store.db import Database

    settings = _settings(data_dir)
    db = Database(settings.resolved_database_url)
    return settings, db, AuthService(db, settings)


async def _with_auth(data_dir: Path | None, action: Any) -> Any:
    settings, db, auth = _auth(data_dir)
    await db.connect()
    await db.migrate()
    try:
        await auth.bootstrap()
        return await action(auth)
    finally:
        await db.aclose()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
    data_dir: DataDir = None,
) -> None:
    """Create a key in the default project; it is shown once."""

    async def action(auth: Any) -> Any:
        return await auth.create_key(await auth.default_project_id(), name=name, role=role)

    created = asyncio.run(_with_auth(data_dir, action))
    console.print(f"id: {created.record.id}\nkey (shown once): [bold]{created.value}[/]")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List the keys of the default project (redacted)."""

    async def action(auth: Any) -> Any:
        return await auth.list_keys(await auth.default_project_id(), limit=100)

    page = asyncio.run(_with_auth(data_dir, action))
    table = Table(Column("id", no_wrap=True, min_width=26), "name", "role", "key", "created")
    for key in page.items:
        table.add_row(key.id, key.name, key.role, key.redacted_value, str(key.created_at))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke a key; it stops working within a second."""

    async def action(auth: Any) -> Any:
        return await auth.revoke_key(await auth.default_project_id(), key_id)

    asyncio.run(_with_auth(data_dir, action))
    console.print(json.dumps({"id": key_id, "deleted": True}))
