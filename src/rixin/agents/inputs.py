"""File and image parts of a response's input, resolved into what a chat model reads.

``normalize_input`` keeps an ``input_file`` or ``input_image`` part as the client sent it: the
stored item is what ``GET /v1/responses/{id}/input_items`` returns. ``InputResolver`` then gives
each message holding such parts its model-facing content, kept on the stored item as
``StoredItem.call = {"content": …}`` so later steps and follow-up responses never parse again:

- a file (``file_id`` of the caller's project, ``file_data`` + ``filename``, or ``file_url``,
  fetched through the SSRF guard ``rixin.netguard`` without redirects, size-capped and with a
  timeout) is parsed by the sandboxed parser, with ingestion's limits, and becomes a text part
  headed by its filename, cut at ``InputLimits.max_file_chars`` with a note saying so;
- an image becomes an OpenAI ``image_url`` part (a ``file_id`` is read into a data URL), for
  models that declare the ``vision`` capability; any other model refuses it with a 400.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import os
import re
import tempfile
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from rixin import netguard
from rixin.agents.items import MEDIA_PARTS, StoredItem
from rixin.errors import InvalidRequest, NotFound, RequestTooLarge, UnsupportedParameter
from rixin.knowledge.parsing import ParseError, parse_file_async
from rixin.services.files import FileService, clean_filename
from rixin.store.records_files import FileRecord

JSONDict = dict[str, Any]
MiB = 1024 * 1024

_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[^;,]*)*);base64,", re.ASCII)
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_CHAT_DETAIL = {"auto": "auto", "low": "low", "high": "high", "original": "high"}


@dataclass(frozen=True)
class InputLimits:
    """What the file and image parts of one request may bring."""

    max_file_chars: int = 100_000
    """A file's text beyond this is cut off (with a note the model sees)."""
    max_file_data_bytes: int = 32 * MiB
    """Decoded ``file_data`` (the edge's body limit is usually the tighter one)."""
    max_image_bytes: int = 20 * MiB
    max_parts: int = 16
    """File and image parts in one request: each file costs a parser subprocess."""
    fetch_timeout_s: float = 15.0
    """A ``file_url`` must be fetched within this (and is capped at ``max_file_data_bytes``)."""


