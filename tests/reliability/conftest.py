"""Reliability fixtures: private ``rixin serve`` processes with special settings.

Tests that change router state (cooldowns), throttles or process lifetime start their own server
here instead of sharing the session's ``fake_server``, so no test can poison another.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import RixinProcess
from reliability.support import StartRixin


@pytest.fixture
def start_rixin(tmp_path: Path) -> Iterator[StartRixin]:
    """Start a private rixin process (``models``, ``env``); every one is stopped at teardown."""
    started: list[RixinProcess] = []

    def start(
        *,
        models: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        name: str = "rixin",
        timeout_s: float = 60.0,
    ) -> RixinProcess:
        server = RixinProcess(tmp_path / name, models=models, env=dict(env or {}))
        started.append(server)
        server.start(timeout_s)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGKILL, timeout_s=10.0)
