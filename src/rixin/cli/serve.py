"""Run the server under uvicorn with a graceful drain on SIGTERM/SIGINT.

On the signal: readiness turns 503 at once, new requests get 503 ``shutting_down``, listeners
close, and in-flight requests (streams included) get up to ``drain_timeout_s`` to finish.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from rixin.app import create_app, engine_context
from rixin.settings import Settings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_drain: Any) -> None:
        super().__init__(config)
        self.on_drain = on_drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_drain()
        super().handle_exit(sig, frame)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises the captured signal after shutdown, so the process would die of
            # SIGTERM; a completed drain is a clean stop and exits 0 (RELIABILITY F6).
            self._captured_signals.clear()


def serve(settings: Settings, console: Console) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), console=console
    )
    tasks: dict[str, Any] = {}

    def on_progress(label: str, done: int, total: int) -> None:
        if label not in tasks:
            progress.start()
            tasks[label] = progress.add_task(f"assembling {label}", total=total)
        progress.update(tasks[label], completed=done)
        if done >= total:
            progress.stop()

    def on_ready(app: FastAPI) -> None:
        boot = app.state.bootstrap
        if boot.key is not None and boot.path is not None:
            console.print(
                f"[bold green]Admin key created[/] and written to {boot.path} (mode 0600)."
            )
        elif boot.path is not None:
            console.print(f"Admin key: see {boot.path}")
        for served in app.state.services.models.all():
            if served.error:
                console.print(f"[bold red]model {served.id} unavailable:[/] {served.error}")
        console.print(f"rixin serving on http://{settings.host}:{settings.port}/v1")

    app = create_app(
        settings, engine_ctx=engine_context(settings, progress=on_progress), on_ready=on_ready
    )
    services = app.state.services

    def on_drain() -> None:
        services.edge.draining = True

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
        proxy_headers=False,
        server_header=False,
        lifespan="on",
    )
    DrainingServer(config, on_drain).run()
