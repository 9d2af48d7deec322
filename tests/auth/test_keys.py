"""A8 (unpredictable IDs and keys, throttled guessing, constant-time comparison) and A7 (keys are
stored only as hashes and never logged)."""

from __future__ import annotations

import hmac
import logging
import math
import re
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import inspect, select

from rixin.auth import keys
from rixin.auth.keys import KEY_PREFIX, generate_key, hash_key, redact
from rixin.auth.service import AuthService, FailureThrottle
from rixin.errors import AuthenticationFailed, RateLimited
from rixin.settings import Settings
from rixin.store.db import Database
from rixin.store.ids import new_id
from rixin.store.records import Base

BASE62 = re.compile(r"[0-9A-Za-z]+")


def test_a8_keys_are_unique_prefixed_and_256_bit() -> None:
    generated = [generate_key() for _ in range(10_000)]
    assert len(set(generated)) == 10_000
    for key in generated[:100]:
        assert key.startswith(KEY_PREFIX)
        token = key[len(KEY_PREFIX) :]
        assert BASE62.fullmatch(token) and len(token) == 43
        assert len(token) * math.log2(62) >= 256
    # No shared structure beyond the prefix: first characters spread over the alphabet.
    assert len({k[len(KEY_PREFIX)] for k in generated}) > 30


def test_a8_ids_are_unique_prefixed_and_128_bit() -> None:
    ids = [new_id("proj") for _ in range(10_000)]
    assert len(set(ids)) == 10_000
    assert new_id("file_").startswith("file_") and not new_id("file_").startswith("file__")
    for value in ids[:100]:
        prefix, _, token = value.partition("_")
        assert prefix == "proj" and BASE62.fullmatch(token)
        assert len(token) * math.log2(62) >= 128


def test_keys_come_from_the_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_token_bytes(n: int) -> bytes:
        calls.append(n)
        return bytes(n)

    monkeypatch.setattr(keys.secrets, "token_bytes", fake_token_bytes)
    assert generate_key() == KEY_PREFIX + "0" * 43
    assert calls == [32]


def test_hash_and_redact() -> None:
    key = generate_key()
    assert hash_key(key) == hash_key(key) and len(hash_key(key)) == 64
    shown = redact(key)
    assert shown.startswith(KEY_PREFIX) and shown.endswith(key[-4:]) and len(shown) < 20
    assert redact("short-secret") == "..."


async def test_a8_guessing_is_throttled_per_source(auth: AuthService, settings: Settings) -> None:
    project = await auth.create_project("p")
    good = await auth.create_key(project.id, name="k")
    limit = settings.auth_failures_per_minute
    outcomes = []
    for _ in range(1000):  # "1,000 bad keys/min from one source"
        try:
            await auth.authenticate(generate_key(), source="10.0.0.9")
        except AuthenticationFailed:
            outcomes.append(401)
        except RateLimited as exc:
            outcomes.append(429)
            assert 1 <= int(exc.headers["Retry-After"]) <= 60
    assert outcomes.count(401) == limit and outcomes.count(429) == 1000 - limit
    with pytest.raises(RateLimited):  # refused before the key is looked at
        await auth.authenticate(good.value, source="10.0.0.9")
    assert (await auth.authenticate(good.value, source="10.0.0.10")).key_id == good.record.id


async def test_missing_key_is_401_and_not_counted(auth: AuthService, settings: Settings) -> None:
    for _ in range(settings.auth_failures_per_minute + 5):
        with pytest.raises(AuthenticationFailed) as info:
            await auth.authenticate(None, source="s")
        assert "didn't provide an API key" in info.value.message


async def test_malformed_keys_fail_without_echo(auth: AuthService) -> None:
    for bad in ("x" * 10_000, "sk-rixin-with space", "sk-rixin-\x00", "ключ"):
        with pytest.raises(AuthenticationFailed) as info:
            await auth.authenticate(bad, source="s")
        assert bad not in info.value.message and "sk-rixin" not in info.value.message


def test_throttle_window_slides() -> None:
    now = [0.0]
    throttle = FailureThrottle(3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        throttle.check("s")
        throttle.record("s")
    with pytest.raises(RateLimited) as info:
        throttle.check("s")
    assert info.value.retry_after == pytest.approx(60)
    now[0] = 60.5
    throttle.check("s")
    assert FailureThrottle(0).limit == 0  # disabled: never raises
    FailureThrottle(0).check("s")


def test_throttle_memory_is_bounded() -> None:
    throttle = FailureThrottle(5, max_sources=100)
    for i in range(1000):
        throttle.record(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failures) == 100


async def test_a8_constant_time_comparison_is_used(
    auth: AuthService, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = await auth.create_project("p")
    key = await auth.create_key(project.id, name="k")
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    await auth.authenticate(key.value, source="s")
    assert calls and calls[0][0] == calls[0][1] == hash_key(key.value).encode()


async def test_a7_raw_keys_never_reach_the_store_or_logs(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    configured = "configured-admin-" + generate_key()
    settings = Settings(data_dir=tmp_path / "data", admin_key=SecretStr(configured))
    generated = (await AuthService(db, Settings(data_dir=tmp_path / "data")).bootstrap()).key
    assert generated is not None
    auth = AuthService(db, settings)
    await auth.bootstrap()
    project = await auth.create_project("p")
    created = [await auth.create_key(project.id, name=f"k{i}") for i in range(3)]
    secrets_ = [generated, configured, *(c.value for c in created)]
    for secret in secrets_:
        await auth.authenticate(secret, source="s")
    await auth.revoke_key(project.id, created[0].record.id)
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(created[0].value, source="s")

    dump = await _dump_all_tables(db)
    db_file = Path(db.url.database or "")
    on_disk = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in secrets_:
        token = secret.removeprefix("configured-admin-")[len(KEY_PREFIX) :]
        assert token not in dump
        assert token.encode() not in on_disk
        assert token not in logged
    assert hash_key(configured) in dump  # stored, but only as its hash


async def _dump_all_tables(db: Database) -> str:
    chunks: list[str] = []
    async with db.session(readonly=True) as session:
        conn = await session.connection()
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert set(Base.metadata.tables) <= set(names)
        for name in names:
            table = Base.metadata.tables.get(name)
            if table is None:
                continue
            for row in await session.execute(select(table)):
                for value in row:
                    chunks.append(
                        value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    )
    return "\n".join(chunks)
