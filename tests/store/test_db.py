"""The embedded SQLite store's guarantees, and failures mapped to client errors."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import select, text

from rixin.errors import Overloaded
from rixin.store.db import Database
from rixin.store.records import ProjectRecord


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'dir' / 'rixin.db'}")
    await db.connect()
    await db.migrate()
    return db


async def test_sqlite_pragmas_on_every_connection(sqlite_db: Database, tmp_path: Path) -> None:
    assert (tmp_path / "nested" / "dir" / "rixin.db").exists()
    async with AsyncExitStack() as stack:  # three sessions open at once: three connections
        for _ in range(3):
            session = await stack.enter_async_context(sqlite_db.session(readonly=True))
            values = [
                (await session.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            ]
            assert values == ["wal", 2, 1, 5000]
    await sqlite_db.aclose()


async def test_nested_sqlite_write_session_fails_fast(sqlite_db: Database) -> None:
    async with sqlite_db.session() as outer:
        await outer.execute(text("SELECT 1"))
        with pytest.raises(RuntimeError, match="deadlock"):
            async with sqlite_db.session():
                pass
        async with sqlite_db.session(readonly=True) as inner:  # reads never wait for writers
            await inner.execute(text("SELECT 1"))
    later: list[str] = []

    async def after_outer_closed() -> None:
        async with sqlite_db.session() as session:  # another task waits for the lock instead
            later.append(str(await session.scalar(text("SELECT 'ok'"))))

    async with sqlite_db.session():
        task = asyncio.create_task(after_outer_closed())
        await asyncio.sleep(0)
    await task
    assert later == ["ok"]
    await sqlite_db.aclose()


async def test_sqlite_read_modify_write_never_loses_updates(sqlite_db: Database) -> None:
    """Sessions hold the write lock from BEGIN, so concurrent read-then-write cannot interleave."""
    async with sqlite_db.session() as session:
        session.add(ProjectRecord(id="proj_counter", name="0", created_at=1))

    async def bump() -> None:
        async with sqlite_db.session() as session:
            project = await session.get(ProjectRecord, "proj_counter")
            assert project is not None
            await asyncio.sleep(0)
            project.name = str(int(project.name) + 1)

    await asyncio.gather(*(bump() for _ in range(25)))
    async with sqlite_db.session(readonly=True) as session:
        assert await session.scalar(select(ProjectRecord.name)) == "25"
    await sqlite_db.aclose()


async def test_unreachable_database_is_503_and_not_ready() -> None:
    db = Database("postgresql+asyncpg://rixin@127.0.0.1:1/rixin")
    await db.connect()
    try:
        assert await db.ping(timeout_s=2) is False
        with pytest.raises(Overloaded) as info:
            async with db.session() as session:
                await session.execute(text("SELECT 1"))
        assert info.value.status_code == 503 and "Retry-After" in info.value.headers
        assert "127.0.0.1" not in info.value.message and "SELECT" not in info.value.message
    finally:
        await db.aclose()


async def test_use_before_connect_is_a_programming_error(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(RuntimeError):
        async with db.session():
            pass
    assert await db.ping() is False
