"""Tool calls written as text by small models: every shape parses, nothing invalid gets through."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest

from rixin.errors import InvalidRequest
from rixin.services.toolcalls import (
    constrained_tool_schema,
    extract_tool_calls,
    tool_response_format,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string"}},
            "required": ["tz"],
            "additionalProperties": False,
        },
    },
}
NO_PARAMS = {"type": "function", "function": {"name": "ping"}}
TOOLS = [WEATHER, TIME, NO_PARAMS]


def calls(content: str, tools: list[dict[str, Any]] = TOOLS) -> list[tuple[str, dict[str, Any]]]:
    found = extract_tool_calls(content, tools)
    assert found is not None, content
    for call in found:
        assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"])
        assert call["type"] == "function"
        assert isinstance(call["function"]["arguments"], str)
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in found]


@pytest.mark.parametrize(
    "content",
    [
        # What xllamacpp returns for tool_choice="required" with the 0.5B model.
        '{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        'Sure! Here is the call:\n```\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        "\n```\n"
        'You can call this function with "Paris".',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '{"function": "get_weather", "parameters": {"city": "Paris"}}',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '{"type": "function", "function": {"name": "get_weather", '
        '"arguments": "{\\"city\\": \\"Paris\\"}"}}',
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}',
        '{"name": "get_weather", "city": "Paris"}',
    ],
)
def test_shapes(content: str) -> None:
    assert calls(content) == [("get_weather", {"city": "Paris"})]


def test_chinese_arguments_are_kept_unescaped() -> None:
    found = extract_tool_calls(
        '好的，我来查询。\n```json\n{"name": "get_weather", "arguments": {"city": "北京"}}\n```',
        TOOLS,
    )
    assert found is not None
    assert found[0]["function"]["arguments"] == '{"city": "北京"}'


def test_several_calls_in_order_and_duplicates_dropped() -> None:
    content = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    )
    assert calls(content) == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "Europe/Paris"}),
    ]
    found = extract_tool_calls(content, TOOLS)
    assert found is not None
    assert len({c["id"] for c in found}) == len(found)


def test_list_of_calls() -> None:
    content = json.dumps(
        [
            {"name": "get_weather", "arguments": {"city": "上海", "unit": "c"}},
            {"name": "ping", "arguments": {}},
        ],
        ensure_ascii=False,
    )
    assert calls(content) == [("get_weather", {"city": "上海", "unit": "c"}), ("ping", {})]


def test_tool_without_parameters_accepts_missing_arguments() -> None:
    assert calls('{"name": "ping"}') == [("ping", {})]


@pytest.mark.parametrize(
    "content",
    [
        "",
        "The weather in Paris is sunny.",
        '{"name": "get_weather", "arguments": {"city": "Paris"',  # truncated
        "{'name': 'get_weather', 'arguments': {'city': 'Paris'}}",  # Python, not JSON
        '{"name": "get_weather", "arguments": "{not json"}',
        '{"name": "delete_everything", "arguments": {}}',  # not an offered tool
        '{"name": "get_weather", "arguments": {}}',  # required city missing
        '{"name": "get_weather", "arguments": {"city": 42}}',  # wrong type
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "kelvin"}}',  # enum
        '{"name": "get_time", "arguments": {"tz": "UTC", "extra": 1}}',  # additionalProperties
        '{"name": "get_weather", "arguments": ["Paris"]}',
        '{"name": 7, "arguments": {"city": "Paris"}}',
        "[1, 2, 3]",
    ],
)
def test_invalid_calls_are_dropped(content: str) -> None:
    assert extract_tool_calls(content, TOOLS) is None


def test_valid_call_survives_invalid_neighbours() -> None:
    content = (
        '{"name": "nope", "arguments": {}}\n'
        '{"name": "get_weather", "arguments": {"city": 1}}\n'
        '{"name": "get_time", "arguments": {"tz": "Asia/Shanghai"}}'
    )
    assert calls(content) == [("get_time", {"tz": "Asia/Shanghai"})]


def test_no_tools_offered_means_no_calls() -> None:
    assert extract_tool_calls('{"name": "get_weather", "arguments": {"city": "x"}}', []) is None
    assert extract_tool_calls('{"name": "get_weather", "arguments": {"city": "x"}}', None) is None


def test_broken_tool_schema_does_not_crash() -> None:
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "bogus"}}}
    assert calls('{"name": "f", "arguments": {"a": 1}}', [broken]) == [("f", {"a": 1})]


@pytest.mark.parametrize("choice", ["auto", "none", None])
def test_no_schema_when_a_call_is_optional(choice: str | None) -> None:
    assert constrained_tool_schema(TOOLS, choice, True) is None


def test_required_schema_allows_exactly_the_offered_calls() -> None:
    schema = constrained_tool_schema(TOOLS, "required", True)
    assert schema is not None
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"name": "get_weather", "arguments": {"city": "北京"}})
    assert validator.is_valid({"name": "get_time", "arguments": {"tz": "UTC"}})
    assert validator.is_valid({"name": "ping", "arguments": {}})
    assert not validator.is_valid({"name": "get_weather", "arguments": {}})
    assert not validator.is_valid({"name": "other", "arguments": {}})
    assert not validator.is_valid({"name": "ping", "arguments": {}, "extra": 1})
    assert not validator.is_valid({"name": "ping"})


def test_named_choice_allows_only_that_tool() -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    schema = constrained_tool_schema(TOOLS, choice, False)
    assert schema is not None
    assert schema["properties"]["name"] == {"const": "get_time"}
    assert schema["properties"]["arguments"] == TIME["function"]["parameters"]  # type: ignore[index]
    assert schema["required"] == ["name", "arguments"]
    assert schema["additionalProperties"] is False


def test_named_choice_of_unknown_tool_is_a_client_error() -> None:
    with pytest.raises(InvalidRequest) as info:
        constrained_tool_schema(TOOLS, {"type": "function", "function": {"name": "x"}}, True)
    assert info.value.param == "tool_choice"
    with pytest.raises(InvalidRequest):
        constrained_tool_schema([], "required", True)


def test_constrained_output_always_extracts() -> None:
    """Whatever constrained decoding lets through, extraction accepts."""
    schema = constrained_tool_schema(TOOLS, "required", True)
    assert schema is not None
    fmt = tool_response_format(schema)
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    for output in (
        {"name": "get_weather", "arguments": {"city": "深圳", "unit": "f"}},
        {"name": "get_time", "arguments": {"tz": "UTC"}},
        {"name": "ping", "arguments": {}},
    ):
        assert jsonschema.Draft202012Validator(schema).is_valid(output)
        assert calls(json.dumps(output, ensure_ascii=False)) == [
            (output["name"], output["arguments"])
        ]
