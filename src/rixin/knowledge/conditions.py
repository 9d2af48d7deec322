"""Dify's ``metadata_condition`` and OpenAI's attribute filters, each seen through the other.

Serving Dify, ``plan`` splits a condition into an OpenAI filter that narrows the search before
ranking (the operators our filters have: ``is``/``=`` → ``eq``, ``is not``/``≠`` → ``ne``,
``>``/``≥``/``<``/``≤`` and numeric ``before``/``after`` → ``gt``/``gte``/``lt``/``lte``,
``in``/``not in`` → ``in``/``nin``) and a residual predicate for the rest (``contains``,
``start with``, ``end with``, ``empty``, dates as text …), checked on each record's metadata.
Consuming a Dify endpoint, ``to_metadata_condition`` forwards an OpenAI filter when Dify can say
it (one level of ``and``/``or``); the caller filters the records locally in any case.

Negative operators match a missing key, as ``ne``/``nin`` do in OpenAI's filters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rixin.errors import InvalidRequest
from rixin.knowledge.filters import ComparisonFilter, matches, parse_filter
from rixin.schemas.dify import Condition, MetadataCondition

Predicate = Callable[[Mapping[str, Any]], bool]
JSONFilter = dict[str, Any]

RECORD_ONLY_KEYS = frozenset({"file_id"})
"""Keys a served record's metadata has but a file's attributes do not (never pre-filtered)."""

_ORDER = {"=": "eq", "≠": "ne", ">": "gt", "≥": "gte", "<": "lt", "≤": "lte"}
_DATES = {"before": "lt", "after": "gt"}
_TEXT = {"is": "eq", "is not": "ne"}
_LISTS = {"in": "in", "not in": "nin"}
_NEGATIVE = frozenset({"not contains", "is not", "not in", "≠", "not empty"})


@dataclass(frozen=True)
class Plan:
    filters: JSONFilter | None = None
    """An OpenAI filter on file attributes, applied before ranking."""
    residual: Predicate | None = None
    """Checked on each record's metadata after the search (the search must over-fetch)."""


def plan(condition: MetadataCondition | None) -> Plan:
    """How to apply a Dify ``metadata_condition``; ``InvalidRequest`` for a bad value."""
    if condition is None or not condition.conditions:
        return Plan()
    parts = [
        _part(c, f"metadata_condition.conditions[{i}]") for i, c in enumerate(condition.conditions)
    ]
    if condition.logical_operator == "or":
        if all(f is not None for f, _ in parts):
            return Plan(filters=_combine("or", [f for f, _ in parts if f is not None]))
        preds = [p for _, p in parts]
        return Plan(residual=lambda meta: any(p(meta) for p in preds))
    translated = [f for f, _ in parts if f is not None]
    rest = [p for f, p in parts if f is None]
    residual: Predicate | None = None
    if rest:
        residual = lambda meta: all(p(meta) for p in rest)  # noqa: E731
    return Plan(filters=_combine("and", translated) if translated else None, residual=residual)


def _part(cond: Condition, param: str) -> tuple[JSONFilter | None, Predicate]:
    """One condition as (a filter, or None when it has none) and its predicate."""
    names = [cond.name] if isinstance(cond.name, str) else list(cond.name)
    pieces = [_one(name, cond.comparison_operator, cond.value, param) for name in names]
    filters = [f for f, _ in pieces]
    preds = [p for _, p in pieces]
    predicate: Predicate = lambda meta: any(p(meta) for p in preds)  # noqa: E731
    if any(f is None for f in filters):
        return None, predicate
    return _combine("or", [f for f in filters if f is not None]), predicate


