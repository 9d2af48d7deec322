"""A model-less rixin server for the Files and Uploads APIs, and two tenants on it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from openai import OpenAI

from harness import RixinProcess


@dataclass(frozen=True)
class Tenant:
    project_id: str
    key: str
    client: OpenAI


@pytest.fixture(scope="session")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RixinProcess]:
    server = RixinProcess(tmp_path_factory.mktemp("rixin-files") / "data", models=[])
    server.start(timeout_s=60)
    yield server
    server.stop()


def make_tenant(server: RixinProcess, name: str) -> Tenant:
    admin = server.headers()
    project = httpx.post(
        f"{server.api_url}/organization/projects", headers=admin, json={"name": name}
    )
    project.raise_for_status()
    project_id = project.json()["id"]
    key = httpx.post(
        f"{server.api_url}/organization/projects/{project_id}/api_keys",
        headers=admin,
        json={"name": f"{name} key"},
    )
    key.raise_for_status()
    value = key.json()["value"]
    client = OpenAI(base_url=server.api_url, api_key=value, max_retries=0, timeout=30)
    return Tenant(project_id, value, client)


@pytest.fixture(scope="session")
def tenant_a(files_server: RixinProcess) -> Tenant:
    return make_tenant(files_server, "tenant A")


@pytest.fixture(scope="session")
def tenant_b(files_server: RixinProcess) -> Tenant:
    return make_tenant(files_server, "tenant B")
