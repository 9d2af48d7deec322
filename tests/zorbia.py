"""One small knowledge base for the agent tests: a vector store holding the Zorbia file."""

from __future__ import annotations

import time

import openai

ZORBIA = b"The capital of the kingdom of Zorbia is Quentaville, founded in 1723."


def zorbia_store(client: openai.OpenAI, name: str = "kb") -> tuple[str, str]:
    """(vector store id, file id) once the file is ingested."""
    uploaded = client.files.create(file=("zorbia.txt", ZORBIA), purpose="assistants")
    store = client.vector_stores.create(name=name, file_ids=[uploaded.id])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        store = client.vector_stores.retrieve(store.id)
        if store.file_counts.in_progress == 0:
            break
        time.sleep(0.3)
    assert store.file_counts.completed == 1
    return store.id, uploaded.id