def _one(name: str, op: str, value: Any, param: str) -> tuple[JSONFilter | None, Predicate]:
    flt: JSONFilter | None = None
    if op in _TEXT:
        flt = {"type": _TEXT[op], "key": name, "value": _scalar(value, param)}
    elif op in _ORDER:
        flt = {"type": _ORDER[op], "key": name, "value": _number(value, param)}
    elif op in _LISTS:
        items = value if isinstance(value, list) else [_scalar(value, param)]
        flt = {"type": _LISTS[op], "key": name, "value": list(items)}
    elif op in _DATES and _is_number(value):
        flt = {"type": _DATES[op], "key": name, "value": _number(value, param)}
    if flt is not None:
        parsed = parse_filter(flt, param)
        return (None if name in RECORD_ONLY_KEYS else flt), lambda meta: matches(parsed, meta)
    return None, _predicate(name, op, value, param)


def _predicate(name: str, op: str, value: Any, param: str) -> Predicate:
    if op in ("empty", "not empty"):
        return lambda meta: (meta.get(name) in (None, "")) == (op == "empty")
    if op in _DATES:
        bound = _instant(value)
        if bound is None:
            raise InvalidRequest(f"'{op}' needs a date or a timestamp.", param=f"{param}.value")
        return lambda meta: _compare_instants(op, meta.get(name), bound)
    needle = str(_scalar(value, param))
    test: Callable[[str], bool] = {
        "contains": lambda text: needle in text,
        "not contains": lambda text: needle in text,
        "start with": lambda text: text.startswith(needle),
        "end with": lambda text: text.endswith(needle),
    }[op]
    negative = op in _NEGATIVE

    def check(meta: Mapping[str, Any]) -> bool:
        actual = meta.get(name)
        if actual is None:
            return negative
        return test(str(actual)) != negative

    return check


def _compare_instants(op: str, actual: Any, bound: float) -> bool:
    seen = _instant(actual)
    if seen is None:
        return False
    return seen < bound if op == "before" else seen > bound


def _instant(value: Any) -> float | None:
    """Seconds since the epoch of a timestamp or an ISO date; None for anything else."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.timestamp()
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: Any, param: str) -> str | int | float:
    if isinstance(value, str) or _is_number(value):
        return value  # type: ignore[no-any-return]
    raise InvalidRequest("This operator needs a string or number 'value'.", param=f"{param}.value")


def _number(value: Any, param: str) -> int | float:
    if _is_number(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return int(number) if number.is_integer() else number
    raise InvalidRequest("This operator needs a numeric 'value'.", param=f"{param}.value")


def _combine(kind: str, filters: Sequence[JSONFilter]) -> JSONFilter:
    return filters[0] if len(filters) == 1 else {"type": kind, "filters": list(filters)}


# --- the other way: an OpenAI filter forwarded to a Dify endpoint -------------------------------

_TO_DIFY_NUMBER = {v: k for k, v in _ORDER.items()}


def to_metadata_condition(filters: JSONFilter) -> JSONFilter | None:
    """Dify's ``metadata_condition`` for an OpenAI filter, or None when Dify cannot say it."""
    flt = parse_filter(filters)
    if isinstance(flt, ComparisonFilter):
        cond = _to_condition(flt)
        return None if cond is None else {"logical_operator": "and", "conditions": [cond]}
    conds = [_to_condition(f) if isinstance(f, ComparisonFilter) else None for f in flt.filters]
    if any(c is None for c in conds):
        return None
    return {"logical_operator": flt.type, "conditions": conds}


def _to_condition(flt: ComparisonFilter) -> JSONFilter | None:
    value = flt.value
    op: str | None = None
    if flt.type in ("in", "nin"):
        op = "in" if flt.type == "in" else "not in"
    elif isinstance(value, str) and flt.type in ("eq", "ne"):
        op = "is" if flt.type == "eq" else "is not"
    elif _is_number(value):
        op = _TO_DIFY_NUMBER[flt.type]
    if op is None:
        return None
    return {
        "name": flt.key,
        "comparison_operator": op,
        "value": list(value) if isinstance(value, tuple) else value,
    }


__all__ = ["Plan", "plan", "to_metadata_condition"]
