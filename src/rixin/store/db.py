"""The database: one async SQLAlchemy engine, sessions, migrations and a readiness probe.

Embedded default: SQLite in WAL mode with ``synchronous=FULL`` (an acknowledged commit survives
power loss). At scale: PostgreSQL through asyncpg. The same code and migrations serve both.

SQLite transactions are started by us, not by the driver: Python's ``sqlite3`` would otherwise
run reads outside any transaction and start one only at the first write. Sessions open with
``BEGIN IMMEDIATE`` (one writer at a time, so a read-then-write never fails half-way with
``SQLITE_BUSY``); ``session(readonly=True)`` opens a plain ``BEGIN`` for a consistent snapshot
that never waits for writers.

Driver errors are mapped where they leave a session: a lost or locked database becomes
``Overloaded`` (503 + Retry-After), a constraint race ``Conflict``, anything else a bare
``RixinError``; SQL text never reaches a message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from rixin.errors import Conflict, Overloaded, RixinError

log = logging.getLogger("rixin.store")

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
)
_READONLY = "rixin_readonly"
_MIGRATION_LOCK_ID = 0x72697869  # "rixi": serialises migrations of replicas on PostgreSQL


def map_db_error(exc: BaseException) -> RixinError:
    """The client-facing error for a database failure (no SQL, no parameters in the message)."""
    if isinstance(exc, IntegrityError):
        return Conflict("The request conflicted with a concurrent change; retry it.")
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | OSError):
        return Overloaded("The database is temporarily unavailable; retry shortly.")
    return RixinError("The database failed to process the request.")


_MAPPED = (SQLAlchemyError, OSError)


class Database:
    """The platform's store: ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://…``."""

    def __init__(self, url: str) -> None:
        self.url: URL = make_url(url)
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._read_sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Database.connect() has not been called")
        return self._engine

    async def connect(self) -> None:
        """Create the engine (and, for SQLite, the data directory). Idempotent."""
        if self._engine is not None:
            return
        if self.dialect == "sqlite":
            engine = self._sqlite_engine()
        else:
            engine = create_async_engine(self.url, pool_pre_ping=True)
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )

    def _sqlite_engine(self) -> AsyncEngine:
        database = self.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Every session ends its transaction itself (``session()`` commits or rolls back; a bare
        # ``Connection`` rolls back when closed), so the pool's reset-on-return ROLLBACK would
        # only cost another hop to aiosqlite's thread per session.
        engine = create_async_engine(self.url, pool_reset_on_return=None)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine

    @asynccontextmanager
    async def session(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """A unit of work: committed when the block succeeds, rolled back when it raises.

        ``readonly``: on SQLite a deferred transaction, a consistent snapshot that never waits
        for writers; do not write in one (use the default session for anything that writes).
        """
        factory = self._read_sessions if readonly else self._sessions
        if factory is None:
            raise RuntimeError("Database.connect() has not been called")
        guard = not readonly and self.dialect == "sqlite"
        holder = _enter_write_session() if guard else None
        try:
            async with factory() as session:
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise
        except _MAPPED as exc:
            log.warning("database error: %s", type(exc).__name__)
            raise map_db_error(exc) from exc
        finally:
            if holder is not None:
                holder.open = False

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (``upgrade head``)."""
        from rixin.store.migrations import upgrade

        try:
            async with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
                await conn.run_sync(upgrade)
                await conn.commit()
        except _MAPPED as exc:
            raise map_db_error(exc) from exc

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when a ``SELECT 1`` answers within ``timeout_s``; never raises (for /ready)."""
        try:
            async with asyncio.timeout(timeout_s):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:  # any failure means "not ready"
            log.warning("database ping failed: %s", type(exc).__name__)
            return False

    async def aclose(self) -> None:
        """Close every pooled connection. The object may be connected again afterwards."""
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = self._sessions = self._read_sessions = None


class _WriteSession:
    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.open = True


_write_session: ContextVar[_WriteSession | None] = ContextVar("rixin_write_session", default=None)


def _enter_write_session() -> _WriteSession:
    """Refuse a SQLite write session nested in another one of the same task.

    The outer session holds SQLite's single write lock until it ends, so the inner one would
    wait ``busy_timeout`` and fail. Pass the open session down instead. (Other tasks just wait.)
    """
    outer = _write_session.get()
    if outer is not None and outer.open and outer.task is asyncio.current_task():
        raise RuntimeError(
            "a write session is already open in this task; on SQLite a nested one would "
            "deadlock: pass the open session down (or use session(readonly=True))"
        )
    holder = _WriteSession()
    _write_session.set(holder)
    return holder


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module; _sqlite_on_begin emits BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    readonly = conn.get_execution_options().get(_READONLY, False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")
