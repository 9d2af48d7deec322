"""Agent-engine fixtures: a rixin process in front of a scripted fake upstream.

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


@pytest.fixture(scope="session")
def scripted_upstream() -> Iterator[tuple[ScriptedUpstream, str]]:
    fake = ScriptedUpstream()
    with fake.serve() as base_url:
        yield fake, base_url


def agent_models(base_url: str) -> list[dict[str, Any]]:
    models = fake_models(base_url)
    models[0]["capabilities"] = {"constrained_tools": True, "json_schema": True}
    return models


def agent_env(**extra: str) -> dict[str, str]:
    return {
        "RIXIN_AGENTS__RUN_LEASE_S": "1.5",
        "RIXIN_AGENTS__MCP_ALLOWED_HOSTS": '["127.0.0.1"]',
        **extra,
    }


@pytest.fixture(scope="session")
def agent_server(
    scripted_upstream: tuple[ScriptedUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RixinProcess]:
    _, base_url = scripted_upstream
    server = RixinProcess(
        tmp_path_factory.mktemp("rixin-agents"), models=agent_models(base_url), env=agent_env()
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(scripted_upstream: tuple[ScriptedUpstream, str]) -> Iterator[ScriptedUpstream]:
    fake, _ = scripted_upstream
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def client(agent_server: RixinProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=agent_server.api_url, api_key=agent_server.admin_key)


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


@pytest.fixture(scope="session")
def other_tenant(agent_server: RixinProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=agent_server.api_url, api_key=member_key(agent_server, "b"))
