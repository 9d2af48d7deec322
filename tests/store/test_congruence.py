"""Congruence: the same store, auth and idempotency calls behave alike on SQLite and PostgreSQL.

Every test here takes the parametrised ``db`` fixture (``sqlite`` and ``postgres``).
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from sqlalchemy import inspect, select, text

from rixin.auth.service import AuthService, BootstrapResult, Principal
from rixin.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound
from rixin.settings import Settings
from rixin.store.db import Database
from rixin.store.idempotency import IdempotencyStore, hash_body
from rixin.store.migrations import alembic_config
from rixin.store.records import ApiKeyRecord, Base, ProjectRecord

TABLES = {"projects", "api_keys", "idempotency_records", "audit_events", "alembic_version"}


# -- migrations and the database itself ------------------------------------------------------


async def test_migrations_apply_and_match_the_records(db: Database) -> None:
    await db.migrate()  # a second run is a no-op
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        diff = await conn.run_sync(
            lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
            )
        )
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    assert TABLES <= tables
    assert diff == []
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_ping_and_dialect(db: Database, db_url: str) -> None:
    assert await db.ping() is True
    assert db.dialect == ("sqlite" if db_url.startswith("sqlite") else "postgresql")


async def test_session_commits_or_rolls_back(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            session.add(ProjectRecord(id="proj_rolledback", name="x", created_at=1))
            await session.flush()
            raise RuntimeError("boom")
    async with db.session() as session:
        session.add(ProjectRecord(id="proj_kept", name="y", created_at=1))
    async with db.session(readonly=True) as session:
        ids = set(await session.scalars(select(ProjectRecord.id)))
    assert ids == {"proj_kept"}


async def test_constraint_race_maps_to_conflict_without_sql(db: Database) -> None:
    async with db.session() as session:
        session.add(ProjectRecord(id="proj_dup", name="a", created_at=1))
    with pytest.raises(Conflict) as info:
        async with db.session() as session:
            session.add(ProjectRecord(id="proj_dup", name="b", created_at=1))
    assert "INSERT" not in info.value.message and "proj_dup" not in info.value.message
    assert info.value.status_code == 409


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(Conflict):
        async with db.session() as session:
            session.add(
                ApiKeyRecord(
                    id="key_orphan",
                    project_id="proj_missing",
                    name="k",
                    role="member",
                    key_hash="0" * 64,
                    redacted_value="sk-...",
                    created_at=1,
                )
            )


@pytest.mark.postgres
async def test_pgvector_extension_works(pg_url: str) -> None:
    db = Database(pg_url)
    await db.connect()
    try:
        async with db.session() as session:
            await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        async with db.session() as session:
            distance = await session.scalar(text("SELECT '[1,2,3]'::vector <-> '[1,2,5]'::vector"))
        assert distance == pytest.approx(2.0)
    finally:
        await db.aclose()


# -- auth: keys, projects, isolation ---------------------------------------------------------


@pytest.fixture
def auth(db: Database, settings: Settings) -> AuthService:
    return AuthService(db, settings)


async def test_key_create_authenticate_revoke(auth: AuthService) -> None:
    project = await auth.create_project("alpha")
    admin = await auth.create_key(project.id, name="admin", role="admin")
    created = await auth.create_key(project.id, name="ci", role="member")
    principal = await auth.authenticate(created.value, source="t")
    assert principal == Principal(project_id=project.id, key_id=created.record.id, role="member")
    assert (await auth.authenticate(admin.value, source="t")).role == "admin"

    await auth.revoke_key(project.id, created.record.id)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(created.value, source="t")
    with pytest.raises(NotFound):
        await auth.retrieve_key(project.id, created.record.id)
    listed = await auth.list_keys(project.id)
    assert [k.id for k in listed.items] == [admin.record.id]


async def test_revocation_visible_to_another_replica_within_a_second(
    db: Database, settings: Settings
) -> None:
    replica_a, replica_b = AuthService(db, settings), AuthService(db, settings)
    project = await replica_a.create_project("p")
    await replica_a.create_key(project.id, name="admin", role="admin")
    key = await replica_a.create_key(project.id, name="k")
    await replica_b.authenticate(key.value, source="t")  # now cached in B
    await replica_a.revoke_key(project.id, key.record.id)
    await asyncio.sleep(1.05)
    with pytest.raises(AuthenticationFailed):
        await replica_b.authenticate(key.value, source="t")


async def test_last_used_at_is_recorded(auth: AuthService) -> None:
    project = await auth.create_project("p")
    key = await auth.create_key(project.id, name="k")
    assert key.record.last_used_at is None
    await auth.authenticate(key.value, source="t")
    assert (await auth.retrieve_key(project.id, key.record.id)).last_used_at is not None


async def test_project_isolation_of_keys(auth: AuthService) -> None:
    a = await auth.create_project("a")
    b = await auth.create_project("b")
    await auth.create_key(a.id, name="admin-a", role="admin")
    key_a = await auth.create_key(a.id, name="ka")
    await auth.create_key(b.id, name="kb")
    with pytest.raises(NotFound):
        await auth.retrieve_key(b.id, key_a.record.id)
    with pytest.raises(NotFound):
        await auth.revoke_key(b.id, key_a.record.id)
    assert key_a.record.id not in {k.id for k in (await auth.list_keys(b.id)).items}
    with pytest.raises(InvalidRequest):  # A's key as a cursor into B's list
        await auth.list_keys(b.id, after=key_a.record.id)
    assert (await auth.authenticate(key_a.value, source="t")).project_id == a.id


async def test_archived_project_keys_stop_working(auth: AuthService) -> None:
    keep = await auth.create_project("keep")
    await auth.create_key(keep.id, name="admin", role="admin")
    gone = await auth.create_project("gone")
    key = await auth.create_key(gone.id, name="k")
    await auth.authenticate(key.value, source="t")
    archived = await auth.archive_project(gone.id)
    assert archived.status == "archived" and archived.archived_at is not None
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(key.value, source="t")
    with pytest.raises(InvalidRequest):
        await auth.create_key(gone.id, name="another")
    active = await auth.list_projects()
    everything = await auth.list_projects(include_archived=True)
    assert gone.id not in {p.id for p in active.items}
    assert gone.id in {p.id for p in everything.items}


async def test_projects_paginate_and_modify(auth: AuthService) -> None:
    ids = [(await auth.create_project(f"p{i}")).id for i in range(5)]
    first = await auth.list_projects(limit=2)
    second = await auth.list_projects(limit=2, after=first.items[-1].id)
    third = await auth.list_projects(limit=2, after=second.items[-1].id)
    seen = [p.id for p in first.items + second.items + third.items]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5
    assert first.has_more and second.has_more and not third.has_more
    renamed = await auth.modify_project(ids[0], name="  renamed ")
    assert (await auth.retrieve_project(ids[0])).name == renamed.name == "renamed"
    with pytest.raises(NotFound):
        await auth.retrieve_project("proj_doesnotexist")
    with pytest.raises(NotFound):
        await auth.retrieve_project("../../etc/passwd")
    with pytest.raises(InvalidRequest):
        await auth.create_project("x" * 300)


async def test_last_admin_key_cannot_be_revoked(auth: AuthService) -> None:
    project = await auth.create_project("p")
    only = await auth.create_key(project.id, name="admin", role="admin")
    with pytest.raises(InvalidRequest):
        await auth.revoke_key(project.id, only.record.id)
    spare = await auth.create_key(project.id, name="spare", role="admin")
    await auth.revoke_key(project.id, only.record.id)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(only.value, source="t")
    assert (await auth.authenticate(spare.value, source="t")).role == "admin"


async def test_audit_events_for_keys_and_projects(auth: AuthService) -> None:
    project = await auth.create_project("p")
    actor = Principal(project_id=project.id, key_id="key_actor", role="admin")
    await auth.create_key(project.id, name="admin", role="admin", actor=actor)
    key = await auth.create_key(project.id, name="k", actor=actor)
    await auth.revoke_key(project.id, key.record.id, actor=actor)
    await auth.archive_project(project.id, actor=actor)
    events = await auth.list_audit_events(project_id=project.id)
    actions = [e.action for e in events]
    for action in ("project.created", "api_key.created", "api_key.revoked", "project.archived"):
        assert action in actions
    assert {e.actor_key_id for e in events if e.action != "project.created"} == {"key_actor"}
    assert all(key.value not in str(e.detail) for e in events)


async def test_bootstrap_generates_admin_key_once(auth: AuthService, settings: Settings) -> None:
    first = await auth.bootstrap()
    assert first.key is not None and first.path == settings.data_dir / "admin-key"
    assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o600
    assert first.path.read_text().strip() == first.key
    principal = await auth.authenticate(first.key, source="t")
    assert principal.role == "admin"
    default = await auth.retrieve_project(principal.project_id)
    assert default.is_default
    with pytest.raises(InvalidRequest):
        await auth.archive_project(default.id)

    again = await auth.bootstrap()
    assert again.key is None and again.path == first.path
    assert first.path.read_text().strip() == first.key
    assert len((await auth.list_projects()).items) == 1


async def test_bootstrap_installs_and_rotates_the_configured_admin_key(
    db: Database, tmp_path: Path
) -> None:
    old = AuthService(db, Settings(data_dir=tmp_path, admin_key=SecretStr("old-admin-secret-1")))
    assert await old.bootstrap() == BootstrapResult(key=None, path=None)
    assert (await old.authenticate("old-admin-secret-1", source="t")).role == "admin"
    assert not (tmp_path / "admin-key").exists()

    new = AuthService(db, Settings(data_dir=tmp_path, admin_key=SecretStr("new-admin-secret-2")))
    await new.bootstrap()
    assert (await new.authenticate("new-admin-secret-2", source="t")).role == "admin"
    with pytest.raises(AuthenticationFailed):
        await new.authenticate("old-admin-secret-1", source="t")
    async with db.session(readonly=True) as session:
        hashes = " ".join(await session.scalars(select(ApiKeyRecord.key_hash)))
        names = set(await session.scalars(select(ProjectRecord.name)))
    assert "admin-secret" not in hashes
    assert names == {"Default project"}


# -- idempotency (D5, store level) -----------------------------------------------------------


@pytest.fixture
def idem(db: Database) -> IdempotencyStore:
    return IdempotencyStore(db, ttl_s=3600)


BODY = hash_body(b'{"model":"m"}')


async def test_idempotency_new_in_flight_replay(idem: IdempotencyStore) -> None:
    assert (await idem.begin("proj_a", "k1", "POST", "/v1/files", BODY)).state == "new"
    assert (await idem.begin("proj_a", "k1", "POST", "/v1/files", BODY)).state == "in_flight"
    body = b'{"id":"file_1",\n "bytes": 3}\xff'
    headers = {"content-type": "application/json", "x-request-id": "req_1"}
    await idem.complete("proj_a", "k1", 201, headers, body)
    replay = await idem.begin("proj_a", "k1", "post", "/v1/files", BODY)
    assert replay.state == "replay"
    assert (replay.status_code, replay.headers, replay.body) == (201, headers, body)


async def test_idempotency_mismatch(idem: IdempotencyStore) -> None:
    await idem.begin("proj_a", "k1", "POST", "/v1/files", BODY)
    other = hash_body(b'{"model":"other"}')
    assert (await idem.begin("proj_a", "k1", "POST", "/v1/files", other)).state == "mismatch"
    assert (await idem.begin("proj_a", "k1", "POST", "/v1/batches", BODY)).state == "mismatch"
    assert (await idem.begin("proj_a", "k1", "PUT", "/v1/files", BODY)).state == "mismatch"
    await idem.complete("proj_a", "k1", 200, {}, b"{}")
    assert (await idem.begin("proj_a", "k1", "POST", "/v1/files", other)).state == "mismatch"


async def test_idempotency_abandon_lets_a_retry_run(idem: IdempotencyStore) -> None:
    await idem.begin("proj_a", "k1", "POST", "/v1/files", BODY)
    await idem.abandon("proj_a", "k1")
    assert (await idem.begin("proj_a", "k1", "POST", "/v1/files", BODY)).state == "new"
    await idem.complete("proj_a", "k1", 200, {}, b"{}")
    await idem.abandon("proj_a", "k1")  # a completed record is not abandoned
    assert (await idem.begin("proj_a", "k1", "POST", "/v1/files", BODY)).state == "replay"


async def test_idempotency_expired_records_are_absent(db: Database) -> None:
    expired = IdempotencyStore(db, ttl_s=0)
    await expired.begin("proj_a", "k1", "POST", "/v1/files", BODY)
    await expired.complete("proj_a", "k1", 200, {}, b"{}")
    other = hash_body(b"different")
    assert (await expired.begin("proj_a", "k1", "POST", "/v1/x", other)).state == "new"
    assert await expired.purge_expired() == 1

    orphaned = IdempotencyStore(db, ttl_s=3600, in_flight_ttl_s=0)
    await orphaned.begin("proj_a", "k2", "POST", "/v1/files", BODY)
    assert (await orphaned.begin("proj_a", "k2", "POST", "/v1/files", BODY)).state == "new"


async def test_idempotency_keys_are_per_tenant(idem: IdempotencyStore) -> None:
    """D5: the other tenant's identical key is independent."""
    assert (await idem.begin("proj_a", "same", "POST", "/v1/files", BODY)).state == "new"
    assert (await idem.begin("proj_b", "same", "POST", "/v1/files", BODY)).state == "new"
    await idem.complete("proj_a", "same", 200, {}, b"A's response")
    assert (await idem.begin("proj_b", "same", "POST", "/v1/files", BODY)).state == "in_flight"
    await idem.complete("proj_b", "same", 200, {}, b"B's response")
    assert (await idem.begin("proj_b", "same", "POST", "/v1/files", BODY)).body == b"B's response"
    assert (await idem.begin("proj_a", "same", "POST", "/v1/files", BODY)).body == b"A's response"


async def test_idempotency_concurrent_duplicates_one_wins(idem: IdempotencyStore) -> None:
    results = await asyncio.gather(
        *(idem.begin("proj_a", "race", "POST", "/v1/files", BODY) for _ in range(12))
    )
    states = sorted(r.state for r in results)
    assert states.count("new") == 1 and states.count("in_flight") == 11


async def test_idempotency_rejects_bad_keys(idem: IdempotencyStore) -> None:
    for key in ("", "x" * 256, "tab\tkey", "ключ"):
        with pytest.raises(InvalidRequest):
            await idem.begin("proj_a", key, "POST", "/v1/files", BODY)
