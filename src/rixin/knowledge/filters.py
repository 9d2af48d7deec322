"""OpenAI's attribute filters (``ComparisonFilter``, ``CompoundFilter``) as pure functions.

``parse_filter`` checks a filter from a request and names the exact ``param`` of a bad part
(``filters.filters[1].type``); ``matches`` evaluates a parsed filter against one file's
``attributes``. Semantics, as OpenAI documents them:

* ``eq``/``ne`` compare values of the same type (``1 == 1.0``; a string never equals a number);
* ``gt``/``gte``/``lt``/``lte`` need numbers on both sides (strings compare lexicographically
  when both are strings); a missing key or a type mismatch does not match;
* ``in``/``nin`` take a list; ``nin`` on a missing key matches;
* ``and``/``or`` combine any number of filters, nested to any depth (``MAX_DEPTH`` bounds it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from rixin.errors import InvalidRequest

Comparison = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
Compound = Literal["and", "or"]
COMPARISONS: frozenset[str] = frozenset(get_args(Comparison))
COMPOUNDS: frozenset[str] = frozenset(get_args(Compound))
MAX_DEPTH = 8
MAX_FILTERS = 64

Scalar = str | int | float | bool


@dataclass(frozen=True)
class ComparisonFilter:
    type: Comparison
    key: str
    value: Scalar | tuple[str | int | float, ...]


@dataclass(frozen=True)
class CompoundFilter:
    type: Compound
    filters: tuple[Filter, ...]


Filter = ComparisonFilter | CompoundFilter


def parse_filter(data: Any, param: str = "filters", *, _depth: int = 0) -> Filter:
    """A checked filter; ``InvalidRequest`` naming the bad part otherwise."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("A filter must be an object.", param=param)
    if _depth > MAX_DEPTH:
        raise InvalidRequest(f"Filters nest at most {MAX_DEPTH} levels deep.", param=param)
    kind = data.get("type", "eq")
    if kind in COMPOUNDS:
        items = data.get("filters")
        if not isinstance(items, list) or not items or len(items) > MAX_FILTERS:
            raise InvalidRequest(
                f"'filters' must be a list of 1 to {MAX_FILTERS} filters.",
                param=f"{param}.filters",
            )
        parts = tuple(
            parse_filter(item, f"{param}.filters[{i}]", _depth=_depth + 1)
            for i, item in enumerate(items)
        )
        return CompoundFilter(kind, parts)
    if kind not in COMPARISONS:
        raise InvalidRequest(
            f"Unknown filter type {str(kind)[:32]!r}; expected one of "
            + ", ".join(sorted(COMPARISONS | COMPOUNDS))
            + ".",
            param=f"{param}.type",
        )
    key = data.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidRequest("A comparison filter needs a string 'key'.", param=f"{param}.key")
    return ComparisonFilter(kind, key, _value(kind, data.get("value"), f"{param}.value"))


def _value(kind: str, value: Any, param: str) -> Scalar | tuple[str | int | float, ...]:
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
        ):
            raise InvalidRequest(f"'{kind}' needs a list of strings or numbers.", param=param)
        return tuple(value)
    if not isinstance(value, str | int | float | bool):
        raise InvalidRequest("The value must be a string, number or boolean.", param=param)
    return value


def matches(flt: Filter, attributes: Mapping[str, Any] | None) -> bool:
    """Whether a file with ``attributes`` passes ``flt``."""
    attrs = attributes or {}
    if isinstance(flt, CompoundFilter):
        results = (matches(part, attrs) for part in flt.filters)
        return all(results) if flt.type == "and" else any(results)
    present = flt.key in attrs
    actual = attrs.get(flt.key)
    if flt.type == "nin":
        return not present or not _member(actual, flt.value)
    if not present:
        return flt.type == "ne"
    if flt.type == "in":
        return _member(actual, flt.value)
    if flt.type == "eq":
        return _equal(actual, flt.value)
    if flt.type == "ne":
        return not _equal(actual, flt.value)
    return _order(flt.type, actual, flt.value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "str" if isinstance(value, str) else "other"


def _equal(left: Any, right: Any) -> bool:
    return _kind(left) == _kind(right) and bool(left == right)


def _member(actual: Any, values: Any) -> bool:
    return isinstance(values, tuple) and any(_equal(actual, v) for v in values)


def _order(op: str, left: Any, right: Any) -> bool:
    kind = _kind(left)
    if kind != _kind(right) or kind not in ("number", "str"):
        return False
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)
