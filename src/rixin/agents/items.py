"""Items: the unit a run reads and writes, in OpenAI's Responses wire shape.

``normalize_input`` turns a request's ``input`` (a string or a list of items) into stored items
with our own ids; ``to_chat_messages`` turns a history of items back into the chat messages a
model step sends. A stored item is its wire ``data`` plus what the model must see again where that
differs: for server-side tool items the ``call`` (``{call_id, name, arguments, output}``), for a
message with file or image parts ``{"content": <chat content>}`` (``rixin.agents.inputs``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rixin.errors import InvalidRequest, UnsupportedParameter
from rixin.store.ids import new_id

JSONDict = dict[str, Any]

ITEM_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "file_search_call": "fs",
    "code_interpreter_call": "ci",
    "mcp_call": "mcp",
    "mcp_list_tools": "mcpl",
    "mcp_approval_request": "mcpr",
    "mcp_approval_response": "mcpa",
}
_TEXT_PARTS = {"input_text", "output_text", "text"}
MEDIA_PARTS = frozenset({"input_file", "input_image"})
"""Content parts resolved by ``rixin.agents.inputs`` before a run is stored."""
_IMAGE_DETAILS = {"auto", "low", "high", "original"}
_MESSAGE_ROLES = {"user", "assistant", "system", "developer"}
MAX_INPUT_ITEMS = 2000


@dataclass(frozen=True)
class StoredItem:
    data: JSONDict
    call: JSONDict | None = None

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def type(self) -> str:
        return str(self.data["type"])


def item_id(item_type: str) -> str:
    return new_id(ITEM_PREFIX.get(item_type, "item"))


# -- input ---------------------------------------------------------------------------------


def normalize_input(value: Any, param: str = "input", *, media: bool = False) -> list[StoredItem]:
    """The request's ``input`` as stored items (ids assigned here, never taken from clients).

    With ``media``, messages other than the assistant's may hold ``input_file`` and
    ``input_image`` parts, checked and kept as sent; the caller resolves them for the model
    (``rixin.agents.inputs``) before storing the items.
    """
    if isinstance(value, str):
        return [StoredItem(user_message(value))]
    if not isinstance(value, list):
        raise InvalidRequest("input must be a string or a list of items.", param=param)
    if len(value) > MAX_INPUT_ITEMS:
        raise InvalidRequest(f"input may hold at most {MAX_INPUT_ITEMS} items.", param=param)
    return [_normalize_item(raw, f"{param}[{i}]", media) for i, raw in enumerate(value)]


def user_message(text: str) -> JSONDict:
    return {
        "id": item_id("message"),
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def _normalize_item(raw: Any, param: str, media: bool) -> StoredItem:
    if not isinstance(raw, dict):
        raise InvalidRequest("Each input item must be an object.", param=param)
    kind = raw.get("type") or ("message" if "role" in raw else None)
    if kind == "message":
        return StoredItem(_message(raw, param, media))
    if kind == "function_call_output":
        return StoredItem(_function_call_output(raw, param))
    if kind == "function_call":
        return StoredItem(_function_call(raw, param))
    if kind == "mcp_approval_response":
        return StoredItem(_approval_response(raw, param))
    raise UnsupportedParameter(f"Input items of type {kind!r} are not supported.", param=param)


def _message(raw: JSONDict, param: str, media: bool) -> JSONDict:
    role = raw.get("role")
    if role not in _MESSAGE_ROLES:
        raise InvalidRequest(
            "role must be one of user, assistant, system, developer.", param=f"{param}.role"
        )
    content = raw.get("content")
    part_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts = [_text_part(part_type, content)]
    elif isinstance(content, list):
        media = media and role != "assistant"
        parts = [
            _content_part(part, part_type, f"{param}.content[{j}]", media)
            for j, part in enumerate(content)
        ]
    else:
        raise InvalidRequest("content must be a string or a list.", param=f"{param}.content")
    return {
        "id": item_id("message"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": parts,
    }


def _content_part(part: Any, part_type: str, param: str, media: bool) -> JSONDict:
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    if media and kind == "input_file":
        return _file_part(part, param)
    if media and kind == "input_image":
        return _image_part(part, param)
    if kind not in _TEXT_PARTS:
        raise UnsupportedParameter(
            f"Content parts of type {kind!r} are not supported.", param=param
        )
    if not isinstance(part.get("text"), str):
        raise InvalidRequest("A text part needs 'text'.", param=param)
    return _text_part(part_type, part["text"])


def _file_part(part: JSONDict, param: str) -> JSONDict:
    """An ``input_file`` part as sent (``InputFileContent``), once its shape is checked."""
    sources = [key for key in ("file_id", "file_data", "file_url") if part.get(key) is not None]
    if len(sources) != 1:
        raise InvalidRequest(
            "An input_file part needs one of file_id, file_data or file_url.", param=param
        )
    source = sources[0]
    if not isinstance(part[source], str) or not part[source]:
        raise InvalidRequest(f"{source} must be a non-empty string.", param=f"{param}.{source}")
    if source == "file_url" and not part[source].startswith(("https://", "http://")):
        raise InvalidRequest("file_url must be an http(s) URL.", param=f"{param}.file_url")
    filename = part.get("filename")
    if source == "file_data" and (not isinstance(filename, str) or not filename.strip()):
        raise InvalidRequest("file_data needs a filename.", param=f"{param}.filename")
    out: JSONDict = {"type": "input_file", source: part[source]}
    if isinstance(filename, str):
        out["filename"] = filename
    return out


def _image_part(part: JSONDict, param: str) -> JSONDict:
    """An ``input_image`` part as sent (``InputImageContent``), once its shape is checked."""
    url, file = part.get("image_url"), part.get("file_id")
    if (url is None) == (file is None):
        raise InvalidRequest("An input_image part needs one of image_url or file_id.", param=param)
    for key, value in (("image_url", url), ("file_id", file)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidRequest(f"{key} must be a non-empty string.", param=f"{param}.{key}")
    if isinstance(url, str) and not url.startswith(("https://", "http://", "data:")):
        raise InvalidRequest(
            "image_url must be an http(s) URL or a base64 data URL.", param=f"{param}.image_url"
        )
    detail = part.get("detail") or "auto"
    if detail not in _IMAGE_DETAILS:
        raise InvalidRequest(
            "detail must be one of auto, low, high, original.", param=f"{param}.detail"
        )
    return {"type": "input_image", "image_url": url, "file_id": file, "detail": detail}


def _text_part(part_type: str, text: str, annotations: list[JSONDict] | None = None) -> JSONDict:
    if part_type == "output_text":
        return {
            "type": "output_text",
            "text": text,
            "annotations": annotations or [],
            "logprobs": [],
        }
    return {"type": "input_text", "text": text}


def _required_str(raw: JSONDict, key: str, param: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"Missing required parameter: '{key}'.", param=f"{param}.{key}")
    return value


def _function_call_output(raw: JSONDict, param: str) -> JSONDict:
    output = raw.get("output")
    if isinstance(output, list):
        output = "".join(
            str(p.get("text", "")) for p in output if isinstance(p, dict) and "text" in p
        )
    if not isinstance(output, str):
        raise InvalidRequest("output must be a string.", param=f"{param}.output")
    return {
        "id": item_id("function_call_output"),
        "type": "function_call_output",
        "call_id": _required_str(raw, "call_id", param),
        "output": output,
        "status": "completed",
    }


def _function_call(raw: JSONDict, param: str) -> JSONDict:
    return {
        "id": item_id("function_call"),
        "type": "function_call",
        "call_id": _required_str(raw, "call_id", param),
        "name": _required_str(raw, "name", param),
        "arguments": str(raw.get("arguments") or "{}"),
        "status": "completed",
    }


def _approval_response(raw: JSONDict, param: str) -> JSONDict:
    approve = raw.get("approve")
    if not isinstance(approve, bool):
        raise InvalidRequest("approve must be true or false.", param=f"{param}.approve")
    return {
        "id": item_id("mcp_approval_response"),
        "type": "mcp_approval_response",
        "approval_request_id": _required_str(raw, "approval_request_id", param),
        "approve": approve,
        "reason": raw.get("reason"),
    }


# -- output --------------------------------------------------------------------------------


def assistant_message(
    text: str,
    status: str = "completed",
    *,
    id_: str | None = None,
    annotations: list[JSONDict] | None = None,
) -> JSONDict:
    return {
        "id": id_ or item_id("message"),
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [_text_part("output_text", text, annotations)],
    }


def function_call(call_id: str, name: str, arguments: str, *, id_: str | None = None) -> JSONDict:
    return {
        "id": id_ or item_id("function_call"),
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def message_text(data: JSONDict) -> str:
    content = data.get("content")
    if isinstance(content, str):
        return content
    return "".join(
        str(p.get("text", ""))
        for p in content or []
        if isinstance(p, dict) and p.get("type") in _TEXT_PARTS
    )


# -- citations -----------------------------------------------------------------------------

_MARKER = re.compile(r"\[(\d{1,3})\]")
_MARKER_AT_END = re.compile(r"\[\d{1,3}\]$")


def file_citations(text: str, earlier: Sequence[JSONDict]) -> list[JSONDict]:
    """The annotations of an answer written after the ``earlier`` output items of its run:
    ``file_citation`` for ``file_search`` results, then ``container_file_citation`` for the
    files the ``code_interpreter`` calls since the previous message produced."""
    return search_citations(text, earlier) + container_citations(text, earlier)


def search_citations(text: str, earlier: Sequence[JSONDict]) -> list[JSONDict]:
    """``file_citation`` annotations for an answer written after the ``earlier`` output items.

    ``file_search`` shows the model its results numbered ``[1] filename: text``. A marker
    ``[n]`` in the answer cites result n of the latest search, at the index just after the
    marker. An answer without a (valid) marker cites each distinct file among all the results
    it was given, at the end of the text: those are the passages the answer was written from.
    """
    searches = [
        [r for r in item.get("results") or [] if isinstance(r, dict) and r.get("file_id")]
        for item in earlier
        if item.get("type") == "file_search_call"
    ]
    searches = [results for results in searches if results]
    if not text or not searches:
        return []
    latest = searches[-1]
    cited = [
        _file_citation(latest[int(m.group(1)) - 1], m.end())
        for m in _MARKER.finditer(text)
        if 1 <= int(m.group(1)) <= len(latest)
    ]
    if cited:
        return cited
    files: dict[str, JSONDict] = {}
    for results in searches:
        for result in results:
            files.setdefault(str(result["file_id"]), result)
    return [_file_citation(result, len(text)) for result in files.values()]


def container_citations(text: str, earlier: Sequence[JSONDict]) -> list[JSONDict]:
    """A ``container_file_citation`` at the end of the text for each file produced by a
    ``code_interpreter`` call after the last message (files the answer has not yet cited)."""
    last = max((n for n, item in enumerate(earlier) if item.get("type") == "message"), default=-1)
    return [
        {
            "type": "container_file_citation",
            "container_id": str(item.get("container_id") or ""),
            "file_id": str(produced["file_id"]),
            "filename": str(produced.get("filename") or ""),
            "start_index": len(text),
            "end_index": len(text),
        }
        for item in earlier[last + 1 :]
        if item.get("type") == "code_interpreter_call"
        for produced in item.get("files") or []
        if isinstance(produced, dict) and produced.get("file_id")
    ]


def _file_citation(result: JSONDict, index: int) -> JSONDict:
    return {
        "type": "file_citation",
        "file_id": str(result["file_id"]),
        "filename": str(result.get("filename") or ""),
        "index": index,
    }


def message_annotations(data: JSONDict) -> list[JSONDict]:
    """A message item's Responses annotations as Assistants ``file_citation`` annotations.

    The cited ``text`` is the ``[n]`` marker just before the citation's index, if there is one
    (the span a client replaces with its own citation mark); otherwise it is empty.
    """
    text = message_text(data)
    out: list[JSONDict] = []
    for part in data.get("content") or []:
        if not isinstance(part, dict):
            continue
        for note in part.get("annotations") or []:
            if note.get("type") != "file_citation":
                continue
            end = min(max(int(note.get("index", len(text))), 0), len(text))
            marker = _MARKER_AT_END.search(text[:end])
            start = marker.start() if marker else end
            out.append(
                {
                    "type": "file_citation",
                    "text": text[start:end],
                    "start_index": start,
                    "end_index": end,
                    "file_citation": {"file_id": str(note["file_id"])},
                }
            )
    return out


# -- to the model --------------------------------------------------------------------------


def to_chat_messages(items: list[StoredItem]) -> list[JSONDict]:
    """Chat messages for a history of items (tool calls grouped as the chat format wants)."""
    messages: list[JSONDict] = []
    for item in items:
        data = item.data
        kind = item.type
        if kind == "message":
            role = "system" if data.get("role") == "developer" else data.get("role")
            resolved = item.call.get("content") if item.call is not None else None
            content = resolved if resolved is not None else message_text(data)
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            _add_call(messages, str(data["call_id"]), str(data["name"]), str(data["arguments"]))
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": data["call_id"], "content": str(data["output"])}
            )
        elif item.call is not None:
            call = item.call
            _add_call(messages, str(call["call_id"]), str(call["name"]), str(call["arguments"]))
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call["call_id"],
                    "content": str(call.get("output") or ""),
                }
            )
    return messages


def _add_call(messages: list[JSONDict], call_id: str, name: str, arguments: str) -> None:
    entry = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last.get("role") == "assistant" and last.get("tool_calls"):
        last["tool_calls"].append(entry)
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [entry]})
