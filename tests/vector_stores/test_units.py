"""Pure parts: attribute filters, request checks, chunk sizing, long-text splitting."""

from __future__ import annotations

from typing import Any

import pytest

from rixin.errors import InvalidRequest
from rixin.knowledge.filters import matches, parse_filter
from rixin.knowledge.ingest import auto_sizes, split_in_half
from rixin.services.vector_stores import check_attributes, check_metadata, chunking_strategy

ATTRS: dict[str, Any] = {"lang": "zh", "year": 2021, "score": 0.5, "ok": True}
ZH, EN = {"key": "lang", "value": "zh"}, {"key": "lang", "value": "en"}
NOT_OK, OK = {"key": "ok", "value": False}, {"key": "ok", "value": True}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"type": "eq", "key": "lang", "value": "zh"}, True),
        ({"key": "lang", "value": "zh"}, True),  # ``type`` defaults to eq
        ({"type": "eq", "key": "year", "value": 2021.0}, True),
        ({"type": "eq", "key": "year", "value": "2021"}, False),  # no cross-type equality
        ({"type": "eq", "key": "ok", "value": 1}, False),  # booleans are not numbers
        ({"type": "ne", "key": "missing", "value": 1}, True),
        ({"type": "gt", "key": "year", "value": 2020}, True),
        ({"type": "gt", "key": "lang", "value": 3}, False),
        ({"type": "lte", "key": "score", "value": 0.5}, True),
        ({"type": "lt", "key": "missing", "value": 5}, False),
        ({"type": "in", "key": "lang", "value": ["en", "zh"]}, True),
        ({"type": "nin", "key": "lang", "value": ["en", "zh"]}, False),
        ({"type": "nin", "key": "missing", "value": ["x"]}, True),
        ({"type": "and", "filters": [ZH, NOT_OK]}, False),
        ({"type": "or", "filters": [EN, OK]}, True),
    ],
)  # fmt: skip
def test_filter_semantics(flt: dict[str, Any], expected: bool) -> None:
    assert matches(parse_filter(flt), ATTRS) is expected


@pytest.mark.parametrize(
    ("flt", "param"),
    [
        ("eq", "filters"),
        ({"type": "regex", "key": "a", "value": "x"}, "filters.type"),
        ({"type": "eq", "value": "x"}, "filters.key"),
        ({"type": "eq", "key": "a", "value": {"x": 1}}, "filters.value"),
        ({"type": "in", "key": "a", "value": "x"}, "filters.value"),
        ({"type": "or", "filters": []}, "filters.filters"),
        (
            {"type": "and", "filters": [{"type": "or", "filters": [7]}]},
            "filters.filters[0].filters[0]",
        ),
    ],
)
def test_bad_filters_name_their_param(flt: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_filter(flt)
    assert info.value.param == param


def test_deep_nesting_is_refused() -> None:
    flt: dict[str, Any] = {"key": "a", "value": 1}
    for _ in range(12):
        flt = {"type": "and", "filters": [flt]}
    with pytest.raises(InvalidRequest):
        parse_filter(flt)


def test_chunking_strategy_and_maps() -> None:
    assert chunking_strategy(None) == {"type": "auto"}
    static = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50},
    }
    assert chunking_strategy(static) == static
    with pytest.raises(InvalidRequest) as info:
        bad = {"max_chunk_size_tokens": True, "chunk_overlap_tokens": 0}
        chunking_strategy({"type": "static", "static": bad}, "files[2].chunking_strategy")
    assert info.value.param == "files[2].chunking_strategy.static.max_chunk_size_tokens"
    assert check_attributes({"a": 1, "b": "x", "c": True}) == {"a": 1, "b": "x", "c": True}
    for bad in ({f"k{i}": 1 for i in range(17)}, {"a": "x" * 513}, {"a": [1]}, {"k" * 65: 1}):
        with pytest.raises(InvalidRequest):
            check_attributes(bad)
    with pytest.raises(InvalidRequest):
        check_metadata({"a": 1})  # type: ignore[dict-item]


def test_auto_sizes_fit_the_embedder() -> None:
    assert auto_sizes(None) == (800, 400)
    assert auto_sizes(8192) == (800, 400)
    assert auto_sizes(512) == (409, 204)


def test_split_in_half_keeps_every_character() -> None:
    text = "第一句话。Second sentence here! 第三句"
    left, right = split_in_half(text)
    assert left + right == text and left and right
    assert split_in_half("x") == ["x"]
