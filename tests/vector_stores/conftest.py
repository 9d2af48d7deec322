"""A rixin server with only the packaged embedding model, and two tenants on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import RixinProcess
from vector_stores.support import MODELS, Tenant, make_tenant


@pytest.fixture(scope="session")
def vs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RixinProcess]:
    server = RixinProcess(tmp_path_factory.mktemp("rixin-vs") / "data", models=MODELS)
    server.start(timeout_s=120)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tenant_a(vs_server: RixinProcess) -> Tenant:
    return make_tenant(vs_server, "vs tenant A")


@pytest.fixture(scope="session")
def tenant_b(vs_server: RixinProcess) -> Tenant:
    return make_tenant(vs_server, "vs tenant B")
