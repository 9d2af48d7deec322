"""The authenticated surface: every route (RELIABILITY A3), spoofed headers and Host (A5), and
secrets that must never be written down (A7)."""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import fake_models
from harness import RixinProcess
from reliability.support import app_routes
from rixin.testing.fake_upstream import FakeUpstream

# The reviewed public allowlist. A new public route fails A3 until it is reviewed and added here.
PUBLIC_ROUTES = frozenset({("GET", "/health"), ("GET", "/ready")})
PROJECTS = "/v1/organization/projects"
FULL_KEY = re.compile(rb"sk-rixin-[A-Za-z0-9]{40,}")
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def surface(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RixinProcess]:
    """A private server whose failure throttle does not turn A3's many 401s into 429s."""
    _, base_url = fake_upstream
    server = RixinProcess(
        tmp_path_factory.mktemp("surface"),
        models=fake_models(base_url),
        env={"RIXIN_AUTH_FAILURES_PER_MINUTE": "1000000"},
    )
    server.start(60)
    yield server
    server.stop()


def _admin(server: RixinProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=10)


def _member_key(server: RixinProcess, project_id: str) -> tuple[str, str]:
    with _admin(server) as http:
        created = http.post(f"{PROJECTS}/{project_id}/api_keys", json={"name": "k"}).json()
    return created["id"], created["value"]


def _concrete(path: str, values: dict[str, str]) -> str:
    """The route with real ids where we have them, a well-formed unknown id elsewhere (auth
    comes before any lookup, so an unknown id must still be 401)."""
    for name, value in values.items():
        path = re.sub(r"\{" + name + r"(:[a-z]+)?\}", value, path)
    return re.sub(r"\{[a-z_]+(:[a-z]+)?\}", "a3_unknown_id", path)


def _variants(path: str) -> list[str]:
    """The same route spelled differently: case, trailing and double slashes, encodings."""
    upper = path.upper()
    encoded = re.sub(r"/v1/([a-z])", lambda m: f"/v1/%{ord(m.group(1)):02x}", path, count=1)
    return [
        path,
        upper,
        path + "/",
        "/" + path,
        path.replace("/v1/", "/v1//", 1),
        encoded,
        path.replace("/v1/", "/v1/%2F", 1),
        path + "%00",
        path + "/.",
        path.replace("/v1/", "/v1/./", 1),
        path.replace("/v1/", "/v1/x/../", 1),
    ]


# --------------------------------------------------------------------------------------- A3


def test_a3_public_allowlist_is_reviewed() -> None:
    """A3: the routes that answer without a key are exactly the reviewed allowlist."""
    routes = {(method, path) for method, path, _ in app_routes()}
    assert routes >= PUBLIC_ROUTES
    assert ("GET", "/openapi.json") not in routes


def test_a3_every_route_needs_a_key(surface: RixinProcess, fake: FakeUpstream) -> None:
    """A3: each route, without a key, with malformed keys, with a revoked key and under path
    variants, is 401 (404/405 for a variant that names no route), never a 2xx."""
    with _admin(surface) as http:
        project = http.post(PROJECTS, json={"name": "a3"}).json()["id"]
    key_id, key = _member_key(surface, project)
    revoked_id, revoked = _member_key(surface, project)
    with _admin(surface) as http:
        assert http.delete(f"{PROJECTS}/{project}/api_keys/{revoked_id}").status_code == 200
    time.sleep(1.1)  # past the one-second auth cache: revocation must have taken effect

    values = {"project_id": project, "key_id": key_id, "model_id": "fake-chat"}
    credentials: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": 'Bearer ""'},
        {"Authorization": "Basic " + surface.admin_key},
        {"Authorization": surface.admin_key},
        {"Authorization": "Bearer sk-rixin-" + "A" * 43},
        {"Authorization": "Bearer " + surface.admin_key + "x"},
        {"Authorization": "Bearer " + surface.admin_key[:-1]},
        {"Authorization": "Bearer " + "x" * 5000},
        {"api-key": "sk-rixin-wrong"},
        {"Authorization": "Bearer " + revoked},
    ]
    checked = 0
    with httpx.Client(base_url=surface.base_url, timeout=10, follow_redirects=True) as http:
        for method, template, _ in app_routes():
            if (method, template) in PUBLIC_ROUTES:
                continue
            path = _concrete(template, values)
            body = {"json": {"name": "x"}} if method == "POST" else {}
            for headers in credentials:
                response = http.request(method, path, headers=headers, **body)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.json()["error"]["type"] == "authentication_error"
                checked += 1
            for variant in _variants(path):
                response = http.request(method, variant, **body)
                assert response.status_code in (400, 401, 404, 405), (
                    method,
                    variant,
                    response.status_code,
                    response.text,
                )
                checked += 1
            # a member key never reaches the administration routes
            if template.startswith(PROJECTS) or template == "/metrics":
                response = http.request(method, path, headers=surface.headers(key), **body)
                assert response.status_code in (403, 404), (method, path, response.text)
    assert checked > 150
    # no model work reached the upstream (other servers' health probes of /v1/models may)
    model_work = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank")
    assert sum(fake.stats.paths[path] for path in model_work) == 0


