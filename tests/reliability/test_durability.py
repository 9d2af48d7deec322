"""Durability: kill -9 during writes (RELIABILITY D1) and in-doubt POST replay (D5)."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest

from harness import RixinProcess
from rixin.testing.fake_upstream import FakeUpstream

PROJECTS = "/v1/organization/projects"
CHAT = "/v1/chat/completions"
MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]
WRITERS = 4


# --------------------------------------------------------------------------------------- D1


@dataclass
class Acknowledged:
    """What the server answered 2xx for: it must survive every kill."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    projects: dict[str, str] = field(default_factory=dict)
    """project id → name"""
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    """key id → (project id, secret)"""
    replays: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    """Idempotency-Key → (request body, acknowledged response body)"""


def _writer(server: RixinProcess, acked: Acknowledged, tag: str, stop: threading.Event) -> None:
    """Create projects (with an Idempotency-Key) and a key in each, until the server dies."""
    n = 0
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=10) as http:
        while not stop.is_set():
            n += 1
            name = f"{tag}-{n}"
            idem = f"d1-{tag}-{n}"
            body = json.dumps({"name": name}).encode()
            try:
                created = http.post(
                    PROJECTS,
                    content=body,
                    headers={"Idempotency-Key": idem, "Content-Type": "application/json"},
                )
                if created.status_code != 200:
                    continue
                project = created.json()
                with acked.lock:
                    acked.projects[project["id"]] = name
                    acked.replays[idem] = (body, created.content)
                key = http.post(f"{PROJECTS}/{project['id']}/api_keys", json={"name": name})
                if key.status_code == 200:
                    with acked.lock:
                        acked.keys[key.json()["id"]] = (project["id"], key.json()["value"])
            except httpx.TransportError:
                return  # the server was killed: whatever was not acknowledged may be lost


def _kill_loop(data_dir: Path, iterations: int, seed: int) -> tuple[Acknowledged, str]:
    rng = random.Random(seed)
    admin_key = f"sk-rixin-{secrets.token_urlsafe(32)}"
    acked = Acknowledged()
    for i in range(iterations):
        server = RixinProcess(data_dir, models=[], admin_key=admin_key).start(60)
        assert server.proc is not None
        stop = threading.Event()
        writers = [
            threading.Thread(target=_writer, args=(server, acked, f"i{i}w{w}", stop), daemon=True)
            for w in range(WRITERS)
        ]
        for writer in writers:
            writer.start()
        time.sleep(rng.uniform(0.05, 0.6))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        stop.set()
        for writer in writers:
            writer.join(15)
            assert not writer.is_alive()
    return acked, admin_key


def _check_database(path: Path, acked: Acknowledged) -> None:
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        projects = dict(connection.execute("SELECT id, name FROM projects").fetchall())
        keys = {
            row[0]: row[1:]
            for row in connection.execute("SELECT id, project_id, key_hash FROM api_keys")
        }
        orphans = connection.execute(
            "SELECT count(*) FROM api_keys WHERE project_id NOT IN (SELECT id FROM projects)"
        ).fetchone()
    finally:
        connection.close()
    assert orphans == (0,)
    lost = {pid for pid in acked.projects if pid not in projects}
    assert not lost, f"{len(lost)} acknowledged projects lost"
    assert all(projects[pid] == name for pid, name in acked.projects.items())
    for key_id, (project_id, secret) in acked.keys.items():
        assert key_id in keys, f"acknowledged key {key_id} lost"
        assert keys[key_id] == (project_id, hashlib.sha256(secret.encode()).hexdigest())


