"""LangChain's OpenAI integrations pointed at rixin, unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from conftest import CHAT_MODEL, EMBEDDING_MODEL
from harness import RixinProcess

pytestmark = pytest.mark.model


def chat(server: RixinProcess, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        model=CHAT_MODEL,
        base_url=server.api_url,
        api_key=server.admin_key,  # type: ignore[arg-type]
        max_retries=0,
        temperature=0,
        **kwargs,  # type: ignore[arg-type]
    )


def test_chat_openai_invoke_and_stream(real_server: RixinProcess) -> None:
    llm = chat(real_server, max_tokens=24)
    reply = llm.invoke("用五个字形容春天。")
    assert isinstance(reply.content, str) and reply.content.strip()
    pieces = [c.content for c in llm.stream("Say hello in French.")]
    assert "".join(str(p) for p in pieces).strip()


def test_chat_openai_tool_binding(real_server: RixinProcess) -> None:
    class GetWeather(BaseModel):
        """Current weather for a city."""

        city: str

    llm = chat(real_server, max_tokens=64).bind_tools([GetWeather], tool_choice="GetWeather")
    reply = llm.invoke("What's the weather in Berlin?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "GetWeather"
    assert isinstance(reply.tool_calls[0]["args"]["city"], str)


def test_openai_embeddings(real_server: RixinProcess) -> None:
    embeddings = OpenAIEmbeddings(
        model=EMBEDDING_MODEL,
        base_url=real_server.api_url,
        api_key=real_server.admin_key,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # tiktoken would fetch its vocabulary from the network
        max_retries=0,
    )
    docs = embeddings.embed_documents(["The cat sits on the mat.", "Stock markets fell today."])
    query = embeddings.embed_query("Where is the cat?")
    assert len(docs) == 2 and len(query) == 384
    scores = np.array(docs) @ np.array(query)
    assert scores[0] > scores[1]
