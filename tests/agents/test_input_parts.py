"""``input_file`` and ``input_image`` parts of ``/v1/responses`` (and images in chat), end to end.

A file's text reaches the model, headed by its filename; the stored input item is what the client
sent (validated against the spec); an image reaches only a model declared with ``vision``.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest

from harness import RixinProcess
from knowledge.conftest import docx_bytes, pdf_bytes
from openapi_spec import validate, validate_error
from rixin.agents.inputs import InputLimits, InputResolver
from rixin.agents.items import normalize_input
from rixin.errors import InvalidRequest, RequestTooLarge
from scripted_upstream import ScriptedUpstream

from .conftest import agent_env, agent_models, member_key

DOCX_TEXT = "本项目提供私有部署的大模型平台。"


@pytest.fixture(scope="module")
def media_server(
    scripted_upstream: tuple[ScriptedUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RixinProcess]:
    """The agent models plus ``fake-vision``: the same upstream, declared with ``vision``."""
    _, base_url = scripted_upstream
    models = agent_models(base_url)
    chat: dict[str, Any] = dict(models[0])
    vision = {**chat, "id": "fake-vision", "capabilities": {**chat["capabilities"], "vision": True}}
    server = RixinProcess(
        tmp_path_factory.mktemp("rixin-media"), models=[*models, vision], env=agent_env()
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(media_server: RixinProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=media_server.api_url, api_key=media_server.admin_key)


def post(server: RixinProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.api_url}{path}", json=body, headers=server.headers(), timeout=60)


def ask(*parts: dict[str, Any], model: str = "fake-chat") -> dict[str, Any]:
    content = [{"type": "input_text", "text": "What does it say?"}, *parts]
    return {"model": model, "input": [{"role": "user", "content": content}]}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    validate_error(body)
    return body["error"]  # type: ignore[no-any-return]


def png_bytes() -> bytes:
    """A 1×1 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user_content(upstream: ScriptedUpstream) -> Any:
    return upstream.bodies[-1]["messages"][-1]["content"]


