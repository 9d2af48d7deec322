"""What every ``rixin`` command shares: the console, the connection options, settings, the key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rixin.settings import Settings

console = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory.")]
BaseUrl = Annotated[str, typer.Option("--base-url", envvar="RIXIN_BASE_URL")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="RIXIN_API_KEY")]


def settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def api_key(explicit: str | None) -> str:
    """``--api-key`` / ``RIXIN_API_KEY``, else the admin key ``rixin serve`` wrote."""
    if explicit:
        return explicit
    path = settings().data_dir / "admin-key"
    if path.exists():
        return path.read_text().strip()
    raise typer.BadParameter("no API key: pass --api-key or set RIXIN_API_KEY")
