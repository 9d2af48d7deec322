"""Helpers shared by the reliability tests (imported as ``reliability.support``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harness import RixinProcess

# Failures never cool a replica down in these servers unless a test asks for it, and a replica
# blocked for a bad upstream key comes back at the next health check.
LENIENT_ROUTER = (
    '{"min_requests_in_window": 100000, "cooldown_s": 0.2, "health_check_interval_s": 0.2}'
)

StartRixin = Callable[..., RixinProcess]
"""The ``start_rixin`` fixture: ``start(models=…, env=…, name=…)`` → a started process."""


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