def _check_served(data_dir: Path, admin_key: str, acked: Acknowledged) -> None:
    """After a clean restart: sampled keys authenticate, idempotent creates replay exactly."""
    server = RixinProcess(data_dir, models=[], admin_key=admin_key).start(60)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            sample = random.Random(0).sample(sorted(acked.keys), min(20, len(acked.keys)))
            for key_id in sample:
                _, secret = acked.keys[key_id]
                assert http.get("/v1/models", headers=server.headers(secret)).status_code == 200
            names = sorted(acked.replays)
            for idem in random.Random(1).sample(names, min(40, len(names))):
                body, response = acked.replays[idem]
                replay = http.post(
                    PROJECTS,
                    content=body,
                    headers={
                        **server.headers(),
                        "Idempotency-Key": idem,
                        "Content-Type": "application/json",
                    },
                )
                assert replay.status_code == 200, (idem, replay.status_code, replay.text)
                assert replay.content == response
    finally:
        server.stop()


def _d1(tmp_path: Path, iterations: int) -> None:
    data_dir = tmp_path / "data"
    acked, admin_key = _kill_loop(data_dir, iterations, seed=iterations)
    assert len(acked.projects) >= iterations, "too few writes were acknowledged to mean much"
    _check_database(data_dir / "rixin.db", acked)
    _check_served(data_dir, admin_key, acked)
    _check_database(data_dir / "rixin.db", acked)


def test_d1_kill9_during_writes(tmp_path: Path) -> None:
    """D1: 20 × SIGKILL while 4 clients create projects and keys: nothing acknowledged is lost,
    ``integrity_check`` is ok, no key without its project, acknowledged creates replay."""
    _d1(tmp_path, iterations=20)  # a restart costs 3-4 s on the 2-core CI box


@pytest.mark.slow
def test_d1_kill9_during_writes_50(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """D1, full length: 50 kills (about 4 minutes; only with ``-m slow``)."""
    if "slow" not in str(request.config.getoption("markexpr")):
        pytest.skip("the 50-kill variant runs with -m slow")
    _d1(tmp_path, iterations=50)


# --------------------------------------------------------------------------------------- D5


def _post(
    server: RixinProcess, path: str, body: dict[str, Any], key: str | None, auth: str | None = None
) -> httpx.Response:
    headers = server.headers(auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=30)


def _all_projects(server: RixinProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100, "include_archived": True}
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=10) as http:
        for _ in range(1000):
            page = http.get(PROJECTS, params=params).json()
            found.extend(page["data"])
            if not page["has_more"]:
                return found
            params["after"] = page["last_id"]
    raise AssertionError("more than 100,000 projects")


def test_d5_replay_is_byte_identical(fake_server: RixinProcess, fake: FakeUpstream) -> None:
    """D5: a retry after completion gets the stored response byte for byte; one object."""
    key = f"d5-{secrets.token_hex(8)}"
    name = f"d5-project-{key}"
    first = _post(fake_server, PROJECTS, {"name": name}, key)
    again = _post(fake_server, PROJECTS, {"name": name}, key)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers.get("idempotent-replayed") == "true"
    assert first.headers["x-request-id"] != again.headers["x-request-id"]
    assert [p["id"] for p in _all_projects(fake_server) if p["name"] == name] == [
        first.json()["id"]
    ]

    chat = {"model": "fake-chat", "messages": MESSAGES}
    one = _post(fake_server, CHAT, chat, key)
    two = _post(fake_server, CHAT, chat, key + "-other-route")
    replay = _post(fake_server, CHAT, chat, key + "-other-route")
    assert one.status_code == 422  # the key already names a project creation
    assert replay.content == two.content
    assert fake.stats.paths[CHAT] == 1


def test_d5_concurrent_duplicate_gets_409(fake_server: RixinProcess, fake: FakeUpstream) -> None:
    """D5: a duplicate while the first still runs gets 409 + Retry-After; afterwards the replay."""
    fake.behaviour.latency_s = 1.5
    key = f"d5-{secrets.token_hex(8)}"
    chat = {"model": "fake-chat", "messages": MESSAGES}
    result: dict[str, httpx.Response] = {}
    first = threading.Thread(
        target=lambda: result.update(first=_post(fake_server, CHAT, chat, key))
    )
    first.start()
    deadline = time.monotonic() + 5
    while fake.stats.in_flight < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    duplicate = _post(fake_server, CHAT, chat, key)
    first.join(30)
    assert duplicate.status_code == 409
    error = duplicate.json()["error"]
    assert error["code"] == "conflict" and error["param"] == "Idempotency-Key"
    assert 1 <= int(duplicate.headers["retry-after"]) <= 60
    assert result["first"].status_code == 200
    after = _post(fake_server, CHAT, chat, key)
    assert after.content == result["first"].content
    assert fake.stats.paths[CHAT] == 1


