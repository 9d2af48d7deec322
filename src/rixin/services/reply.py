"""What a generation service hands back to its route: a body or an SSE stream, and who served it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Reply:
    content: dict[str, Any] | AsyncIterator[bytes]
    replica: str
    """The deployment that served the request (sent as ``x-rixin-replica``)."""
