"""``rixin kb``: knowledge bases (vector stores) on a running server, over its OpenAI API.

Every command talks to the server with the official ``openai`` client and takes the same
``--base-url`` / ``--api-key`` options as ``rixin chat``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from rixin.cli.common import ApiKey, BaseUrl, console
from rixin.cli.common import api_key as _api_key

if TYPE_CHECKING:
    from openai import OpenAI

kb_app: typer.Typer = typer.Typer(
    no_args_is_help=True, help="Knowledge bases (vector stores) of a server."
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"
POLL_INTERVAL_S = 0.5
SNIPPET_CHARS = 160

StoreId = Annotated[str, typer.Argument(help="Vector store id (vs_...).")]


def _client(base_url: str, api_key: str | None) -> OpenAI:
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=_api_key(api_key), max_retries=2, timeout=600)


@contextmanager
def _api_errors() -> Iterator[None]:
    """An API error ends the command with its message and exit code 1, not a traceback."""
    import openai

    try:
        yield
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        console.print(f"[red]error:[/] {escape(str(body.get('message') or exc.message))}")
        raise typer.Exit(1) from exc
    except openai.APIError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(1) from exc


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


@kb_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name for the knowledge base.")],
    embedding_model: Annotated[
        str | None, typer.Option(help="Embedding model id (server default if omitted).")
    ] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Create an empty knowledge base and print its id."""
    extra = {"rixin": {"embedding_model": embedding_model}} if embedding_model else None
    with _api_errors():
        store = _client(base_url, api_key).vector_stores.create(name=name, extra_body=extra)
    console.print(f"{store.id}  {escape(store.name or '')}", highlight=False)


@kb_app.command("list")
def list_stores(base_url: BaseUrl = DEFAULT_BASE_URL, api_key: ApiKey = None) -> None:
    """List the knowledge bases of the key's project."""
    table = Table(Column("id", no_wrap=True), "name", "status", "files", "bytes")
    with _api_errors():
        for store in _client(base_url, api_key).vector_stores.list(limit=100):
            counts = store.file_counts
            files = f"{counts.completed}/{counts.total}"
            if counts.failed:
                files += f" ({counts.failed} failed)"
            table.add_row(
                store.id, escape(store.name or ""), store.status, files, str(store.usage_bytes)
            )
    console.print(table)


@kb_app.command("delete")
def delete(store_id: StoreId, base_url: BaseUrl = DEFAULT_BASE_URL, api_key: ApiKey = None) -> None:
    """Delete a knowledge base (its uploaded files stay in the Files API)."""
    with _api_errors():
        deleted = _client(base_url, api_key).vector_stores.delete(store_id)
    console.print(json.dumps({"id": deleted.id, "deleted": deleted.deleted}))


@kb_app.command("search")
def search(
    store_id: StoreId,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    max_results: Annotated[int, typer.Option("-n", "--max-results", min=1, max=50)] = 5,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Search a knowledge base; print the best passages with their scores."""
    with _api_errors():
        page = _client(base_url, api_key).vector_stores.search(
            store_id, query=query, max_num_results=max_results
        )
    if not page.data:
        console.print("[dim]no results[/]")
    for rank, hit in enumerate(page.data, 1):
        text = "".join(part.text for part in hit.content)
        console.print(
            f"[bold][{rank}][/] {hit.score:.3f} {escape(hit.filename)}: {escape(_snippet(text))}",
            highlight=False,
        )


@kb_app.command("ask")
def ask(
    store_id: StoreId,
    question: Annotated[str, typer.Argument(help="The question.")],
    model: Annotated[str, typer.Option(help="Chat model id.")] = DEFAULT_CHAT_MODEL,
    max_results: Annotated[int, typer.Option("-n", "--max-results", min=1, max=20)] = 5,
    score_threshold: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Answer from a knowledge base: the streamed answer, then its numbered sources."""
    grounding = {
        "vector_store_ids": [store_id],
        "max_num_results": max_results,
        "score_threshold": score_threshold,
    }
    citations: list[dict[str, Any]] = []
    with _api_errors():
        stream = _client(base_url, api_key).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            stream=True,
            extra_body={"rixin": grounding},
        )
        for chunk in stream:
            extension = (chunk.model_extra or {}).get("rixin") or {}
            citations.extend(extension.get("citations") or [])
            for choice in chunk.choices:
                if choice.delta.content:
                    console.print(choice.delta.content, end="", markup=False, highlight=False)
    console.print()
    if citations:
        console.print("\n[bold]Sources[/]")
    for citation in citations:
        console.print(
            f"[{citation['index']}] {citation['filename']} "
            f"(score {float(citation['score']):.3f}): {_snippet(citation['text'])}",
            markup=False,
            highlight=False,
        )


# -- ingest ---------------------------------------------------------------------------------------


@dataclass
class _Failure:
    name: str
    code: str
    message: str


@kb_app.command("ingest")
def ingest(
    store_id: StoreId,
    directory: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Directory of files to add.")
    ],
    glob: Annotated[str, typer.Option(help="Which files, relative to DIR.")] = "**/*",
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Upload a directory's files and index them into a knowledge base, with a progress bar.

    Files that fail (upload or parsing) are listed with their error; the exit code is then 1.
    """
    paths = sorted(
        p
        for p in directory.glob(glob)
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    if not paths:
        console.print(f"[yellow]no files match {escape(glob)} in {escape(str(directory))}[/]")
        raise typer.Exit(1)
    client = _client(base_url, api_key)
    with _api_errors():
        client.vector_stores.retrieve(store_id)  # fail before uploading anything
        failures = _ingest(client, store_id, directory, paths)
    if failures:
        table = Table("file", "code", "error", title=f"{len(failures)} of {len(paths)} failed")
        for failure in failures:
            table.add_row(escape(failure.name), failure.code, escape(failure.message))
        console.print(table)
        raise typer.Exit(1)
    console.print(f"[green]{len(paths)} files indexed into {store_id}[/]")


def _ingest(client: OpenAI, store_id: str, root: Path, paths: list[Path]) -> list[_Failure]:
    import openai

    names: dict[str, str] = {}
    failures: list[_Failure] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        uploading = progress.add_task("uploading", total=len(paths))
        for path in paths:
            name = str(path.relative_to(root))
            try:
                uploaded = client.files.create(
                    file=(path.name, path.read_bytes()), purpose="assistants"
                )
                names[uploaded.id] = name
            except openai.APIStatusError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                code = str(body.get("code") or exc.status_code)
                failures.append(_Failure(name, code, str(body.get("message") or exc.message)))
            progress.advance(uploading)
        if not names:
            return failures
        indexing = progress.add_task("indexing", total=len(names))
        batch = client.vector_stores.file_batches.create(store_id, file_ids=list(names))
        while True:
            counts = batch.file_counts
            done = counts.completed + counts.failed + counts.cancelled
            progress.update(indexing, completed=done, total=counts.total or len(names))
            if batch.status != "in_progress":
                break
            time.sleep(POLL_INTERVAL_S)
            batch = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store_id)
    for status in ("failed", "cancelled"):
        for row in client.vector_stores.file_batches.list_files(
            batch.id, vector_store_id=store_id, filter=status, limit=100
        ):
            error = row.last_error
            failures.append(
                _Failure(
                    names.get(row.id, row.id),
                    error.code if error else status,
                    error.message if error else status,
                )
            )
    return failures
