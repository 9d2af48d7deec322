"""The served models: each configured model id becomes a router over its loaded replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rixin.engines import registry
from rixin.engines.base import Capabilities
from rixin.engines.registry import EngineContext
from rixin.engines.router import Replica, Router
from rixin.errors import InvalidRequest, ModelUnavailable, NotFound, RixinError
from rixin.settings import ModelConfig, ModelKind, Settings

log = logging.getLogger("rixin.models")


@dataclass
class ServedModel:
    config: ModelConfig
    created: int
    router: Router[Any] | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    error: str | None = None
    """Why the model could not be loaded (shown to clients as a 503 with this message)."""

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def kind(self) -> ModelKind:
        return self.config.kind

    def require_router(self) -> Router[Any]:
        if self.router is None:
            raise ModelUnavailable(self.error or f"Model '{self.id}' is still loading.")
        return self.router


class ModelManager:
    """Builds every configured model at start-up and looks them up per request."""

    def __init__(self, settings: Settings, ctx: EngineContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.ctx.resolve_chat = self._resolve_chat_backend
        now = int(time.time())
        self._models = {m.id: ServedModel(config=m, created=now) for m in settings.models}
        self.loaded = asyncio.Event()

    async def start(self) -> None:
        """Load every model (chat models first: rerankers may build on them)."""
        order = sorted(self._models.values(), key=lambda m: m.kind != "chat")
        for served in order:
            await self._load(served)
        self.loaded.set()

    async def _load(self, served: ServedModel) -> None:
        replicas: list[Replica[Any]] = []
        try:
            for index, cfg in enumerate(served.config.replicas):
                factory = registry.resolve(cfg.backend)
                backend = await asyncio.to_thread(factory, cfg, self.ctx)
                name = f"{served.id}/{cfg.backend}-{index}"
                replicas.append(
                    Replica(
                        name=name,
                        backend=backend,
                        weight=cfg.weight,
                        max_concurrency=cfg.max_concurrency,
                    )
                )
        except RixinError as exc:
            served.error = exc.message
            log.error("model %s unavailable: %s", served.id, exc.message)
            return
        caps = replicas[0].backend.capabilities
        overrides = served.config.capabilities
        served.capabilities = Capabilities(**{**caps.as_dict(), **overrides})
        max_queue = sum(cfg.max_queue for cfg in served.config.replicas)
        served.router = Router(served.id, replicas, self.settings.router, max_queue=max_queue)
        await served.router.start()
        log.info("model %s ready with %d replica(s)", served.id, len(replicas))

    def _resolve_chat_backend(self, model_id: str) -> Any:
        served = self.get(model_id, "chat")
        return _RoutedChat(served.require_router())

    def get(self, model_id: str, kind: ModelKind) -> ServedModel:
        served = self._models.get(model_id)
        if served is None:
            raise NotFound(
                f"The model '{model_id}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        if served.kind != kind:
            raise InvalidRequest(
                f"The model '{model_id}' is a {served.kind} model and cannot serve this request.",
                param="model",
                code="model_not_supported",
            )
        return served

    def find(self, model_id: str) -> ServedModel | None:
        return self._models.get(model_id)

    def all(self) -> list[ServedModel]:
        return list(self._models.values())

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {m.id: m.router.snapshot() for m in self._models.values() if m.router is not None}

    async def aclose(self) -> None:
        for served in self._models.values():
            if served.router is not None:
                await served.router.aclose()


class _RoutedChat:
    """A chat model seen through its router (admission, failover) for internal callers."""

    def __init__(self, router: Router[Any]) -> None:
        self.router = router

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        routed = await self.router.call(lambda backend: backend.chat(body))
        result: dict[str, Any] = routed.value
        return result
