"""Projects, API keys, authentication and the audit trail.

``authenticate`` turns a presented key into a ``Principal`` (project, key, role). Failed attempts
are counted per source; past ``Settings.auth_failures_per_minute`` in a minute the source gets 429
before its key is even looked at (A8). Successful lookups are cached for at most a second, so a
revocation takes effect everywhere within a second (A4). Keys are stored and compared only as
SHA-256 hashes and never logged (A7).

Admin keys manage every project (they are organisation keys in OpenAI's terms); member keys use
the API inside their own project only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, Never, TypeVar, cast

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from rixin.auth.keys import generate_key, hash_key, hashes_equal, is_well_formed, redact
from rixin.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    RateLimited,
    RixinError,
)
from rixin.settings import Settings
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import ApiKeyRecord, AuditEventRecord, ProjectRecord, now_s

log = logging.getLogger("rixin.auth")

Role = Literal["admin", "member"]
T = TypeVar("T")

ADMIN_KEY_FILE = "admin-key"
SETTINGS_KEY_NAME = "admin key (from settings)"
"""Name of the key ``Settings.admin_key`` installs; changing the setting revokes the old one."""
DEFAULT_PROJECT_NAME = "Default project"
LAST_USED_RESOLUTION_S = 60
MAX_NAME_LENGTH = 256

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
INCORRECT_KEY = "Incorrect API key provided."
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's project, the key itself and its role."""

    project_id: str
    key_id: str
    role: Role


@dataclass(frozen=True)
class BootstrapResult:
    """``key``: a freshly generated admin key (only then); ``path``: the file that holds it."""

    key: str | None
    path: Path | None


@dataclass(frozen=True)
class CreatedKey:
    """A new key: its record and the secret, which exists nowhere else after this."""

    record: ApiKeyRecord
    value: str


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


class FailureThrottle:
    """Counts failed attempts per source in a sliding window; refuses a source past the limit.

    A limit of 0 or less disables throttling. At most ``max_sources`` sources are tracked (the
    least recently failing are forgotten first), so memory stays bounded under a spray.
    """

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = 60.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._max_sources = max_sources
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, source: str) -> None:
        """Raise ``RateLimited`` if ``source`` has used up its failures for the window."""
        if self.limit <= 0:
            return
        recent = self._recent(source)
        if recent is not None and len(recent) >= self.limit:
            retry_after = recent[0] + self.window_s - self._clock()
            raise RateLimited(
                "Too many failed authentication attempts; retry later.",
                retry_after=max(1.0, retry_after),
            )

    def record(self, source: str) -> None:
        if self.limit <= 0:
            return
        recent = self._recent(source)
        if recent is None:
            recent = self._failures[source] = deque(maxlen=self.limit)
        recent.append(self._clock())
        self._failures.move_to_end(source)
        while len(self._failures) > self._max_sources:
            self._failures.popitem(last=False)

    def _recent(self, source: str) -> deque[float] | None:
        recent = self._failures.get(source)
        if recent is None:
            return None
        horizon = self._clock() - self.window_s
        while recent and recent[0] <= horizon:
            recent.popleft()
        if not recent:
            del self._failures[source]
            return None
        return recent


