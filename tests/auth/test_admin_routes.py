"""The administration routes end to end over ASGI: admin-only (A3, A6), OpenAI shapes (validated
against ``openapi.yaml``), one-time key display, other projects' keys are 404 (A1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rixin.api.admin import router
from rixin.auth.service import AuthService
from rixin.errors import RixinError
from rixin.settings import Settings
from rixin.store.db import Database
from rixin.store.idempotency import IdempotencyStore

SPEC = Path(__file__).resolve().parents[3] / "shared" / "openai-openapi" / "openapi.yaml"
BASE = "/v1/organization/projects"


@pytest.fixture(scope="module")
def components() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip("openai-openapi spec not present")
    with SPEC.open() as handle:
        spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {"components": spec["components"]}


def check(components: dict[str, Any], name: str, body: Any) -> None:
    schema = {**components, "$ref": f"#/components/schemas/{name}"}
    jsonschema.Draft202012Validator(schema).validate(body)


@pytest.fixture
async def setup(db: Database, settings: Settings, auth: AuthService) -> AsyncIterator[Any]:
    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(RixinError)
    async def _render(_request: Request, exc: RixinError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    # Only what these routes reach: ``Services`` grows with the platform.
    app.state.services = SimpleNamespace(
        settings=settings,
        db=db,
        auth=auth,
        idempotency=IdempotencyStore(db, settings.idempotency_ttl_s),
    )
    admin_key = (await auth.bootstrap()).key
    assert admin_key is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        client.headers["Authorization"] = f"Bearer {admin_key}"
        yield client


async def test_admin_routes_need_an_admin_key(setup: httpx.AsyncClient) -> None:
    client = setup
    project = (await client.post(BASE, json={"name": "p"})).json()
    member = (await client.post(f"{BASE}/{project['id']}/api_keys", json={"name": "m"})).json()
    routes = [
        ("GET", BASE),
        ("POST", BASE),
        ("GET", f"{BASE}/{project['id']}"),
        ("POST", f"{BASE}/{project['id']}"),
        ("POST", f"{BASE}/{project['id']}/archive"),
        ("GET", f"{BASE}/{project['id']}/api_keys"),
        ("POST", f"{BASE}/{project['id']}/api_keys"),
        ("GET", f"{BASE}/{project['id']}/api_keys/{member['id']}"),
        ("DELETE", f"{BASE}/{project['id']}/api_keys/{member['id']}"),
    ]
    for method, url in routes:
        anonymous = await client.request(method, url, headers={"Authorization": ""})
        assert anonymous.status_code == 401, (method, url)
        assert anonymous.json()["error"]["code"] == "invalid_api_key"
        wrong = await client.request(method, url, headers={"Authorization": "Bearer sk-rixin-x"})
        assert wrong.status_code == 401
        as_member = {"Authorization": f"Bearer {member['value']}"}
        denied = await client.request(method, url, headers=as_member, json={"name": "x"})
        assert denied.status_code == 403, (method, url)
    still = await client.get(f"{BASE}/{project['id']}")
    assert still.json()["status"] == "active"


async def test_project_lifecycle_matches_openai_shapes(
    setup: httpx.AsyncClient, components: dict[str, Any]
) -> None:
    client = setup
    created = await client.post(BASE, json={"name": "Research"})
    assert created.status_code == 200
    project = created.json()
    check(components, "Project", project)
    assert project["object"] == "organization.project" and project["id"].startswith("proj_")

    modified = (await client.post(f"{BASE}/{project['id']}", json={"name": "R&D"})).json()
    check(components, "Project", modified)
    assert modified["name"] == "R&D"
    assert (await client.get(f"{BASE}/{project['id']}")).json() == modified

    page = (await client.get(BASE, params={"limit": 1})).json()
    check(components, "ProjectListResponse", page)
    assert len(page["data"]) == 1 and page["has_more"] is True
    rest = (await client.get(BASE, params={"after": page["last_id"]})).json()
    assert {p["id"] for p in page["data"] + rest["data"]} >= {project["id"]}

    archived = (await client.post(f"{BASE}/{project['id']}/archive")).json()
    check(components, "Project", archived)
    assert archived["status"] == "archived" and archived["archived_at"]
    listed = (await client.get(BASE)).json()["data"]
    assert project["id"] not in {p["id"] for p in listed}

    assert (await client.get(f"{BASE}/proj_nope")).status_code == 404
    assert (await client.get(BASE, params={"limit": 0})).status_code in (400, 422)
    assert (await client.post(BASE, json={})).status_code in (400, 422)


async def test_key_lifecycle_and_one_time_secret(
    setup: httpx.AsyncClient, components: dict[str, Any]
) -> None:
    client = setup
    project = (await client.post(BASE, json={"name": "p"})).json()
    keys_url = f"{BASE}/{project['id']}/api_keys"
    made = await client.post(keys_url, json={"name": "ci", "role": "member"})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    key = made.json()
    check(components, "ProjectApiKey", key)
    assert key["value"].startswith("sk-rixin-") and key["role"] == "member"
    assert key["redacted_value"] != key["value"] and key["value"] not in key["redacted_value"]

    used = await client.get(BASE, headers={"Authorization": f"Bearer {key['value']}"})
    assert used.status_code == 403  # authenticated, but not an admin

    fetched = (await client.get(f"{keys_url}/{key['id']}")).json()
    check(components, "ProjectApiKey", fetched)
    assert "value" not in fetched and fetched["last_used_at"] is not None
    listing = (await client.get(keys_url)).json()
    check(components, "ProjectApiKeyListResponse", listing)
    assert [k["id"] for k in listing["data"]] == [key["id"]]
    assert key["value"] not in str(listing)

    deleted = await client.delete(f"{keys_url}/{key['id']}")
    assert deleted.status_code == 200
    check(components, "ProjectApiKeyDeleteResponse", deleted.json())
    assert deleted.json() == {
        "object": "organization.project.api_key.deleted",
        "id": key["id"],
        "deleted": True,
    }
    assert (await client.get(f"{keys_url}/{key['id']}")).status_code == 404
    assert (await client.delete(f"{keys_url}/{key['id']}")).status_code == 404
    gone = await client.get(BASE, headers={"Authorization": f"Bearer {key['value']}"})
    assert gone.status_code == 401


async def test_a1_other_projects_keys_are_404(setup: httpx.AsyncClient) -> None:
    client = setup
    a = (await client.post(BASE, json={"name": "a"})).json()
    b = (await client.post(BASE, json={"name": "b"})).json()
    key_a = (await client.post(f"{BASE}/{a['id']}/api_keys", json={"name": "ka"})).json()
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"{BASE}/{b['id']}/api_keys/{key_a['id']}")
        assert response.status_code == 404
        assert key_a["name"] not in response.text
    listing = (await client.get(f"{BASE}/{b['id']}/api_keys")).json()
    assert listing["data"] == []
    assert (await client.get(f"{BASE}/{a['id']}/api_keys/{key_a['id']}")).status_code == 200