def test_a3_public_routes_reveal_nothing(surface: RixinProcess) -> None:
    """A3: the public routes answer without a key and carry no data beyond their status."""
    for _, path in sorted(PUBLIC_ROUTES):
        response = httpx.get(surface.base_url + path)
        assert response.status_code == 200
        assert set(response.json()) <= {"status", "database", "models", "accepting"}


# --------------------------------------------------------------------------------------- A5

SPOOFED = {
    "x-request-from": "internal",
    "X-Forwarded-For": "127.0.0.1",
    "X-Real-IP": "127.0.0.1",
    "Forwarded": "for=127.0.0.1;proto=https",
    "X-Forwarded-User": "admin",
    "X-Remote-User": "admin",
    "X-Rixin-Role": "admin",
    "X-Rixin-Project": "proj_other",
    "OpenAI-Organization": "org-other",
    "OpenAI-Project": "proj_other",
    "X-Tenant-Id": "proj_other",
}


def test_a5_spoofed_internal_headers_grant_nothing(
    surface: RixinProcess, fake: FakeUpstream
) -> None:
    """A5: "internal", forwarded-for-loopback and tenant headers change no privilege or tenant."""
    with _admin(surface) as http:
        project_a = http.post(PROJECTS, json={"name": "a5-a"}).json()["id"]
        project_b = http.post(PROJECTS, json={"name": "a5-b"}).json()["id"]
    _, key_a = _member_key(surface, project_a)
    _, key_b = _member_key(surface, project_b)
    forged = {**SPOOFED, "X-Rixin-Project": project_b, "OpenAI-Project": project_b}
    with httpx.Client(base_url=surface.base_url, timeout=10) as http:
        for path in ("/v1/models", PROJECTS, "/metrics"):
            assert http.get(path, headers=forged).status_code == 401
        # a member key stays a member key
        member = {**forged, **surface.headers(key_a)}
        assert http.get(PROJECTS, headers=member).status_code == 403
        assert http.post(PROJECTS, json={"name": "x"}, headers=member).status_code == 403
        # and stays in its own project: B's idempotency record is not A's
        chat = {"model": "fake-chat", "messages": MESSAGES}
        idem = {"Idempotency-Key": f"a5-{secrets.token_hex(6)}"}
        theirs = http.post(
            "/v1/chat/completions", json=chat, headers={**surface.headers(key_b), **idem}
        )
        mine = http.post("/v1/chat/completions", json=chat, headers={**member, **idem})
        assert theirs.status_code == mine.status_code == 200
        assert "idempotent-replayed" not in mine.headers
        assert mine.json()["id"] != theirs.json()["id"]


