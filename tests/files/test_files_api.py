"""``/v1/files`` end to end with the official client; bodies checked against OpenAI's spec.

Also: A1 (another tenant's ids are 404, its files never listed), B7 (hostile names and ids),
B2 (abusive multipart bodies refused fast), content dedupe in the blob store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from files.conftest import Tenant, make_tenant
from harness import RixinProcess
from openapi_spec import validate, validate_error


def _get(server: RixinProcess, tenant: Tenant, path: str) -> httpx.Response:
    return httpx.get(f"{server.api_url}{path}", headers=server.headers(tenant.key))


def _blob_files(server: RixinProcess) -> set[Path]:
    root = server.data_dir / "files"
    return {p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts}


def test_create_retrieve_list_content_delete(files_server: RixinProcess, tenant_a: Tenant) -> None:
    client = tenant_a.client
    created = client.files.create(file=("notes.txt", b"hello files"), purpose="assistants")
    assert created.id.startswith("file-") and created.bytes == 11
    assert created.filename == "notes.txt" and created.purpose == "assistants"
    assert created.expires_at is None

    raw = _get(files_server, tenant_a, f"/files/{created.id}")
    assert raw.status_code == 200
    validate("OpenAIFile", raw.json())
    assert client.files.retrieve(created.id) == created

    listing = _get(files_server, tenant_a, "/files")
    validate("ListFilesResponse", listing.json())
    assert created.id in [f["id"] for f in listing.json()["data"]]

    content = client.files.content(created.id)
    assert content.read() == b"hello files"
    assert content.response.headers["content-type"] == "application/octet-stream"

    response = httpx.delete(
        f"{files_server.api_url}/files/{created.id}", headers=files_server.headers(tenant_a.key)
    )
    validate("DeleteFileResponse", response.json())
    assert response.json() == {"id": created.id, "object": "file", "deleted": True}
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)


def test_pagination_order_and_purpose_filter(files_server: RixinProcess) -> None:
    client = make_tenant(files_server, "pager").client
    ids = []
    for i in range(5):
        purpose = "vision" if i % 2 else "user_data"
        ids.append(client.files.create(file=(f"f{i}.txt", b"x%d" % i), purpose=purpose).id)
    ascending = [f.id for f in client.files.list(limit=2, order="asc")]  # auto-paging
    assert ascending == ids
    first = client.files.list(limit=2, order="desc")
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    assert [f.id for f in client.files.list()] == ids[::-1]  # default: newest first
    assert [f.id for f in client.files.list(purpose="vision")] == [ids[3], ids[1]]
    with pytest.raises(openai.BadRequestError):
        client.files.list(limit=0)


def test_expiry(files_server: RixinProcess, tenant_a: Tenant) -> None:
    client = tenant_a.client
    hour = client.files.create(
        file=("e.txt", b"e"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert hour.expires_at == hour.created_at + 3600
    batch = client.files.create(file=("b.jsonl", b"{}\n"), purpose="batch")
    assert batch.expires_at == batch.created_at + 30 * 24 * 3600
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(
            file=("e.txt", b"e"),
            purpose="user_data",
            expires_after={"anchor": "created_at", "seconds": 10},
        )
    assert err.value.body["param"] == "expires_after.seconds"  # type: ignore[index]


def test_invalid_requests_are_openai_errors(files_server: RixinProcess, tenant_a: Tenant) -> None:
    client = tenant_a.client
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("a.txt", b"a"), purpose="nonsense")  # type: ignore[arg-type]
    assert err.value.body["param"] == "purpose"  # type: ignore[index]
    url, headers = f"{files_server.api_url}/files", files_server.headers(tenant_a.key)
    missing = httpx.post(url, headers=headers, data={"purpose": "assistants"}, files={"x": b"1"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    validate_error(missing.json())
    not_form = httpx.post(url, headers=headers, json={"purpose": "assistants"})
    assert not_form.status_code == 400
    empty = client.files.create(file=("empty.txt", b""), purpose="user_data")
    assert empty.bytes == 0 and client.files.content(empty.id).read() == b""
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401


def test_same_content_is_stored_once_and_freed_with_its_last_file(
    files_server: RixinProcess, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    data = os.urandom(4096)
    before = _blob_files(files_server)
    a = tenant_a.client.files.create(file=("a.bin", data), purpose="user_data")
    b = tenant_b.client.files.create(file=("b.bin", data), purpose="user_data")
    added = _blob_files(files_server) - before
    assert len(added) == 1 and next(iter(added)).read_bytes() == data
    tenant_a.client.files.delete(a.id)
    assert tenant_b.client.files.content(b.id).read() == data
    tenant_b.client.files.delete(b.id)
    assert not (_blob_files(files_server) & added)


# -- A1: tenant B on tenant A's files ----------------------------------------------------------


def test_a1_other_tenants_files_are_404_and_never_listed(
    files_server: RixinProcess, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    secret = tenant_a.client.files.create(file=("secret.txt", b"A only"), purpose="assistants")
    b = tenant_b.client
    for call in (b.files.retrieve, b.files.content, b.files.delete):
        with pytest.raises(openai.NotFoundError) as err:
            call(secret.id)
        validate_error(err.value.response.json())
    absent = "file-" + "0" * 22
    for file_id in (secret.id, absent):  # same answer as for an id that never existed
        response = _get(files_server, tenant_b, f"/files/{file_id}")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"No such File object: {file_id}"
    assert secret.id not in [f.id for f in b.files.list()]
    with pytest.raises(openai.NotFoundError):
        b.files.list(after=secret.id)
    assert tenant_a.client.files.content(secret.id).read() == b"A only"  # untouched


# -- B7: hostile names and ids -----------------------------------------------------------------

HOSTILE_NAMES = [
    "../../x",
    "/etc/passwd",
    "C:\\Windows\\system32\\evil.dll",
    "..\\..\\x",
    "a\x00b.txt",
    "%2e%2e%2fescape",
    "\u2025\u2025/\u2024\u2024/dots",
    "..",
    "x" * 4096,
    "y" * 4000 + ".pdf",
]


def _tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def test_b7_hostile_filenames_are_display_only(
    files_server: RixinProcess, tenant_a: Tenant
) -> None:
    outside = files_server.data_dir.parent
    before = {
        k: v for k, v in _tree(outside).items() if not k.startswith(str(files_server.data_dir))
    }
    url, headers = f"{files_server.api_url}/files", files_server.headers(tenant_a.key)
    for name in HOSTILE_NAMES:
        response = httpx.post(
            url, headers=headers, data={"purpose": "user_data"}, files={"file": (name, b"evil")}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        validate("OpenAIFile", body)
        stored = body["filename"]
        assert "/" not in stored and "\\" not in stored and "\x00" not in stored
        assert stored not in ("", ".", "..") and len(stored) <= 255
    assert body["filename"].endswith(".pdf")  # a long name keeps its extension
    after = {
        k: v for k, v in _tree(outside).items() if not k.startswith(str(files_server.data_dir))
    }
    assert after == before  # nothing written outside the data dir
    for path in _blob_files(files_server):  # inside it, only hash-named blobs
        assert len(path.name) == 64 and path.parent.name == path.name[2:4]


CRAFTED_IDS = [
    "..%2F..%2Frixin.db",
    "%2e%2e%2f%2e%2e%2frixin.db",
    "file-..%5C..%5Cx",
    "Li4vLi4vcml4aW4uZGI=",  # base64 of ../../rixin.db
    "file-" + "A" * 300,
    "file-%00",
    "files",
]


def test_b7_crafted_ids_are_404(files_server: RixinProcess, tenant_a: Tenant) -> None:
    headers = files_server.headers(tenant_a.key)
    for crafted in CRAFTED_IDS:
        for suffix in ("", "/content"):
            response = httpx.get(f"{files_server.api_url}/files/{crafted}{suffix}", headers=headers)
            assert response.status_code == 404, (crafted, response.text)
            validate_error(response.json())


# -- B2: abusive multipart bodies ---------------------------------------------------------------


def _post_raw(server: RixinProcess, tenant: Tenant, body: bytes, boundary: str) -> httpx.Response:
    headers = {
        **server.headers(tenant.key),
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    return httpx.post(f"{server.api_url}/files", headers=headers, content=body, timeout=30)


def test_b2_huge_boundary_and_many_parts_are_refused_fast(
    files_server: RixinProcess, tenant_a: Tenant
) -> None:
    boundary = "b" * 10_000
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nx\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    started = time.monotonic()
    response = _post_raw(files_server, tenant_a, body, boundary)
    assert response.status_code == 400 and time.monotonic() - started < 1.0

    part = b'--xx\r\nContent-Disposition: form-data; name="f"\r\n\r\n1\r\n'
    many = part * 100_000 + b"--xx--\r\n"
    assert len(many) < 8 * 1024 * 1024
    started = time.monotonic()
    response = _post_raw(files_server, tenant_a, many, "xx")
    assert response.status_code == 400 and time.monotonic() - started < 1.0
    validate_error(response.json())

    too_big = b"--xx\r\n" + b"0" * (8 * 1024 * 1024 + 1)
    response = _post_raw(files_server, tenant_a, too_big, "xx")
    assert response.status_code == 413

    garbage = _post_raw(files_server, tenant_a, b"--xx\r\nno headers at all", "xx")
    assert garbage.status_code == 400


def test_files_above_the_edge_limit_are_413_with_a_hint(
    files_server: RixinProcess, tenant_a: Tenant
) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        tenant_a.client.files.create(
            file=("big.bin", b"0" * (8 * 1024 * 1024 + 1)), purpose="user_data"
        )
    assert err.value.status_code == 413
