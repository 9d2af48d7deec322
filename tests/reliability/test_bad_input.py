"""Bad input: contract fuzz of every POST route (RELIABILITY B1) and abusive bodies (B2).

No schemathesis here: the route list comes from ``create_app(...)`` and each body model's own
fields, so a new route or field is fuzzed without touching this file.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate_error
from reliability.support import app_routes, rss_bytes
from rixin.testing.fake_upstream import FakeUpstream

PROJECTS = "/v1/organization/projects"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]

VALID_BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "fake-chat", "messages": MESSAGES},
    "/v1/completions": {"model": "fake-chat", "prompt": "hi"},
    "/v1/embeddings": {"model": "fake-embed", "input": "hi"},
    "/v1/rerank": {"model": "fake-rerank", "query": "q", "documents": ["a", "b"]},
    PROJECTS: {"name": "fuzzed"},
    PROJECTS + "/{project_id}": {"name": "renamed"},
    PROJECTS + "/{project_id}/api_keys": {"name": "fuzzed key"},
}
NOT_OBJECTS = [b"", b"not json", b"{", b'{"model": }', b"[]", b"[1, 2]", b"null", b'"text"', b"123"]
BAD_VALUES: list[Any] = [
    None,
    10**30,
    -(10**30),
    -1,
    1.5,
    "",
    "not-a-valid-enum-value",
    [],
    {},
    True,
    [None],
    {"nested": {"deeper": [1, {"x": None}]}},
    "x" * 5000,
]
PARAM_ROOT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*")


def post_routes() -> list[tuple[str, Any]]:
    return [(path, route) for method, path, route in app_routes() if method == "POST"]


def body_fields(route: Any) -> list[str]:
    field = getattr(route, "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", {})
    return sorted(f.alias or name for name, f in fields.items())


def fresh_project(server: RixinProcess) -> str:
    created = httpx.post(
        f"{server.base_url}{PROJECTS}", json={"name": "b1 target"}, headers=server.headers()
    )
    assert created.status_code == 200
    return str(created.json()["id"])


def check_error(response: httpx.Response, context: object) -> dict[str, Any]:
    """Never a 5xx; every error is OpenAI's envelope with an ``x-request-id``."""
    assert response.status_code < 500, (context, response.status_code, response.text)
    assert response.headers.get("x-request-id"), context
    if response.status_code < 400:
        return {}
    assert response.headers["content-type"].startswith("application/json"), context
    body = response.json()
    validate_error(body)
    return dict(body["error"])


# --------------------------------------------------------------------------------------- B1


def test_b1_routes_are_enumerated() -> None:
    """B1: the fuzz below really covers the app (a refactor that hides routes fails here)."""
    paths = {path for path, _ in post_routes()}
    assert set(VALID_BODIES) <= paths | {PROJECTS + "/{project_id}/archive"}
    assert len(paths) >= 7


def test_b1_non_object_bodies(fake_server: RixinProcess, fake: FakeUpstream) -> None:
    """B1: empty, non-JSON, truncated, arrays, scalars: 400 envelope, never a 5xx."""
    with httpx.Client(base_url=fake_server.base_url, headers=fake_server.headers()) as http:
        for path, route in post_routes():
            url = path.replace("{project_id}", fresh_project(fake_server))
            for raw in NOT_OBJECTS:
                for content_type in ("application/json", "text/plain"):
                    headers = {"Content-Type": content_type}
                    response = http.post(url, content=raw, headers=headers)
                    error = check_error(response, (path, raw, content_type))
                    if body_fields(route):
                        assert response.status_code == 400, (path, raw, response.text)
                        assert error["type"] == "invalid_request_error"
                        assert "'None'" not in error["message"], error


