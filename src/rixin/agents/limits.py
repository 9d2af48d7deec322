"""Why a run stopped short, in each API surface's own words.

The engine records its precise reason (``max_output_tokens``, ``max_tool_calls``) in the run's
``incomplete_details``. OpenAI's enums are narrower: a ``Response`` allows ``max_output_tokens``
or ``content_filter``, an Assistants run ``max_completion_tokens`` or ``max_prompt_tokens``. So
each surface shows the nearest spec value as ``reason`` and keeps ours in the ``rixin``
extension object next to it (``incomplete_details`` is open to additional properties in the
spec, and the official client keeps unknown fields)::

    {"reason": "max_output_tokens", "rixin": {"reason": "max_tool_calls"}}

A tool-call budget is a budget on what the run may produce, hence ``max_output_tokens`` /
``max_completion_tokens``.
"""

from __future__ import annotations

from typing import Any

JSONDict = dict[str, Any]

_RESPONSE_REASONS = {"max_output_tokens", "content_filter"}
_RUN_REASONS = {"max_completion_tokens", "max_prompt_tokens"}
_TO_RESPONSE = {
    "max_completion_tokens": "max_output_tokens",
    "max_tool_calls": "max_output_tokens",
}
_TO_RUN = {
    "max_output_tokens": "max_completion_tokens",
    "max_tool_calls": "max_completion_tokens",
}


def _precise(details: JSONDict | None) -> str | None:
    if not details:
        return None
    ours = details.get("rixin")
    if isinstance(ours, dict) and isinstance(ours.get("reason"), str):
        return str(ours["reason"])
    reason = details.get("reason")
    return str(reason) if reason is not None else None


def _wire(reason: str | None, spec_reason: str) -> JSONDict:
    body: JSONDict = {"reason": spec_reason}
    if reason is not None:
        body["rixin"] = {"reason": reason}
    return body


def response_incomplete(details: JSONDict | None) -> JSONDict | None:
    """A ``Response``'s ``incomplete_details`` for a run's recorded ones (None stays None)."""
    if details is None:
        return None
    reason = _precise(details)
    spec = reason if reason in _RESPONSE_REASONS else _TO_RESPONSE.get(str(reason))
    return _wire(reason, spec or "max_output_tokens")


def run_incomplete(details: JSONDict | None) -> JSONDict:
    """An Assistants run's ``incomplete_details`` (the run is incomplete, so never None)."""
    reason = _precise(details)
    spec = reason if reason in _RUN_REASONS else _TO_RUN.get(str(reason))
    return _wire(reason, spec or "max_completion_tokens")
