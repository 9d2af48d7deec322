"""Auth fixtures on the embedded store (SQLite in a temp data dir)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rixin.auth.service import AuthService
from rixin.settings import Settings
from rixin.store.db import Database


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", auth_failures_per_minute=20)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.resolved_database_url)
    await database.connect()
    await database.migrate()
    try:
        yield database
    finally:
        await database.aclose()


@pytest.fixture
def auth(db: Database, settings: Settings) -> AuthService:
    return AuthService(db, settings)