def test_b1_field_mutations(fake_server: RixinProcess, fake: FakeUpstream) -> None:
    """B1: each field of each body set to wrong types, nulls, huge numbers, unknown enums:
    never a 5xx; a validation failure names the field at fault in ``param``."""
    checked = 0
    with httpx.Client(
        base_url=fake_server.base_url, headers=fake_server.headers(), timeout=30
    ) as http:
        for path, route in post_routes():
            fields = body_fields(route)
            base = VALID_BODIES.get(path, {})
            url = path.replace("{project_id}", fresh_project(fake_server))
            for field in [f for f in fields if f in base]:  # each given field left out
                body = {k: v for k, v in base.items() if k != field}
                error = check_error(http.post(url, json=body), (path, "missing", field))
                if error.get("message", "").startswith("Missing required"):
                    assert error["param"] == field, (path, field, error)
            for field in fields:
                for value in BAD_VALUES:
                    response = http.post(url, json={**base, field: value})
                    error = check_error(response, (path, field, value))
                    checked += 1
                    if error.get("code") != "invalid_request":
                        continue
                    # a validation failure names a field of this body; a schema failure names
                    # exactly the mutated one (a cross-field rule may name its partner)
                    match = PARAM_ROOT.match(error["param"] or "")
                    assert match and match.group(0) in fields, (path, field, value, error)
                    # from a valid body, a schema failure names exactly the mutated field
                    if base and error["message"].startswith("Invalid value for"):
                        assert match.group(0) == field, (path, field, value, error)
    assert checked > 200


def test_b1_real_client_error_classes(fake_server: RixinProcess, fake: FakeUpstream) -> None:
    """B1: the real client maps our errors to its classes with ``.code/.param/.type`` set."""
    cases: list[tuple[dict[str, Any], type[openai.APIStatusError], str | None]] = [
        ({"messages": []}, openai.BadRequestError, "messages"),
        ({"messages": MESSAGES, "temperature": 3}, openai.BadRequestError, "temperature"),
        ({"messages": MESSAGES, "n": 100}, openai.BadRequestError, "n"),
        ({"messages": MESSAGES, "max_tokens": 10**12}, openai.BadRequestError, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, openai.BadRequestError, "messages"),
        ({"messages": MESSAGES, "model": "no-such-model"}, openai.NotFoundError, "model"),
    ]
    with openai.OpenAI(base_url=fake_server.api_url, api_key=fake_server.admin_key) as client:
        for kwargs, cls, param in cases:
            call = {"model": "fake-chat", **kwargs}
            with pytest.raises(cls) as caught:
                client.chat.completions.create(**call)
            error = caught.value
            assert error.param is not None and error.param.startswith(param or ""), kwargs
            assert error.code and error.type, kwargs
            assert error.request_id if hasattr(error, "request_id") else True
            assert error.response.headers.get("x-request-id")
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="fake-embed", input="x", encoding_format="bogus")  # type: ignore[arg-type]
        assert caught.value.param == "encoding_format"
    with (
        openai.OpenAI(base_url=fake_server.api_url, api_key="sk-rixin-not-a-real-key") as client,
        pytest.raises(openai.AuthenticationError) as denied,
    ):
        client.models.list()
    assert denied.value.code == "invalid_api_key" and denied.value.type == "authentication_error"
    assert fake.stats.requests == 0


# --------------------------------------------------------------------------------------- B2


def raw_post(
    server: RixinProcess,
    path: str,
    chunks: Iterator[bytes],
    *,
    headers: dict[str, str],
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes, float, int]:
    """POST over a raw socket, sending ``chunks`` only until the server answers.

    Returns status, headers, body, seconds until the answer, bytes sent.
    """
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sent = 0
    try:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in {**server.headers(), **headers}.items())
        if chunked:
            head += "Transfer-Encoding: chunked\r\n"
        sock.sendall((head + "\r\n").encode())
        started = time.monotonic()
        sock.settimeout(2)
        try:
            for chunk in chunks:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered: stop uploading
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                sent += len(chunk)
            else:
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server stopped reading, as it should
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            assert piece, f"connection closed without an answer after {sent} bytes"
            data += piece
        elapsed = time.monotonic() - started
        head_raw, _, body = data.partition(b"\r\n\r\n")
        lines = head_raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        parsed = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(parsed.get("content-length", "0"))
        while len(body) < length:
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
        return status, parsed, body, elapsed, sent
    finally:
        sock.close()


