"""``/v1/conversations`` and responses that append to them; tenancy (RELIABILITY A1)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from openapi_spec import validate


def test_conversation_crud_and_items(client: openai.OpenAI, agent_server: RixinProcess) -> None:
    conv = client.conversations.create(
        metadata={"topic": "demo"}, items=[{"role": "user", "content": "hello"}]
    )
    headers = agent_server.headers()
    body = httpx.get(f"{agent_server.api_url}/conversations/{conv.id}", headers=headers).json()
    validate("ConversationResource", body)
    added = client.conversations.items.create(
        conv.id, items=[{"role": "assistant", "content": "hi!"}]
    )
    assert len(added.data) == 1
    listed = httpx.get(
        f"{agent_server.api_url}/conversations/{conv.id}/items?order=asc", headers=headers
    ).json()
    validate("ConversationItemList", listed)
    assert [i["role"] for i in listed["data"]] == ["user", "assistant"]
    item = client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert item.id == added.data[0].id
    client.conversations.items.delete(item.id, conversation_id=conv.id)
    updated = client.conversations.update(conv.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def test_response_appends_to_conversation(client: openai.OpenAI, upstream: Any) -> None:
    upstream.script = ["First answer.", "Second answer."]
    conv = client.conversations.create()
    client.responses.create(model="fake-chat", input="first", conversation=conv.id)
    second = client.responses.create(model="fake-chat", input="second", conversation=conv.id)
    assert second.conversation is not None and second.conversation.id == conv.id
    texts = [m["content"] for m in upstream.bodies[-1]["messages"]]
    assert texts == ["first", "First answer.", "second"]
    items = list(client.conversations.items.list(conv.id, order="asc"))
    assert len(items) == 4
    assert len({i.id for i in items}) == 4


def test_a1_other_tenant_gets_404(
    client: openai.OpenAI, other_tenant: openai.OpenAI, upstream: Any
) -> None:
    """A1: every cell with another tenant's ids is a 404, including references in bodies."""
    response = client.responses.create(model="fake-chat", input="secret")
    conv = client.conversations.create(items=[{"role": "user", "content": "secret"}])
    item_id = next(iter(client.conversations.items.list(conv.id))).id
    calls = [
        lambda: other_tenant.responses.retrieve(response.id),
        lambda: other_tenant.responses.delete(response.id),
        lambda: other_tenant.responses.cancel(response.id),
        lambda: other_tenant.responses.input_items.list(response.id),
        lambda: other_tenant.responses.create(
            model="fake-chat", input="x", previous_response_id=response.id
        ),
        lambda: other_tenant.responses.create(model="fake-chat", input="x", conversation=conv.id),
        lambda: other_tenant.conversations.retrieve(conv.id),
        lambda: other_tenant.conversations.update(conv.id, metadata={"a": "b"}),
        lambda: other_tenant.conversations.delete(conv.id),
        lambda: other_tenant.conversations.items.list(conv.id),
        lambda: other_tenant.conversations.items.create(
            conv.id, items=[{"role": "user", "content": "x"}]
        ),
        lambda: other_tenant.conversations.items.retrieve(item_id, conversation_id=conv.id),
        lambda: other_tenant.conversations.items.delete(item_id, conversation_id=conv.id),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(openai.NotFoundError):
            call()
        assert i >= 0
    assert client.responses.retrieve(response.id).id == response.id
    assert client.conversations.retrieve(conv.id).id == conv.id
