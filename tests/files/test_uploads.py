"""``/v1/uploads`` end to end with the official client: parts, complete (order, md5), cancel, A1.

Files larger than the edge limit (``max_body_bytes``, 8 MiB) arrive this way, in parts that
each fit under it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import openai
import pytest

from files.conftest import Tenant
from harness import RixinProcess
from openapi_spec import validate, validate_error


def _upload(tenant: Tenant, size: int, name: str = "data.bin") -> str:
    upload = tenant.client.uploads.create(
        filename=name, purpose="assistants", bytes=size, mime_type="application/octet-stream"
    )
    assert upload.status == "pending" and upload.bytes == size
    return upload.id


def test_parts_complete_in_the_given_order(files_server: RixinProcess, tenant_a: Tenant) -> None:
    client, headers = tenant_a.client, files_server.headers(tenant_a.key)
    created = httpx.post(
        f"{files_server.api_url}/uploads",
        headers=headers,
        json={
            "filename": "../report.txt",
            "purpose": "assistants",
            "bytes": 9,
            "mime_type": "text/plain",
        },
    )
    validate("Upload", created.json())
    upload_id = created.json()["id"]
    assert created.json()["filename"] == "report.txt"
    raw_part = httpx.post(
        f"{files_server.api_url}/uploads/{upload_id}/parts",
        headers=headers,
        files={"data": ("blob", b"ccc")},
    )
    validate("UploadPart", raw_part.json())
    third = raw_part.json()["id"]
    first = client.uploads.parts.create(upload_id=upload_id, data=b"aaa")
    second = client.uploads.parts.create(upload_id=upload_id, data=b"bbb")
    assert first.upload_id == upload_id and first.object == "upload.part"

    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(
            upload_id=upload_id, part_ids=[first.id, second.id, third], md5="0" * 32
        )
    assert err.value.body["param"] == "md5"  # type: ignore[index]

    md5 = hashlib.md5(b"aaabbbccc").hexdigest()  # noqa: S324 - the API's own checksum
    response = httpx.post(
        f"{files_server.api_url}/uploads/{upload_id}/complete",
        headers=headers,
        json={"part_ids": [first.id, second.id, third], "md5": md5},
    )
    assert response.status_code == 200, response.text
    validate("Upload", response.json())
    done = response.json()
    assert done["status"] == "completed" and done["file"]["bytes"] == 9
    validate("OpenAIFile", done["file"])
    assert client.files.content(done["file"]["id"]).read() == b"aaabbbccc"
    assert client.files.retrieve(done["file"]["id"]).filename == "report.txt"

    with pytest.raises(openai.BadRequestError):  # completed: no more parts, no second file
        client.uploads.parts.create(upload_id=upload_id, data=b"x")
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload_id=upload_id, part_ids=[first.id])


def test_byte_accounting_errors(files_server: RixinProcess, tenant_a: Tenant) -> None:
    client = tenant_a.client
    upload_id = _upload(tenant_a, 6)
    part = client.uploads.parts.create(upload_id=upload_id, data=b"1234")
    with pytest.raises(openai.APIStatusError) as too_much:
        client.uploads.parts.create(upload_id=upload_id, data=b"567")  # 7 > 6 declared
    assert too_much.value.status_code == 413
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload_id=upload_id, data=b"")
    with pytest.raises(openai.BadRequestError) as short:
        client.uploads.complete(upload_id=upload_id, part_ids=[part.id])
    assert short.value.body["param"] == "part_ids"  # type: ignore[index]
    rest = client.uploads.parts.create(upload_id=upload_id, data=b"56")
    for bad in ([part.id, part.id, rest.id], [part.id, "part_unknown"], []):
        with pytest.raises(openai.BadRequestError):
            client.uploads.complete(upload_id=upload_id, part_ids=bad)
    done = client.uploads.complete(upload_id=upload_id, part_ids=[rest.id, part.id])
    assert done.file is not None and client.files.content(done.file.id).read() == b"561234"
    with pytest.raises(openai.BadRequestError):
        client.uploads.create(filename="x", purpose="assistants", bytes=0, mime_type="text/plain")


def test_cancel_frees_the_parts(files_server: RixinProcess, tenant_a: Tenant) -> None:
    client = tenant_a.client
    upload_id = _upload(tenant_a, 64)
    blob = os.urandom(32)
    part = client.uploads.parts.create(upload_id=upload_id, data=blob)
    stored = files_server.data_dir / "files"
    digest = hashlib.sha256(blob).hexdigest()
    assert (stored / digest[:2] / digest[2:4] / digest).is_file()
    cancelled = client.uploads.cancel(upload_id)
    assert cancelled.status == "cancelled"
    assert not (stored / digest[:2] / digest[2:4] / digest).exists()
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload_id=upload_id, part_ids=[part.id])
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload_id=upload_id, data=b"x")


def test_a1_other_tenants_uploads_are_404(
    files_server: RixinProcess, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    upload_id = _upload(tenant_a, 4)
    part = tenant_a.client.uploads.parts.create(upload_id=upload_id, data=b"abcd")
    b = tenant_b.client
    calls = (
        lambda: b.uploads.parts.create(upload_id=upload_id, data=b"zz"),
        lambda: b.uploads.complete(upload_id=upload_id, part_ids=[part.id]),
        lambda: b.uploads.cancel(upload_id),
    )
    for call in calls:
        with pytest.raises(openai.NotFoundError) as err:
            call()
        validate_error(err.value.response.json())
    # B cannot complete its own upload with A's part either (attach by reference)
    own = _upload(tenant_b, 4)
    with pytest.raises(openai.BadRequestError):
        b.uploads.complete(upload_id=own, part_ids=[part.id])
    done = tenant_a.client.uploads.complete(upload_id=upload_id, part_ids=[part.id])
    assert done.status == "completed"
    for crafted in ("..%2F..%2Frixin.db", "upload_" + "x" * 200):
        response = httpx.post(
            f"{files_server.api_url}/uploads/{crafted}/cancel",
            headers=files_server.headers(tenant_b.key),
        )
        assert response.status_code == 404


def test_a_file_larger_than_the_edge_limit_goes_through_parts(
    files_server: RixinProcess, tenant_a: Tenant, tmp_path: Path
) -> None:
    data = os.urandom(20 * 1024 * 1024)  # 20 MiB > max_body_bytes (8 MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    done = tenant_a.client.uploads.upload_file_chunked(
        file=path,
        mime_type="application/octet-stream",
        purpose="assistants",
        part_size=4 * 1024 * 1024,
    )
    assert done.status == "completed" and done.file is not None
    assert done.file.bytes == len(data)
    assert tenant_a.client.files.content(done.file.id).read() == data
    with pytest.raises(openai.APIStatusError) as err:  # a part above the edge limit: 413
        upload_id = _upload(tenant_a, len(data))
        tenant_a.client.uploads.parts.create(upload_id=upload_id, data=data[: 9 * 1024 * 1024])
    assert err.value.status_code == 413