def megabytes(total: int, piece: bytes = b" " * (1 << 20)) -> Iterator[bytes]:
    """``total`` bytes of JSON whitespace, one MiB at a time (never held at once)."""
    yield b'{"model": "fake-chat", "messages": ['
    for _ in range(total // len(piece)):
        yield piece


def many_messages(count: int) -> Iterator[bytes]:
    message = b'{"role": "user", "content": "x"},'
    yield b'{"model": "fake-chat", "messages": ['
    for _ in range(count // 10_000):
        yield message * 10_000


def test_b2_oversized_and_abusive_bodies(fake_server: RixinProcess, fake: FakeUpstream) -> None:
    """B2: 100 MB bodies (with and without Content-Length) and 10⁶ messages get 413 before the
    body is read; 10⁵-deep nesting gets 400; the server's RSS grows by less than 50 MB."""
    assert fake_server.proc is not None
    pid = fake_server.proc.pid
    rss_before = rss_bytes(pid)
    hundred_mb = 100 * (1 << 20)
    json_type = {"Content-Type": "application/json"}

    status, headers, body, elapsed, sent = raw_post(
        fake_server,
        "/v1/chat/completions",
        megabytes(hundred_mb),
        headers={**json_type, "Content-Length": str(hundred_mb + 36)},
    )
    assert status == 413 and elapsed < 5.0 and sent < hundred_mb // 2, (status, elapsed, sent)
    validate_error(json.loads(body))
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert headers.get("x-request-id")

    status, _, body, elapsed, sent = raw_post(
        fake_server, "/v1/chat/completions", megabytes(hundred_mb), headers=json_type, chunked=True
    )
    assert status == 413 and elapsed < 10.0 and sent < hundred_mb // 2, (status, elapsed, sent)
    validate_error(json.loads(body))

    messages_size = 2 + 36 + 33 * 10**6  # announced honestly; refused from the header alone
    status, _, body, elapsed, _ = raw_post(
        fake_server,
        "/v1/chat/completions",
        many_messages(10**6),
        headers={**json_type, "Content-Length": str(messages_size)},
    )
    assert status in (400, 413) and elapsed < 5.0
    validate_error(json.loads(body))

    with httpx.Client(
        base_url=fake_server.base_url, headers=fake_server.headers(), timeout=30
    ) as http:
        for deep in (
            b'{"model": "fake-chat", "messages": ' + b"[" * 10**5 + b"]" * 10**5 + b"}",
            b'{"a": ' * 10**5 + b"1" + b"}" * 10**5,
        ):
            started = time.monotonic()
            response = http.post("/v1/chat/completions", content=deep, headers=json_type)
            assert response.status_code == 400, response.text
            assert time.monotonic() - started < 5.0
            validate_error(response.json())
        for bad_header in ("-1", "abc", "1e9"):
            status, _, _, _, _ = raw_post(
                fake_server,
                "/v1/chat/completions",
                iter([b"{}"]),
                headers={**json_type, "Content-Length": bad_header},
            )
            assert status == 400, bad_header

    assert fake.stats.requests == 0  # nothing reached a model
    assert rss_bytes(pid) - rss_before < 50 * (1 << 20)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 10**30),
        ("max_tokens", 2**31),
        ("max_completion_tokens", 10**9),
        ("n", 10**6),
        ("n", 100),
    ],
)
def test_b2_huge_generation_limits(
    fake_server: RixinProcess, fake: FakeUpstream, field: str, value: int
) -> None:
    """B2: huge ``max_tokens``/``n`` are refused with 400 naming the field, before any model."""
    body = {"model": "fake-chat", "messages": MESSAGES, field: value}
    response = httpx.post(
        f"{fake_server.base_url}/v1/chat/completions", json=body, headers=fake_server.headers()
    )
    assert response.status_code == 400
    error = check_error(response, field)
    assert error["param"] == field
    assert fake.stats.requests == 0