def test_d5_changed_payload_gets_422(fake_server: RixinProcess) -> None:
    """D5: the same key with a different payload is refused with 422."""
    key = f"d5-{secrets.token_hex(8)}"
    assert _post(fake_server, PROJECTS, {"name": "a"}, key).status_code == 200
    changed = _post(fake_server, PROJECTS, {"name": "b"}, key)
    assert changed.status_code == 422
    error = changed.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["param"] == "Idempotency-Key"


def test_d5_other_tenant_key_is_independent(fake_server: RixinProcess, fake: FakeUpstream) -> None:
    """D5: another project's identical key and payload runs on its own, never sees a replay."""
    admin = fake_server.admin_key
    other = _post(fake_server, PROJECTS, {"name": f"tenant-{secrets.token_hex(4)}"}, None).json()
    member = _post(fake_server, f"{PROJECTS}/{other['id']}/api_keys", {"name": "m"}, None)
    member_key = member.json()["value"]
    key = f"d5-{secrets.token_hex(8)}"
    chat = {"model": "fake-chat", "messages": MESSAGES}
    mine = _post(fake_server, CHAT, chat, key, auth=admin)
    theirs = _post(fake_server, CHAT, chat, key, auth=member_key)
    assert mine.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert fake.stats.paths[CHAT] == 2
    # and each tenant's own retry replays its own answer
    assert _post(fake_server, CHAT, chat, key, auth=member_key).content == theirs.content
    assert _post(fake_server, CHAT, chat, key, auth=admin).content == mine.content


def test_d5_without_key_each_post_creates(fake_server: RixinProcess) -> None:
    """D5, documented: without an Idempotency-Key every POST creates a new object."""
    name = f"d5-nokey-{secrets.token_hex(4)}"
    one = _post(fake_server, PROJECTS, {"name": name}, None)
    two = _post(fake_server, PROJECTS, {"name": name}, None)
    assert one.status_code == two.status_code == 200
    assert one.json()["id"] != two.json()["id"]


class DropFirstResponse(httpx2.BaseTransport):
    """A proxy that lets the server commit, then loses the first response on its way back."""

    def __init__(self) -> None:
        self.inner = httpx2.HTTPTransport()
        self.dropped: list[bytes] = []
        self.sent = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        response = self.inner.handle_request(request)
        if self.dropped:
            return response
        try:
            response.read()
            self.dropped.append(response.content)
        finally:
            response.close()
        raise httpx2.ReadError("connection reset by proxy", request=request)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
def test_d5_in_doubt_retry_by_real_client(
    fake_server: RixinProcess, fake: FakeUpstream, with_key: bool
) -> None:
    """D5: the response to a committed POST is lost and the real client retries by itself:
    with an Idempotency-Key it gets the stored answer (one upstream call); without one the
    request runs twice (documented: the client sends no key of its own)."""
    transport = DropFirstResponse()
    headers = {"Idempotency-Key": f"d5-{secrets.token_hex(8)}"} if with_key else {}
    with openai.OpenAI(
        base_url=fake_server.api_url,
        api_key=fake_server.admin_key,
        http_client=httpx2.Client(transport=transport),
    ) as client:
        completion = client.chat.completions.create(
            model="fake-chat", messages=MESSAGES, extra_headers=headers
        )
    assert transport.sent >= 2
    first = json.loads(transport.dropped[0])
    if with_key:
        assert completion.id == first["id"]
        assert fake.stats.paths[CHAT] == 1
    else:
        assert completion.id != first["id"]
        assert fake.stats.paths[CHAT] == 2
