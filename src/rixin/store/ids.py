"""Public identifiers: ``<prefix>_<token>`` with 128 random bits from the OS CSPRNG (A8).

IDs name objects in URLs and lists; they are not secrets, but they must not be guessable so that
an enumeration never stumbles on another tenant's object. Nothing is derived from anything else.
"""

from __future__ import annotations

import secrets

ID_BYTES = 16
"""128 bits: the floor RELIABILITY.md A8 sets for every identifier and key."""

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(data: bytes) -> str:
    """Encode bytes as base62 of a fixed width for their length (no padding characters)."""
    number = int.from_bytes(data, "big")
    width = _base62_width(len(data))
    digits = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    return "".join(reversed(digits))


def _base62_width(nbytes: int) -> int:
    width, capacity = 0, 1
    while capacity < 256**nbytes:
        capacity *= 62
        width += 1
    return width


def new_id(prefix: str) -> str:
    """A fresh identifier such as ``proj_3kTMd…`` (``prefix`` with or without the ``_``)."""
    return f"{prefix.rstrip('_')}_{base62(secrets.token_bytes(ID_BYTES))}"