class InputResolver:
    """Model-facing content for the messages of a request that hold file or image parts."""

    def __init__(
        self,
        files: FileService,
        limits: InputLimits | None = None,
        *,
        allowed_hosts: Collection[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.files = files
        self.limits = limits or InputLimits()
        self.allowed_hosts = allowed_hosts
        """Hosts or IPs a ``file_url`` may name although private (``rixin.netguard``)."""
        self._transport = transport

    async def resolve(
        self,
        project_id: str,
        items: list[StoredItem],
        *,
        model: str,
        vision: bool,
        param: str = "input",
    ) -> list[StoredItem]:
        """``items`` with ``call`` set on each message that holds a file or image part."""
        media = [
            (f"{param}[{i}].content[{j}]", part.get("type"))
            for i, item in enumerate(items)
            for j, part in enumerate(_parts(item))
            if part.get("type") in MEDIA_PARTS
        ]
        if len(media) > self.limits.max_parts:
            raise InvalidRequest(
                f"input may hold at most {self.limits.max_parts} file and image parts.",
                param=media[self.limits.max_parts][0],
            )
        images = [where for where, kind in media if kind == "input_image"]
        if images and not vision:  # refused before any file is parsed
            raise UnsupportedParameter(f"Model '{model}' does not accept images.", param=images[0])
        out: list[StoredItem] = []
        for i, item in enumerate(items):
            parts = _parts(item)
            if not any(part.get("type") in MEDIA_PARTS for part in parts):
                out.append(item)
                continue
            content = [
                await self._part(project_id, part, f"{param}[{i}].content[{j}]")
                for j, part in enumerate(parts)
            ]
            out.append(replace(item, call={"content": _collapse(content)}))
        return out

    async def _part(self, project_id: str, part: JSONDict, param: str) -> JSONDict:
        kind = part.get("type")
        if kind == "input_file":
            return {"type": "text", "text": await self._file_text(project_id, part, param)}
        if kind == "input_image":
            url = await self._image_url(project_id, part, param)
            detail = _CHAT_DETAIL.get(str(part.get("detail") or "auto"), "auto")
            return {"type": "image_url", "image_url": {"url": url, "detail": detail}}
        return {"type": "text", "text": str(part.get("text") or "")}

    # -- files -----------------------------------------------------------------------------

    async def _file_text(self, project_id: str, part: JSONDict, param: str) -> str:
        if part.get("file_id"):
            record = await self._record(project_id, str(part["file_id"]), f"{param}.file_id")
            filename = record.filename
            path = self.files.content_path(record)
            if not await asyncio.to_thread(path.is_file):
                raise NotFound(
                    f"No content stored for file '{record.id}'.", param=f"{param}.file_id"
                )
            text = await _parse(path, filename, param)
        elif part.get("file_url"):
            filename, data = await self._fetch(str(part["file_url"]), part, f"{param}.file_url")
            text = await self._parse_bytes(data, filename, param)
        else:
            filename = clean_filename(str(part.get("filename") or ""))
            data = _decode_base64(
                str(part.get("file_data") or ""),
                self.limits.max_file_data_bytes,
                f"{param}.file_data",
                "file_data",
            )[1]
            text = await self._parse_bytes(data, filename, param)
        if not text.strip():
            raise InvalidRequest(f"No text could be extracted from file '{filename}'.", param=param)
        return self._file_block(filename, text)

    def _file_block(self, filename: str, text: str) -> str:
        cap = self.limits.max_file_chars
        head = f"[file: {filename}]\n"
        if len(text) <= cap:
            return head + text
        note = f"\n[file truncated: showing the first {cap:,} of {len(text):,} characters]"
        return head + text[:cap] + note

    async def _parse_bytes(self, data: bytes, filename: str, param: str) -> str:
        tmp_dir = self.files.blobs.tmp_dir
        path = await asyncio.to_thread(_write_temp, tmp_dir, data)
        try:
            return await _parse(path, filename, param)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _fetch(self, url: str, part: JSONDict, param: str) -> tuple[str, bytes]:
        """``(filename, bytes)`` of a ``file_url``: SSRF-checked, no redirects, capped."""
        target, host = await netguard.check_url(
            url, self.allowed_hosts, param=param, name="file_url"
        )
        limit = self.limits.max_file_data_bytes
        timeout = self.limits.fetch_timeout_s
        client = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, trust_env=False, transport=self._transport
        )
        try:
            async with client, client.stream("GET", target, headers={"Host": host}) as response:
                status = response.status_code
                if status != 200:
                    note = " (redirects are not followed)" if 300 <= status < 400 else ""
                    raise InvalidRequest(f"file_url answered HTTP {status}{note}.", param=param)
                data = await _read_capped(response, limit, param)
                content_type = response.headers.get("content-type", "")
        except httpx.TimeoutException as exc:
            raise InvalidRequest(
                f"file_url did not answer within {timeout:g} s.", param=param
            ) from exc
        except httpx.HTTPError as exc:
            raise InvalidRequest(
                f"file_url could not be fetched ({type(exc).__name__}).", param=param
            ) from exc
        return _url_filename(url, part.get("filename"), content_type), data

    async def _record(self, project_id: str, file_id: str, param: str) -> FileRecord:
        try:
            return await self.files.retrieve(project_id, file_id)
        except NotFound as exc:
            raise NotFound(exc.message, param=param) from exc

    # -- images ----------------------------------------------------------------------------

    async def _image_url(self, project_id: str, part: JSONDict, param: str) -> str:
        url = part.get("image_url")
        if isinstance(url, str) and url:
            if url.startswith("data:"):
                mime, data = _decode_base64(
                    url, self.limits.max_image_bytes, f"{param}.image_url", "image_url"
                )
                if mime is not None and mime not in _IMAGE_TYPES:
                    raise InvalidRequest(_NOT_AN_IMAGE, param=f"{param}.image_url")
            return url
        file_param = f"{param}.file_id"
        record = await self._record(project_id, str(part.get("file_id")), file_param)
        if record.bytes > self.limits.max_image_bytes:
            raise RequestTooLarge(
                f"Images may be at most {self.limits.max_image_bytes // MiB} MiB.",
                param=file_param,
            )
        data = await self.files.blobs.read_bytes(record.sha256)
        mime = _sniff_image(data)
        if mime is None:
            raise InvalidRequest(_NOT_AN_IMAGE, param=file_param)
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_NOT_AN_IMAGE = "The image must be a PNG, JPEG, GIF or WEBP image."


def _parts(item: StoredItem) -> list[JSONDict]:
    if item.type != "message" or not isinstance(item.data.get("content"), list):
        return []
    return [p for p in item.data["content"] if isinstance(p, dict)]


def _collapse(content: list[JSONDict]) -> str | list[JSONDict]:
    """Text-only content as one string (blank lines between parts): every template reads it."""
    if all(part["type"] == "text" for part in content):
        return "\n\n".join(str(part["text"]) for part in content)
    return content


def _decode_base64(value: str, max_bytes: int, param: str, name: str) -> tuple[str | None, bytes]:
    """``(media type or None, bytes)`` of base64 data, bare or as a ``data:`` URL."""
    mime: str | None = None
    match = _DATA_URL.match(value)
    if match is not None:
        mime = (match.group(1) or "").lower() or None
        value = value[match.end() :]
    elif value.startswith("data:"):
        raise InvalidRequest(f"{name} must be a base64 data URL.", param=param)
    if len(value) > (max_bytes + 2) // 3 * 4 + 64:  # 64: line breaks some encoders add
        raise RequestTooLarge(f"{name} may decode to at most {max_bytes // MiB} MiB.", param=param)
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{name} is not valid base64.", param=param) from exc
    if not data:
        raise InvalidRequest(f"{name} is empty.", param=param)
    if len(data) > max_bytes:
        raise RequestTooLarge(f"{name} may decode to at most {max_bytes // MiB} MiB.", param=param)
    return mime, data


async def _read_capped(response: httpx.Response, limit: int, param: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"file_url may be at most {limit // MiB} MiB.", param=param)
        chunks.append(chunk)
    return b"".join(chunks)


def _url_filename(url: str, given: Any, content_type: str) -> str:
    """The part's ``filename``, else the URL's last path segment; with an extension the
    parser can go by (from the answer's content type) when the name has none."""
    name = str(given) if isinstance(given, str) and given.strip() else ""
    name = clean_filename(name or unquote(PurePosixPath(urlsplit(url).path).name))
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime and not PurePosixPath(name).suffix:
        name += mimetypes.guess_extension(mime) or ""
    return name


def _write_temp(tmp_dir: Path, data: bytes) -> Path:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="input-", dir=tmp_dir)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Path(name)


async def _parse(path: Path, filename: str, param: str) -> str:
    try:
        document = await parse_file_async(path, filename=filename)
    except ParseError as exc:
        raise InvalidRequest(
            f"File '{filename}' could not be parsed: {exc.message}", param=param, code=exc.code
        ) from exc
    return document.text


def _sniff_image(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
