"""Assistants v2 fixtures: a rixin process in front of a scripted fake upstream.

``ScriptedUpstream`` answers chat requests with the next reply of ``script`` (then falls back to
``behaviour.reply``), so a test can make the model call a tool, then answer from its result.
The fake chat model parses calls out of text (``constrained_tools``), like the packaged model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from conftest import fake_models
from harness import RixinProcess
from scripted_upstream import ScriptedUpstream


def assistant_models(base_url: str) -> list[dict[str, Any]]:
    models = fake_models(base_url)
    models[0]["capabilities"] = {"constrained_tools": True, "json_schema": True}
    return models


ENV = {"RIXIN_AGENTS__RUN_LEASE_S": "1.5"}


@pytest.fixture(scope="session")
def scripted() -> Iterator[tuple[ScriptedUpstream, str]]:
    fake = ScriptedUpstream()
    with fake.serve() as base_url:
        yield fake, base_url


@pytest.fixture(scope="session")
def assistants_server(
    scripted: tuple[ScriptedUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RixinProcess]:
    _, base_url = scripted
    server = RixinProcess(
        tmp_path_factory.mktemp("rixin-assistants"), models=assistant_models(base_url), env=ENV
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(scripted: tuple[ScriptedUpstream, str]) -> Iterator[ScriptedUpstream]:
    fake, _ = scripted
    fake.reset()
    yield fake
    fake.reset()


def beta_client(server: RixinProcess, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key=key or server.admin_key, max_retries=0)


@pytest.fixture
def client(assistants_server: RixinProcess) -> openai.OpenAI:
    return beta_client(assistants_server)


def member_key(server: RixinProcess, name: str) -> str:
    """A member key of a fresh project (another tenant)."""
    headers = server.headers()
    project = httpx.post(
        f"{server.api_url}/organization/projects", json={"name": name}, headers=headers
    ).json()
    key = httpx.post(
        f"{server.api_url}/organization/projects/{project['id']}/api_keys",
        json={"name": name, "role": "member"},
        headers=headers,
    ).json()
    return str(key["value"])


def raw(server: RixinProcess, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
    response = httpx.request(
        method,
        f"{server.api_url}{path}",
        headers={**server.headers(key), "OpenAI-Beta": "assistants=v2"},
        timeout=30,
        **kw,
    )
    return response
