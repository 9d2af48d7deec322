"""Session fixtures: real `rixin serve` processes, on packaged models or on a fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import RixinProcess, test_models_dir
from rixin.engines import packaged
from rixin.testing.fake_upstream import FakeUpstream

CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"
EMBEDDING_MODEL = "multilingual-e5-small"
RERANK_MODEL = "rixin-llm-rerank"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The packaged chat model, assembled and verified once for the whole run."""
    directory = test_models_dir()
    packaged.assemble("qwen2.5-coder-0.5b-instruct-q4", directory)
    return directory


@pytest.fixture(scope="session")
def real_server(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RixinProcess]:
    """rixin on its embedded defaults: SQLite, the packaged chat, embedding and rerank models."""
    server = RixinProcess(tmp_path_factory.mktemp("rixin-real"), env={"RIXIN_N_PARALLEL": "4"})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream(models=("fake-model",))
    with fake.serve() as base_url:
        yield fake, base_url


def fake_models(base_url: str, **replica: object) -> list[dict[str, object]]:
    """A chat, an embedding and a rerank model, all served by one fake upstream."""
    common = {"base_url": base_url, "upstream_model": "fake-model", "timeout_s": 5.0, **replica}
    return [
        {"id": "fake-chat", "kind": "chat", "replicas": [{"backend": "openai_compat", **common}]},
        {
            "id": "fake-embed",
            "kind": "embedding",
            "capabilities": {"embedding_dims": 64},
            "replicas": [{"backend": "openai_compat_embedding", **common}],
        },
        {
            "id": "fake-rerank",
            "kind": "rerank",
            "replicas": [{"backend": "openai_compat_rerank", **common}],
        },
    ]


@pytest.fixture(scope="session")
def fake_server(
    fake_upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RixinProcess]:
    """rixin in front of the fake upstream: for the platform's own logic (framing, errors)."""
    _, base_url = fake_upstream
    server = RixinProcess(tmp_path_factory.mktemp("rixin-fake"), models=fake_models(base_url))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_upstream: tuple[FakeUpstream, str]) -> Iterator[FakeUpstream]:
    """The shared fake upstream, reset to good behaviour before and after each test."""
    upstream, _ = fake_upstream
    upstream.reset()
    yield upstream
    upstream.reset()