def test_docx_by_file_id(
    api: openai.OpenAI, media_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    uploaded = api.files.create(file=("notes.docx", docx_bytes()), purpose="user_data")
    upstream.script = ["A private LLM platform."]
    response = post(media_server, "/responses", ask({"type": "input_file", "file_id": uploaded.id}))
    assert response.status_code == 200, response.text
    validate("Response", response.json())
    content = user_content(upstream)
    assert isinstance(content, str)
    assert content.startswith("What does it say?\n\n[file: notes.docx]\n")
    assert DOCX_TEXT in content
    items = httpx.get(
        f"{media_server.api_url}/responses/{response.json()['id']}/input_items",
        headers=media_server.headers(),
    ).json()
    validate("ResponseItemList", items)
    assert items["data"][0]["content"][1] == {"type": "input_file", "file_id": uploaded.id}

    # A follow-up response sees the file again, without parsing it again.
    upstream.script = ["Yes."]
    follow = api.responses.create(
        model="fake-chat", input="Anything else?", previous_response_id=response.json()["id"]
    )
    assert follow.status == "completed"
    assert DOCX_TEXT in json.dumps(upstream.bodies[-1]["messages"], ensure_ascii=False)


def test_pdf_by_file_data(
    api: openai.OpenAI, media_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    pdf = pdf_bytes([["Quarterly revenue grew by twenty percent."]])
    part = {
        "type": "input_file",
        "filename": "report.pdf",
        "file_data": data_url("application/pdf", pdf),
    }
    upstream.script = ["Revenue grew."]
    response = api.responses.create(**ask(part))  # type: ignore[call-overload]
    assert response.output_text == "Revenue grew."
    content = user_content(upstream)
    assert "[file: report.pdf]\nQuarterly revenue grew by twenty percent." in content
    items = api.responses.input_items.list(response.id)
    body = items.model_dump(mode="json", exclude_unset=True)
    validate("ResponseItemList", body)
    assert body["data"][0]["content"][1] == part


def test_long_file_is_cut_with_a_note(
    api: openai.OpenAI, media_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    text = ("word " * 30_000).encode()
    part = {"type": "input_file", "filename": "long.txt", "file_data": data_url("text/plain", text)}
    upstream.script = ["ok"]
    assert post(media_server, "/responses", ask(part)).status_code == 200
    content = user_content(upstream)
    assert content.endswith("[file truncated: showing the first 100,000 of 149,999 characters]")


def test_another_tenants_file_is_404(api: openai.OpenAI, media_server: RixinProcess) -> None:
    other = openai.OpenAI(
        base_url=media_server.api_url, api_key=member_key(media_server, "other-tenant")
    )
    theirs = other.files.create(file=("secret.docx", docx_bytes()), purpose="user_data")
    for part in (
        {"type": "input_file", "file_id": theirs.id},
        {"type": "input_image", "file_id": theirs.id, "detail": "auto"},
    ):
        error = error_of(post(media_server, "/responses", ask(part, model="fake-vision")), 404)
        assert error["param"] == "input[0].content[1].file_id"
    with pytest.raises(openai.NotFoundError):
        api.responses.create(**ask({"type": "input_file", "file_id": "file-missing"}))  # type: ignore[call-overload]


def test_bad_files_are_400_naming_the_param(api: openai.OpenAI, media_server: RixinProcess) -> None:
    garbage = {
        "type": "input_file",
        "filename": "broken.pdf",
        "file_data": data_url("application/pdf", b"%PDF-1.7 this is not a pdf at all"),
    }
    error = error_of(post(media_server, "/responses", ask(garbage)), 400)
    assert error["param"] == "input[0].content[1]"
    assert "broken.pdf" in error["message"]

    uploaded = api.files.create(file=("broken.docx", b"PK\x03\x04 not a zip"), purpose="user_data")
    by_id = {"type": "input_file", "file_id": uploaded.id}
    assert error_of(post(media_server, "/responses", ask(by_id)), 400)["param"] == (
        "input[0].content[1]"
    )

    cases = {
        "input[0].content[1].file_data": {
            "type": "input_file",
            "filename": "a.txt",
            "file_data": "not base64 at all!",
        },
        "input[0].content[1].filename": {"type": "input_file", "file_data": "aGk="},
        "input[0].content[1].file_url": {"type": "input_file", "file_url": "ftp://example.com/a"},
        "input[0].content[1]": {"type": "input_file"},
    }
    for param, part in cases.items():
        assert error_of(post(media_server, "/responses", ask(part)), 400)["param"] == param

    # Other surfaces do not resolve files yet: refused, never dropped.
    item = {"type": "message", "role": "user", "content": [by_id]}
    error = error_of(post(media_server, "/conversations", {"items": [item]}), 400)
    assert error["param"] == "items[0].content[0]"


def test_file_url_to_a_private_address_is_refused(media_server: RixinProcess) -> None:
    part = {"type": "input_file", "file_url": "http://127.0.0.1:9/secret.txt"}
    error = error_of(post(media_server, "/responses", ask(part)), 403)
    assert error["param"] == "input[0].content[1].file_url"


def resolver(tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response]) -> InputResolver:
    files: Any = SimpleNamespace(blobs=SimpleNamespace(tmp_dir=tmp_path))
    return InputResolver(
        files,
        InputLimits(max_file_data_bytes=1024),
        allowed_hosts=["127.0.0.1"],
        transport=httpx.MockTransport(handler),
    )


async def resolve_url(tmp_path: Path, handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    part = {"type": "input_file", "file_url": "https://127.0.0.1/docs/notes"}
    items = normalize_input([{"role": "user", "content": [part]}], media=True)
    resolved = await resolver(tmp_path, handler).resolve("proj", items, model="m", vision=False)
    assert resolved[0].data["content"] == [part]
    assert resolved[0].call is not None
    return resolved[0].call["content"]


async def test_file_url_is_fetched_without_redirects_and_capped(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def ok(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, text="hello from the web", headers={"content-type": "text/plain"}
        )

    assert await resolve_url(tmp_path, ok) == "[file: notes.txt]\nhello from the web"
    assert seen[0].headers["host"] == "127.0.0.1"
    assert list(tmp_path.iterdir()) == []  # the fetched bytes were parsed, then removed

    def moved(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://169.254.169.254/"})

    with pytest.raises(InvalidRequest, match="redirects are not followed") as info:
        await resolve_url(tmp_path, moved)
    assert info.value.param == "input[0].content[0].file_url"

    def huge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 4096)

    with pytest.raises(RequestTooLarge):
        await resolve_url(tmp_path, huge)


def test_image_to_a_model_without_vision_is_400(
    media_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    image = {"type": "input_image", "image_url": data_url("image/png", png_bytes())}
    error = error_of(post(media_server, "/responses", ask(image)), 400)
    assert error["message"] == "Model 'fake-chat' does not accept images."
    assert error["param"] == "input[0].content[1]"
    broken = {"type": "input_file", "filename": "b.pdf", "file_data": data_url("x/y", b"junk")}
    error = error_of(post(media_server, "/responses", ask(broken, image)), 400)
    assert error["param"] == "input[0].content[2]"  # refused before any file is parsed
    assert upstream.bodies == []

    chat = {
        "model": "fake-chat",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
            }
        ],
    }
    error = error_of(post(media_server, "/chat/completions", chat), 400)
    assert error["message"] == "Model 'fake-chat' does not accept images."
    assert error["param"] == "messages[0].content[0]"


def test_image_to_a_vision_model_reaches_it(
    api: openai.OpenAI, media_server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    png = png_bytes()
    uploaded = api.files.create(file=("dot.png", png), purpose="vision")
    upstream.script = ["A red dot.", "A red dot."]
    inline = data_url("image/png", png)
    response = post(
        media_server,
        "/responses",
        ask(
            {"type": "input_image", "file_id": uploaded.id, "detail": "low"},
            {"type": "input_image", "image_url": "https://example.com/cat.png"},
            model="fake-vision",
        ),
    )
    assert response.status_code == 200, response.text
    assert user_content(upstream) == [
        {"type": "text", "text": "What does it say?"},
        {"type": "image_url", "image_url": {"url": inline, "detail": "low"}},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.com/cat.png", "detail": "auto"},
        },
    ]
    items = httpx.get(
        f"{media_server.api_url}/responses/{response.json()['id']}/input_items",
        headers=media_server.headers(),
    ).json()
    validate("ResponseItemList", items)
    assert items["data"][0]["content"][1] == {
        "type": "input_image",
        "image_url": None,
        "file_id": uploaded.id,
        "detail": "low",
    }

    chat = api.chat.completions.create(
        model="fake-vision",
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": inline}}]}
        ],
    )
    assert chat.choices[0].message.content == "A red dot."
    assert user_content(upstream) == [{"type": "image_url", "image_url": {"url": inline}}]


def test_bad_images_are_400(api: openai.OpenAI, media_server: RixinProcess) -> None:
    not_png = api.files.create(file=("fake.png", b"plain text, not an image"), purpose="vision")
    cases = {
        "input[0].content[1].image_url": {
            "type": "input_image",
            "image_url": "data:image/png;base64,@@@",
        },
        "input[0].content[1].file_id": {"type": "input_image", "file_id": not_png.id},
        "input[0].content[1]": {"type": "input_image"},
        "input[0].content[1].detail": {
            "type": "input_image",
            "image_url": "https://example.com/a.png",
            "detail": "huge",
        },
    }
    for param, part in cases.items():
        response = post(media_server, "/responses", ask(part, model="fake-vision"))
        assert error_of(response, 400)["param"] == param
