"""Local GGUF chat models on llama.cpp's server, in process, through ``xllamacpp``.

xllamacpp takes and returns OpenAI-shaped dicts and applies the GGUF's Jinja chat template, so this
backend is transport and error mapping: every blocking call runs on a dedicated thread pool, a
stream's native callback is bridged to an asyncio queue, and closing the stream makes the next
callback return True, which stops generation. Two things llama.cpp leaves out are added here:
fill-in-the-middle for ``suffix`` (the model's FIM tokens) and ``echo``. Results are trimmed to
OpenAI's keys, and text-completion logprobs are converted to OpenAI's legacy shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import secrets
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rixin.engines import gguf, packaged
from rixin.engines.base import (
    Capabilities,
    ChatBody,
    ChatChunk,
    ChatResult,
    CompletionBody,
    CompletionResult,
)
from rixin.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    ModelUnavailable,
    RixinError,
    UnsupportedParameter,
)

if TYPE_CHECKING:
    from rixin.engines.registry import EngineContext
    from rixin.settings import ReplicaConfig

FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
DEFAULT_FIM_TEMPLATE = "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
"""Qwen2.5-Coder's (and StarCoder-style) fill-in-the-middle prompt."""

_TOP_KEYS = ("id", "object", "created", "model", "system_fingerprint", "choices", "usage")
_CHOICE_KEYS = ("index", "message", "delta", "text", "logprobs", "finish_reason")
_MESSAGE_KEYS = ("role", "content", "refusal", "tool_calls", "function_call")
_LOGPROB_KEYS = ("token", "logprob", "bytes", "top_logprobs")
_FIELD = re.compile(r"Field '([^']+)'")

Handler = Callable[..., Any]


@dataclass(frozen=True)
class LlamaCppOptions:
    """``replica.options`` understood by this backend (EngineContext gives the defaults)."""

    n_ctx: int
    n_parallel: int
    threads: int
    fim_template: str | None
    sha256: str | None = None
    chat_template: str | None = None

    @classmethod
    def of(cls, options: dict[str, Any], ctx: EngineContext) -> LlamaCppOptions:
        known = {"n_ctx", "n_parallel", "threads", "fim_template", "sha256", "chat_template"}
        unknown = set(options) - known
        if unknown:
            raise ModelUnavailable(
                f"unknown llamacpp options {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(
            n_ctx=int(options.get("n_ctx", ctx.n_ctx)),
            n_parallel=int(options.get("n_parallel", ctx.n_parallel)),
            threads=int(options.get("threads", ctx.inference_threads)),
            fim_template=options.get("fim_template", DEFAULT_FIM_TEMPLATE),
            sha256=options.get("sha256"),
            chat_template=options.get("chat_template"),
        )

    def __post_init__(self) -> None:
        if self.fim_template is not None:
            try:
                self.fim_template.format(prefix="", suffix="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ModelUnavailable(
                    f"fim_template {self.fim_template!r} must use only {{prefix}} and {{suffix}}"
                ) from exc


