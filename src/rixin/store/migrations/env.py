"""Alembic environment: runs on the connection ``rixin.store.db.Database.migrate()`` hands in.

Run by the ``alembic`` command instead, it connects to ``RIXIN_DATABASE_URL`` (or the
``sqlalchemy.url`` option) with a synchronous driver.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from rixin.store.records import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _sync_url() -> str:
    url = os.environ.get("RIXIN_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set RIXIN_DATABASE_URL or sqlalchemy.url to run alembic directly")
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    context.configure(url=_sync_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with create_engine(_sync_url()).connect() as conn:
        _run(conn)
        conn.commit()