class AuthService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        cache_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._settings = settings
        self._clock = clock
        self._cache_ttl_s = min(cache_ttl_s, 1.0)
        self._cache: dict[str, tuple[Principal, float]] = {}
        self.throttle = FailureThrottle(settings.auth_failures_per_minute, clock=clock)

    # -- authentication ---------------------------------------------------------------------

    async def authenticate(self, raw_key: str | None, *, source: str) -> Principal:
        """The principal a presented key stands for; 401 if it stands for none, 429 if throttled."""
        self.throttle.check(source)
        if raw_key is None or raw_key == "":
            raise AuthenticationFailed(MISSING_KEY)
        if not is_well_formed(raw_key):
            self._fail(source)
        digest = hash_key(raw_key)
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        principal = await self._lookup(digest)
        if principal is None:
            self._fail(source)
        self._remember(digest, principal)
        return principal

    def _fail(self, source: str) -> Never:
        self.throttle.record(source)
        log.warning("authentication failed", extra={"source": source})
        raise AuthenticationFailed(INCORRECT_KEY)

    def _remember(self, digest: str, principal: Principal) -> None:
        if self._cache_ttl_s <= 0:
            return
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[digest] = (principal, self._clock() + self._cache_ttl_s)

    def forget_cached(self) -> None:
        """Drop cached lookups (after a revocation or an archive in this process)."""
        self._cache.clear()

    async def _lookup(self, digest: str) -> Principal | None:
        async with self._db.session(readonly=True) as session:
            row = (
                await session.execute(
                    select(ApiKeyRecord, ProjectRecord.status)
                    .join(ProjectRecord, ProjectRecord.id == ApiKeyRecord.project_id)
                    .where(ApiKeyRecord.key_hash == digest)
                )
            ).first()
        if row is None:
            return None
        key, project_status = row
        if not hashes_equal(key.key_hash, digest) or key.revoked_at is not None:
            return None
        if project_status != "active":
            return None
        now = now_s()
        if key.last_used_at is None or key.last_used_at <= now - LAST_USED_RESOLUTION_S:
            await self._touch(key.id, now)
        return Principal(project_id=key.project_id, key_id=key.id, role=_role(key.role))

    async def _touch(self, key_id: str, now: int) -> None:
        try:
            async with self._db.session() as session:
                await session.execute(
                    update(ApiKeyRecord).where(ApiKeyRecord.id == key_id).values(last_used_at=now)
                )
        except Exception:  # best effort: a busy store must not turn a valid key away
            log.warning("could not record key use", extra={"key_id": key_id}, exc_info=True)

    # -- bootstrap --------------------------------------------------------------------------

    async def bootstrap(self) -> BootstrapResult:
        """Ensure the default project and an admin key exist; run once at start-up.

        With ``Settings.admin_key`` that key is installed (as a hash). Otherwise, when no admin
        key exists yet, one is generated and written to ``<data_dir>/admin-key`` (mode 0600).
        """
        project_id = await self._ensure_default_project()
        if self._settings.admin_key is not None:
            await self._install_settings_key(
                project_id, self._settings.admin_key.get_secret_value()
            )
            return BootstrapResult(key=None, path=None)
        path = self._settings.data_dir / ADMIN_KEY_FILE
        async with self._db.session() as session:
            existing = await session.scalar(
                select(ApiKeyRecord.id)
                .where(ApiKeyRecord.role == "admin", ApiKeyRecord.revoked_at.is_(None))
                .limit(1)
            )
            if existing is not None:
                present = await asyncio.to_thread(path.exists)
                return BootstrapResult(key=None, path=path if present else None)
            raw = generate_key()
            record = self._new_key(project_id, "admin key", "admin", raw)
            session.add(record)
            self._audit(
                session, "api_key.created", None, project_id, record.id, _key_detail(record)
            )
            await session.flush()
            # The file is written before the commit: a crash in between leaves a file with an
            # unusable key, which the next bootstrap replaces, never a key nobody can read.
            try:
                await asyncio.to_thread(_write_secret_file, path, raw)
            except OSError as exc:  # not a database failure: say what went wrong
                raise RixinError(f"Could not write the admin key file {path}: {exc}") from exc
        log.info("generated the first admin key", extra={"key_id": record.id, "path": str(path)})
        return BootstrapResult(key=raw, path=path)

    async def default_project_id(self) -> str:
        """The id of the default project (created on first use)."""
        return await self._ensure_default_project()

    async def _ensure_default_project(self) -> str:
        async with self._db.session() as session:
            found = await session.scalar(
                select(ProjectRecord.id).where(ProjectRecord.is_default.is_(True))
            )
            if found is not None:
                return found
            project = ProjectRecord(
                id=new_id("proj"),
                name=DEFAULT_PROJECT_NAME,
                status="active",
                created_at=now_s(),
                is_default=True,
            )
            try:
                async with session.begin_nested():
                    session.add(project)
                    self._audit(session, "project.created", None, project.id, project.id, {})
            except IntegrityError:  # another replica created it first
                found = await session.scalar(
                    select(ProjectRecord.id).where(ProjectRecord.is_default.is_(True))
                )
                if found is None:
                    raise
                return found
            return project.id

    async def _install_settings_key(self, project_id: str, raw: str) -> None:
        if not is_well_formed(raw):
            raise ValueError("admin_key must be 1-256 printable ASCII characters without spaces")
        digest = hash_key(raw)
        now = now_s()
        async with self._db.session() as session:
            record = await session.scalar(
                select(ApiKeyRecord).where(ApiKeyRecord.key_hash == digest)
            )
            stale = await session.scalars(
                select(ApiKeyRecord).where(
                    ApiKeyRecord.name == SETTINGS_KEY_NAME,
                    ApiKeyRecord.revoked_at.is_(None),
                    ApiKeyRecord.key_hash != digest,
                )
            )
            for old in stale:
                old.revoked_at = now
                self._audit(session, "api_key.revoked", None, old.project_id, old.id, {})
            if record is None:
                record = self._new_key(project_id, SETTINGS_KEY_NAME, "admin", raw)
                session.add(record)
                self._audit(
                    session, "api_key.created", None, project_id, record.id, _key_detail(record)
                )
            elif record.revoked_at is not None or record.role != "admin":
                # The configuration is the authority over this one key.
                record.revoked_at, record.role = None, "admin"
                self._audit(session, "api_key.restored", None, record.project_id, record.id, {})
        self.forget_cached()

    # -- projects ---------------------------------------------------------------------------

    async def create_project(self, name: str, *, actor: Principal | None = None) -> ProjectRecord:
        project = ProjectRecord(
            id=new_id("proj"), name=_check_name(name), status="active", created_at=now_s()
        )
        async with self._db.session() as session:
            session.add(project)
            self._audit(session, "project.created", actor, project.id, project.id, {})
        return project

    async def list_projects(
        self, *, limit: int = 20, after: str | None = None, include_archived: bool = False
    ) -> Page[ProjectRecord]:
        query = select(ProjectRecord)
        if not include_archived:
            query = query.where(ProjectRecord.status == "active")
        async with self._db.session(readonly=True) as session:
            cursor = None
            if after is not None:
                cursor = await session.get(ProjectRecord, after) if _valid_id(after) else None
                if cursor is None:
                    raise InvalidRequest(f"No project found with id '{after[:64]}'.", param="after")
            return await _paginate(
                session, query, ProjectRecord.created_at, ProjectRecord.id, cursor, limit
            )

    async def retrieve_project(self, project_id: str) -> ProjectRecord:
        async with self._db.session(readonly=True) as session:
            return await _project(session, project_id)

    async def modify_project(
        self, project_id: str, *, name: str | None = None, actor: Principal | None = None
    ) -> ProjectRecord:
        async with self._db.session() as session:
            project = await _project(session, project_id)
            if name is not None:
                project.name = _check_name(name)
                self._audit(session, "project.updated", actor, project.id, project.id, {})
            return project

    async def archive_project(
        self, project_id: str, *, actor: Principal | None = None
    ) -> ProjectRecord:
        """Archive a project: its keys stop working at once. Archived projects stay listed."""
        async with self._db.session() as session:
            project = await _project(session, project_id)
            if project.is_default:
                raise InvalidRequest("The default project cannot be archived.", param="project_id")
            if project.status != "archived":
                project.status, project.archived_at = "archived", now_s()
                self._audit(session, "project.archived", actor, project.id, project.id, {})
        self.forget_cached()
        return project

    # -- keys -------------------------------------------------------------------------------

    async def create_key(
        self,
        project_id: str,
        *,
        name: str,
        role: Role = "member",
        actor: Principal | None = None,
    ) -> CreatedKey:
        """A new key for the project; the returned ``value`` is the only copy of the secret."""
        if role not in ("admin", "member"):
            raise InvalidRequest("role must be 'admin' or 'member'.", param="role")
        raw = generate_key()
        async with self._db.session() as session:
            project = await _project(session, project_id)
            if project.status != "active":
                raise InvalidRequest("The project is archived.", param="project_id")
            record = self._new_key(project.id, _check_name(name), role, raw)
            session.add(record)
            self._audit(
                session, "api_key.created", actor, project.id, record.id, _key_detail(record)
            )
        log.info("api key created", extra={"key_id": record.id, "project_id": project.id})
        return CreatedKey(record=record, value=raw)

    async def list_keys(
        self, project_id: str, *, limit: int = 20, after: str | None = None
    ) -> Page[ApiKeyRecord]:
        """The project's keys that are not revoked, oldest first."""
        async with self._db.session(readonly=True) as session:
            await _project(session, project_id)
            cursor = None
            if after is not None:
                cursor = await session.get(ApiKeyRecord, after) if _valid_id(after) else None
                if cursor is None or cursor.project_id != project_id:
                    raise InvalidRequest(f"No API key found with id '{after[:64]}'.", param="after")
            query = select(ApiKeyRecord).where(
                ApiKeyRecord.project_id == project_id, ApiKeyRecord.revoked_at.is_(None)
            )
            return await _paginate(
                session, query, ApiKeyRecord.created_at, ApiKeyRecord.id, cursor, limit
            )

    async def retrieve_key(self, project_id: str, key_id: str) -> ApiKeyRecord:
        async with self._db.session(readonly=True) as session:
            return await _key(session, project_id, key_id)

    async def revoke_key(
        self, project_id: str, key_id: str, *, actor: Principal | None = None
    ) -> ApiKeyRecord:
        """Revoke (OpenAI: delete) a key; it stops authenticating within a second everywhere."""
        async with self._db.session() as session:
            record = await _key(session, project_id, key_id)
            if record.role == "admin" and await _active_admin_keys(session) <= 1:
                raise InvalidRequest(
                    "This is the last admin key; create another admin key before revoking it.",
                    param="api_key_id",
                )
            record.revoked_at = now_s()
            self._audit(session, "api_key.revoked", actor, record.project_id, record.id, {})
        self.forget_cached()
        log.info("api key revoked", extra={"key_id": record.id, "project_id": project_id})
        return record

    # -- audit ------------------------------------------------------------------------------

    async def record_audit(
        self,
        action: str,
        *,
        actor: Principal | None,
        project_id: str | None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit event (for other services). ``detail`` must hold no secret."""
        async with self._db.session() as session:
            self._audit(session, action, actor, project_id, target, detail or {})

    async def list_audit_events(
        self, *, project_id: str | None = None, limit: int = 100
    ) -> list[AuditEventRecord]:
        query = select(AuditEventRecord).order_by(AuditEventRecord.at, AuditEventRecord.id)
        if project_id is not None:
            query = query.where(AuditEventRecord.project_id == project_id)
        async with self._db.session(readonly=True) as session:
            return list(await session.scalars(query.limit(limit)))

    @staticmethod
    def _audit(
        session: AsyncSession,
        action: str,
        actor: Principal | None,
        project_id: str | None,
        target: str | None,
        detail: dict[str, Any],
    ) -> None:
        session.add(
            AuditEventRecord(
                id=new_id("evt"),
                at=now_s(),
                project_id=project_id,
                actor_key_id=actor.key_id if actor else None,
                action=action,
                target=target,
                detail=detail,
            )
        )

    @staticmethod
    def _new_key(project_id: str, name: str, role: Role, raw: str) -> ApiKeyRecord:
        return ApiKeyRecord(
            id=new_id("key"),
            project_id=project_id,
            name=name,
            role=role,
            key_hash=hash_key(raw),
            redacted_value=redact(raw),
            created_at=now_s(),
        )


# -- helpers ---------------------------------------------------------------------------------


def _role(value: str) -> Role:
    if value not in ("admin", "member"):
        raise ValueError(f"unknown role {value!r} in the store")
    return cast(Role, value)


def _key_detail(record: ApiKeyRecord) -> dict[str, Any]:
    return {"name": record.name, "role": record.role}


def _valid_id(value: str) -> bool:
    return _ID_PATTERN.fullmatch(value) is not None


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be 1 to {MAX_NAME_LENGTH} characters.", param="name")
    return name


async def _project(session: AsyncSession, project_id: str) -> ProjectRecord:
    project = await session.get(ProjectRecord, project_id) if _valid_id(project_id) else None
    if project is None:
        raise NotFound(f"No project found with id '{project_id[:64]}'.", param="project_id")
    return project


async def _key(session: AsyncSession, project_id: str, key_id: str) -> ApiKeyRecord:
    """A key of this project; another project's key is as absent as a nonexistent one (A1)."""
    record = await session.get(ApiKeyRecord, key_id) if _valid_id(key_id) else None
    if record is None or record.project_id != project_id or record.revoked_at is not None:
        raise NotFound(f"No API key found with id '{key_id[:64]}'.", param="api_key_id")
    return record


async def _active_admin_keys(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(ApiKeyRecord)
        .join(ProjectRecord, ProjectRecord.id == ApiKeyRecord.project_id)
        .where(
            ApiKeyRecord.role == "admin",
            ApiKeyRecord.revoked_at.is_(None),
            ProjectRecord.status == "active",
        )
    )
    return int(count or 0)


async def _paginate(
    session: AsyncSession,
    query: Select[T],
    created: InstrumentedAttribute[int],
    ident: InstrumentedAttribute[str],
    cursor: Any,
    limit: int,
) -> Page[T]:
    """One page ordered by (created_at, id), strictly after ``cursor``'s position."""
    limit = max(1, min(100, limit))
    if cursor is not None:
        query = query.where(
            or_(
                created > cursor.created_at,
                and_(created == cursor.created_at, ident > cursor.id),
            )
        )
    rows: Sequence[T] = (
        await session.scalars(query.order_by(created, ident).limit(limit + 1))
    ).all()
    return Page(items=list(rows[:limit]), has_more=len(rows) > limit)


def _write_secret_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` with mode 0600, atomically replacing an older file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{new_id('tmp')}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(content + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