def test_a5_host_allowlist_on_loopback(surface: RixinProcess) -> None:
    """A5: bound to loopback, a foreign ``Host`` (DNS rebinding) is refused on every path."""
    port = surface.port
    with httpx.Client(base_url=surface.base_url, timeout=10) as http:
        for host in (
            "evil.example",
            f"evil.example:{port}",
            "localhost.evil.example",
            f"127.0.0.1.nip.io:{port}",
            "10.0.0.1",
        ):
            for path in ("/health", "/v1/models"):
                response = http.get(path, headers={"Host": host, **surface.headers()})
                assert response.status_code == 400, (host, path)
                assert response.json()["error"]["code"] == "host_not_allowed"
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"LOCALHOST:{port}"):
            response = http.get("/v1/models", headers={"Host": host, **surface.headers()})
            assert response.status_code == 200, host


def test_a5_forwarded_for_does_not_reset_the_throttle(
    tmp_path: Path, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    """A5: the failure throttle keys on the socket peer; ``X-Forwarded-For`` cannot dodge it."""
    server = RixinProcess(
        tmp_path / "throttle", models=[], env={"RIXIN_AUTH_FAILURES_PER_MINUTE": "3"}
    ).start(60)
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            statuses = [
                http.get(
                    "/v1/models",
                    headers={"Authorization": "Bearer wrong", "X-Forwarded-For": f"10.9.0.{i}"},
                ).status_code
                for i in range(5)
            ]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429]
    finally:
        server.stop(signal.SIGKILL)


# --------------------------------------------------------------------------------------- A7


def _scan(directory: Path, secrets_: list[str]) -> list[str]:
    """Every (file, finding) where a secret or a full-length rixin key appears."""
    findings = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in secrets_:
            if secret.encode() in data:
                findings.append(f"{path.name}: {secret[:14]}…")
        findings.extend(f"{path.name}: pattern {m[:14]!r}…" for m in FULL_KEY.findall(data))
    return findings


def test_a7_secrets_never_written(tmp_path: Path) -> None:
    """A7: after auth failures, key creation, use and revocation, and an upstream that echoes
    our upstream key, neither the log nor the database (WAL included) nor any error body holds
    a raw key."""
    upstream_key = f"sk-upstream-canary-{secrets.token_hex(16)}"
    strict = FakeUpstream(models=("fake-model",), api_key="the-key-the-upstream-wants")
    with strict.serve() as strict_url:
        models = fake_models(strict_url, api_key_env="RIXIN_TEST_UPSTREAM_KEY")
        server = RixinProcess(
            tmp_path / "a7",
            models=models,
            env={"RIXIN_TEST_UPSTREAM_KEY": upstream_key},
        ).start(60)
        raw_keys = [server.admin_key]
        bodies: list[bytes] = []
        try:
            with _admin(server) as http:
                project = http.post(PROJECTS, json={"name": "a7"}).json()["id"]
                for i in range(3):
                    created = http.post(f"{PROJECTS}/{project}/api_keys", json={"name": f"k{i}"})
                    raw_keys.append(created.json()["value"])
                revoke = created.json()["id"]
                assert http.delete(f"{PROJECTS}/{project}/api_keys/{revoke}").status_code == 200
            guesses = [f"sk-rixin-{secrets.token_urlsafe(32)}" for _ in range(3)]
            with httpx.Client(base_url=server.base_url, timeout=10) as http:
                for key in raw_keys[1:3]:
                    chat = {"model": "fake-chat", "messages": MESSAGES}
                    reply = http.post(
                        "/v1/chat/completions", json=chat, headers=server.headers(key)
                    )
                    bodies.append(reply.content)  # the upstream refuses our key and echoes it
                for key in [*guesses, raw_keys[-1], raw_keys[0] + "x"]:
                    reply = http.get("/v1/models", headers=server.headers(key))
                    assert reply.status_code == 401
                    bodies.append(reply.content)
            watched = [*raw_keys, *guesses, upstream_key]
            findings = _scan(server.data_dir, watched)  # while running: the WAL is still there
        finally:
            server.stop()
    findings += _scan(server.data_dir, watched)
    assert not findings, findings
    for body in bodies:
        assert not any(s.encode() in body for s in watched), body
        assert not FULL_KEY.search(body)
    assert strict.stats.requests >= 1, "the upstream was never called: the echo path is untested"
