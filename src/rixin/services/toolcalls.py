"""Tool calls that always parse, from models that write them as text.

Small local models (Qwen2.5-Coder) answer a tools request by writing the call in the message text:
a fenced ```json block, a bare ``{"name": ..., "arguments": {...}}`` object or a list of them, or
``<tool_call>`` markup. Two pure functions cover both sides:

- ``constrained_tool_schema`` builds the JSON schema a backend with constrained decoding is held to
  when a call is required (``tool_choice`` ``"required"`` or a named function), so the arguments
  are guaranteed to parse and match the tool's parameters;
- ``extract_tool_calls`` finds calls in free text, keeps those naming an offered tool whose
  arguments validate against its schema, and returns OpenAI ``tool_calls`` entries.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped, unused-ignore]

from rixin.errors import InvalidRequest

Tool = Mapping[str, Any]
"""An OpenAI tool: ``{"type": "function", "function": {"name", "description", "parameters"}}``."""

MAX_SCAN_CHARS = 200_000
_CALL_KEYS = frozenset({"name", "function", "type", "id"})
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def tool_functions(tools: Sequence[Tool] | None) -> dict[str, dict[str, Any]]:
    """Function tools by name: name -> parameters schema."""
    found: dict[str, dict[str, Any]] = {}
    for tool in tools or ():
        function = tool.get("function") if tool.get("type", "function") == "function" else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            found[function["name"]] = (
                dict(parameters) if isinstance(parameters, Mapping) else _EMPTY_PARAMETERS
            )
    return found


def constrained_tool_schema(
    tools: Sequence[Tool] | None,
    tool_choice: str | Mapping[str, Any] | None,
    parallel_tool_calls: bool | None = True,
) -> dict[str, Any] | None:
    """The JSON schema of one call the model must produce, or None when a call is optional.

    A call is required for ``tool_choice="required"`` (any offered tool) or a named function.
    The schema describes a single ``{"name", "arguments"}`` object even when parallel calls are
    allowed: one flat object is what a 0.5B model fills in most reliably, and a required call is
    satisfied by one. ``parallel_tool_calls`` is accepted for the caller's convenience.
    """
    del parallel_tool_calls
    functions = tool_functions(tools)
    if tool_choice == "required":
        allowed = list(functions)
    elif isinstance(tool_choice, Mapping):
        name = _named_choice(tool_choice)
        if name not in functions:
            raise InvalidRequest(
                f"tool_choice names function {name!r}, which is not among the offered tools",
                param="tool_choice",
            )
        allowed = [name]
    else:
        return None
    if not allowed:
        raise InvalidRequest(
            "tool_choice requires a tool call but no tools are offered", param="tools"
        )
    variants = [_call_schema(name, functions[name]) for name in allowed]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def tool_response_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``response_format`` that holds a backend to ``schema``."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "tool_call", "strict": True, "schema": dict(schema)},
    }


def extract_tool_calls(
    content: str | None, tools: Sequence[Tool] | None
) -> list[dict[str, Any]] | None:
    """OpenAI ``tool_calls`` for the valid calls written in ``content``; None if there are none."""
    functions = tool_functions(tools)
    if not content or not functions:
        return None
    calls: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for value in _json_values(content[:MAX_SCAN_CHARS]):
        for name, arguments in _calls_in(value):
            if name not in functions or not _valid(arguments, functions[name]):
                continue
            encoded = json.dumps(arguments, ensure_ascii=False)
            if (name, encoded) in seen:
                continue
            seen.add((name, encoded))
            calls.append(
                {
                    "id": new_call_id(),
                    "type": "function",
                    "function": {"name": name, "arguments": encoded},
                }
            )
    return calls or None


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _named_choice(choice: Mapping[str, Any]) -> str:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("tool_choice must name a function", param="tool_choice")
    return name


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _json_values(text: str) -> Iterator[Any]:
    """Every top-level JSON object or array embedded in ``text``, in order.

    Fenced blocks, ``<tool_call>`` markup and bare JSON are all covered: the scan decodes at each
    ``{`` or ``[`` and skips past whatever decoded, so markup around the JSON does not matter.
    """
    decoder = json.JSONDecoder()
    i = 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            i = start + 1
            continue
        yield value
        i = end


def _calls_in(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield from _calls_in(item)
        return
    if not isinstance(value, dict):
        return
    if isinstance(value.get("tool_calls"), list):
        yield from _calls_in(value["tool_calls"])
        return
    call = _as_call(value)
    if call is not None:
        yield call


def _as_call(obj: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """``{name, arguments|parameters}``, ``{function: name, …}``, OpenAI's nested shape, or a
    name with its arguments flattened beside it."""
    function = obj.get("function")
    if isinstance(function, dict):
        obj = function
        name = obj.get("name")
    else:
        name = obj.get("name", function)
    if not isinstance(name, str):
        return None
    if "arguments" in obj:
        arguments = obj["arguments"]
    elif "parameters" in obj:
        arguments = obj["parameters"]
    else:
        # Small models sometimes flatten the arguments next to the name.
        arguments = {k: v for k, v in obj.items() if k not in _CALL_KEYS}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return name, arguments


def _valid(arguments: dict[str, Any], schema: dict[str, Any]) -> bool:
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except SchemaError:
        # The tool's own schema is broken: we cannot hold the model to it.
        return True
    return bool(validator_cls(schema).is_valid(arguments))


def inline_tool_history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite past tool calls and results as plain turns, for models that imitate the markup.

    Small local models shown their own earlier call in the chat template's tool markup tend to
    repeat it instead of answering. As plain text (the call as a sentence, the results as one
    user turn) they answer from the results. Only used when rixin parses calls itself.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    results: list[str] = []
    question = ""

    def flush() -> None:
        if results:
            lines = "\n".join(f"- {r}" for r in results)
            text = f"Tool results:\n{lines}\n\nUsing these results, answer: {question}"
            out.append({"role": "user", "content": text.strip()})
            results.clear()

    for message in messages:
        if message.get("role") == "tool":
            name = names.get(str(message.get("tool_call_id")), "the tool")
            results.append(f"{name} returned {_text(message.get('content'))}")
            continue
        flush()
        if message.get("role") == "user":
            question = _text(message.get("content"))
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if not calls:
            out.append(message)
            continue
        sentences = []
        for call in calls:
            function = call.get("function") or {}
            names[str(call.get("id"))] = str(function.get("name"))
            sentences.append(f"Calling {function.get('name')} with {function.get('arguments')}.")
        prefix = _text(message.get("content"))
        content = " ".join(([prefix] if prefix else []) + sentences)
        out.append({"role": "assistant", "content": content})
    flush()
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)