class LlamaCppChatModel:
    """A GGUF model served by llama.cpp's in-process server (implements ``ChatModel``)."""

    def __init__(
        self,
        name: str,
        server: Any,
        *,
        n_ctx: int,
        n_parallel: int,
        fim_template: str | None,
    ) -> None:
        self.name = name
        self._server: Any = server
        self.fim_template = fim_template
        self.capabilities = Capabilities(
            streaming=True,
            tools=True,
            constrained_tools=True,
            json_schema=True,
            logprobs=True,
            fim=fim_template is not None,
            context_window=n_ctx,
        )
        # Requests past n_parallel queue inside llama.cpp; each waiting call holds a thread.
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, 4 * n_parallel), thread_name_prefix=f"llamacpp-{name}"
        )

    # -- ChatModel -------------------------------------------------------------------------

    async def chat(self, body: ChatBody) -> ChatResult:
        server = self._require()
        request = {**body, "stream": False}
        request.pop("stream_options", None)
        result = await self._call(server.handle_chat_completions, request)
        return self._clean(_check(result, "messages"))

    async def stream_chat(self, body: ChatBody) -> AsyncGenerator[ChatChunk, None]:
        server = self._require()
        chunks = self._stream(server.handle_chat_completions, {**body, "stream": True})
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield self._clean(_check(chunk, "messages"))

    async def complete(self, body: CompletionBody) -> CompletionResult:
        server = self._require()
        request, prompts = self._completion_request({**body, "stream": False})
        request.pop("stream_options", None)
        result = _check(await self._call(server.handle_completions, request), "prompt")
        return self._finish_completion(result, prompts, body)

    async def stream_complete(self, body: CompletionBody) -> AsyncGenerator[dict[str, Any], None]:
        server = self._require()
        request, prompts = self._completion_request({**body, "stream": True})
        echoed: set[int] = set()
        chunks = self._stream(server.handle_completions, request)
        async with contextlib.aclosing(chunks):
            async for raw in chunks:
                chunk = _check(raw, "prompt")
                if body.get("echo") and prompts is not None:
                    for choice in chunk.get("choices") or ():
                        index = int(choice.get("index", 0))
                        if index not in echoed:
                            echoed.add(index)
                            prefix = _prompt_for(prompts, index, body)
                            choice["text"] = prefix + (choice.get("text") or "")
                yield self._clean_completion(chunk)

    async def health(self) -> bool:
        return self._server is not None

    async def aclose(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        del server
        # Free the native model now, not whenever the cycle collector runs.
        await asyncio.get_running_loop().run_in_executor(self._executor, gc.collect)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- plumbing --------------------------------------------------------------------------

    def _require(self) -> Any:
        if self._server is None:
            raise ModelUnavailable(f"model {self.name!r} is closed")
        return self._server

    async def _call(self, handler: Handler, request: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, handler, request)
        except RuntimeError as exc:
            if self._server is None:
                raise ModelUnavailable(f"model {self.name!r} is closed") from exc
            raise BackendError(f"llama.cpp failed: {exc}") from exc
        except RixinError:
            raise
        except (ValueError, TypeError) as exc:
            raise _invalid(str(exc)) from exc
        except Exception as exc:
            raise BackendError(f"llama.cpp failed: {exc}") from exc
        if not isinstance(result, dict):
            raise BackendError(f"llama.cpp returned {type(result).__name__}, not a JSON object")
        return result

    async def _stream(
        self, handler: Handler, request: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Bridge llama.cpp's per-chunk callback (a native thread) to an async iterator."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, item: Any) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the event loop is gone: nobody is listening
                return False
            return True

        def on_chunk(chunk: Any) -> bool:
            # Returning True tells llama.cpp to cancel this generation.
            return stop.is_set() or not put("chunk", chunk)

        def run() -> None:
            try:
                handler(request, on_chunk)
            except Exception as exc:
                put("error", exc)
            else:
                put("done", None)

        try:
            loop.run_in_executor(self._executor, run)
        except RuntimeError as exc:  # executor shut down by aclose()
            raise ModelUnavailable(f"model {self.name!r} is closed") from exc
        try:
            while True:
                kind, item = await queue.get()
                if kind == "done":
                    return
                if kind == "error":
                    if isinstance(item, ValueError | TypeError):
                        raise _invalid(str(item)) from item
                    raise BackendError(f"llama.cpp failed: {item}") from item
                if not isinstance(item, dict):
                    raise BackendError(f"llama.cpp streamed {type(item).__name__}, not an object")
                yield item
        finally:
            stop.set()

    # -- completions: FIM and echo -----------------------------------------------------------

    def _completion_request(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[str] | None]:
        """The request for llama.cpp and the original string prompts (None for token prompts)."""
        request = dict(body)
        prompt = request.get("prompt", "")
        prompts: list[str] | None
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            prompts = list(prompt)
        else:
            prompts = None
        if body.get("echo") and prompts is None:
            raise UnsupportedParameter("echo is supported for text prompts only", param="echo")
        request.pop("echo", None)
        suffix = request.pop("suffix", None)
        if suffix:
            if self.fim_template is None:
                raise UnsupportedParameter(
                    f"model {self.name!r} has no fill-in-the-middle tokens; suffix is unsupported",
                    param="suffix",
                )
            if prompts is None:
                raise UnsupportedParameter(
                    "suffix is supported for text prompts only", param="suffix"
                )
            fim = [self.fim_template.format(prefix=p, suffix=suffix) for p in prompts]
            request["prompt"] = fim[0] if isinstance(prompt, str) else fim
        return request, prompts

    def _finish_completion(
        self, result: dict[str, Any], prompts: list[str] | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        if body.get("echo") and prompts is not None:
            for choice in result.get("choices") or ():
                prefix = _prompt_for(prompts, int(choice.get("index", 0)), body)
                choice["text"] = prefix + (choice.get("text") or "")
        return self._clean_completion(result)

    def _clean_completion(self, result: dict[str, Any]) -> dict[str, Any]:
        for choice in result.get("choices") or ():
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                content = logprobs["content"]
                # Generated tokens end the text; with echo the prompt comes before them.
                generated = sum(len(e.get("token", "")) for e in content)
                start = max(0, len(choice.get("text") or "") - generated)
                choice["logprobs"] = _legacy_logprobs(content, start)
        cleaned = self._clean(result)
        if isinstance(cleaned.get("id"), str):
            cleaned["id"] = "cmpl-" + cleaned["id"].removeprefix("chatcmpl-")
        return cleaned

    # -- result hygiene ------------------------------------------------------------------------

    def _clean(self, result: dict[str, Any]) -> dict[str, Any]:
        """Only OpenAI's keys; ``model`` is the served name, not the file path."""
        out = {k: result[k] for k in _TOP_KEYS if k in result}
        out["model"] = self.name
        out["choices"] = [_clean_choice(c) for c in result.get("choices") or ()]
        return out


def _clean_choice(choice: dict[str, Any]) -> dict[str, Any]:
    out = {k: choice[k] for k in _CHOICE_KEYS if k in choice}
    for key in ("message", "delta"):
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k in _MESSAGE_KEYS}
    logprobs = out.get("logprobs")
    if isinstance(logprobs, dict):
        out["logprobs"] = {
            part: [_clean_logprob(e) for e in entries] if isinstance(entries, list) else entries
            for part, entries in logprobs.items()
        }
    return out


def _clean_logprob(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry
    out = {k: entry[k] for k in _LOGPROB_KEYS if k in entry}
    if isinstance(out.get("top_logprobs"), list):
        out["top_logprobs"] = [
            {k: t[k] for k in ("token", "logprob", "bytes") if k in t}
            for t in out["top_logprobs"]
            if isinstance(t, dict)
        ]
    return out


def _legacy_logprobs(content: list[dict[str, Any]], start: int) -> dict[str, Any]:
    """Chat-style logprobs to the ``/completions`` shape (tokens, token_logprobs, …)."""
    tokens: list[str] = []
    offsets: list[int] = []
    offset = start
    for entry in content:
        tokens.append(entry.get("token", ""))
        offsets.append(offset)
        offset += len(tokens[-1])
    return {
        "tokens": tokens,
        "token_logprobs": [e.get("logprob") for e in content],
        "top_logprobs": [
            {t.get("token", ""): t.get("logprob") for t in e.get("top_logprobs") or ()}
            for e in content
        ],
        "text_offset": offsets,
    }


def _prompt_for(prompts: list[str], index: int, body: dict[str, Any]) -> str:
    n = max(1, int(body.get("n") or 1))
    return prompts[min(index // n, len(prompts) - 1)]


def _check(result: dict[str, Any], prompt_param: str) -> dict[str, Any]:
    """Raise the rixin error for llama.cpp's ``{"error": …}`` answers."""
    error = result.get("error")
    if error is None:
        return result
    if not isinstance(error, dict):
        raise BackendError(f"llama.cpp error: {error}")
    message = str(error.get("message") or "llama.cpp error")
    kind = error.get("type")
    if kind == "exceed_context_size_error":
        raise ContextLengthExceeded(
            f"This model's maximum context length is {error.get('n_ctx')} tokens, but the request "
            f"has {error.get('n_prompt_tokens')} prompt tokens. Shorten the {prompt_param}.",
            param=prompt_param,
        )
    if kind == "not_supported_error":
        raise UnsupportedParameter(message, param=_param_of(message))
    if kind == "invalid_request_error" or error.get("code") == 400:
        raise _invalid(message)
    raise BackendError(f"llama.cpp error: {message}")


def _param_of(message: str) -> str | None:
    match = _FIELD.search(message)
    return match.group(1) if match else None


def _invalid(message: str) -> InvalidRequest:
    param = _param_of(message)
    if param is None and "schema" in message.lower():
        param = "response_format"
    if param is None and "messages" in message:
        param = "messages"
    return InvalidRequest(message, param=param)


# -- factory ---------------------------------------------------------------------------------


def resolve_model_path(replica: ReplicaConfig, ctx: EngineContext) -> Path:
    """The GGUF file a replica names: an assembled package or a path (sha256 pin checked)."""
    if replica.package:
        return packaged.assemble(replica.package, ctx.models_dir, progress=ctx.progress)
    if not replica.path:
        raise ModelUnavailable("a llamacpp replica needs either 'package' or 'path'")
    path = Path(replica.path).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"model file {str(path)!r} does not exist")
    pin = replica.options.get("sha256")
    if pin:
        packaged.verify_file(path, str(pin), progress=ctx.progress)
    return path


def load_server(path: Path, options: LlamaCppOptions) -> Any:
    """Start llama.cpp's server on ``path`` (slow: seconds); import xllamacpp lazily."""
    # Spin-waiting OpenMP threads starve everything else on a small box; must precede the import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import xllamacpp
    except ImportError as exc:
        raise ModelUnavailable(
            f"xllamacpp is not installed ({exc}): pip install xllamacpp"
        ) from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = options.n_ctx
    params.n_parallel = options.n_parallel
    # One shared KV cache: any single request may use the whole context window.
    params.kv_unified = True
    params.ctx_shift = False
    params.cpuparams.n_threads = options.threads
    params.cpuparams_batch.n_threads = options.threads
    params.use_jinja = True
    params.warmup = False
    params.verbosity = 0
    if options.chat_template:
        params.chat_template = options.chat_template
    # The server also listens on a loopback port; nothing of ours uses it, so lock it.
    params.api_keys = [secrets.token_urlsafe(32)]
    params.ui = False
    params.endpoint_slots = False
    params.endpoint_props = False
    params.endpoint_metrics = False
    try:
        return xllamacpp.Server(params)
    except Exception as exc:
        raise ModelUnavailable(f"llama.cpp could not load {str(path)!r}: {exc}") from exc


def create(replica: ReplicaConfig, ctx: EngineContext) -> LlamaCppChatModel:
    """Registry factory ``llamacpp``; ``replica.options``: n_ctx, n_parallel, threads,
    fim_template (None disables FIM), sha256 (pin for ``path``), chat_template."""
    options = LlamaCppOptions.of(dict(replica.options), ctx)
    path = resolve_model_path(replica, ctx)
    header = gguf.read_header(path, probe=FIM_TOKENS)
    fim_template = options.fim_template
    if fim_template == DEFAULT_FIM_TEMPLATE and not set(FIM_TOKENS) <= header.found_strings:
        fim_template = None
    server = load_server(path, options)
    name = replica.upstream_model or replica.package or path.stem
    return LlamaCppChatModel(
        name, server, n_ctx=options.n_ctx, n_parallel=options.n_parallel, fim_template=fim_template
    )
