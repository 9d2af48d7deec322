"""API key material: generation, hashing, redaction (A7, A8).

A key is ``sk-rixin-`` plus 256 random bits from the OS CSPRNG in base62. Only its SHA-256 is
stored: a key is high-entropy, so a fast hash cannot be brute-forced, and looking a key up by its
hash gives no timing oracle on the secret itself. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from rixin.store.ids import base62

KEY_PREFIX = "sk-rixin-"
KEY_BYTES = 32
MAX_KEY_LENGTH = 256
"""Longer strings are rejected before hashing: no key we issue or accept is that long."""


def generate_key() -> str:
    """A fresh secret API key, e.g. ``sk-rixin-4Fz…`` (52 characters)."""
    return KEY_PREFIX + base62(secrets.token_bytes(KEY_BYTES))


def hash_key(raw: str) -> str:
    """The stored form of a key: lowercase SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def hashes_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two key hashes."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def is_well_formed(raw: str) -> bool:
    """Whether a presented key is worth a lookup (operator-set keys need not carry our prefix)."""
    return 0 < len(raw) <= MAX_KEY_LENGTH and raw.isascii() and raw.isprintable() and " " not in raw


def redact(raw: str) -> str:
    """What may be shown after creation: ``sk-rixin-abc...wxyz`` (never enough to use)."""
    body = raw[len(KEY_PREFIX) :] if raw.startswith(KEY_PREFIX) else raw
    prefix = KEY_PREFIX if raw.startswith(KEY_PREFIX) else ""
    if len(body) < 16:
        return prefix + "..."
    return f"{prefix}{body[:3]}...{body[-4:]}"
