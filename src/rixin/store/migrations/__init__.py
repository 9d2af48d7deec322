"""Alembic migrations, run programmatically (no ``alembic.ini`` needed).

``upgrade(connection)`` is what ``Database.migrate()`` runs. Developers create the next revision
with ``alembic -c src/rixin/store/alembic.ini revision -m "…"`` (the ini only points here).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package; with ``connection`` the migrations run on it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` on an open (sync) connection."""
    command.upgrade(alembic_config(connection), revision)
