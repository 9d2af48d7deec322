"""Helpers shared by the reliability tests (imported as ``reliability.support``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import RixinProcess

# Failures never cool a replica down in these servers unless a test asks for it, and a replica
# blocked for a bad upstream key comes back at the next health check.
LENIENT_ROUTER = (
    '{"min_requests_in_window": 100000, "cooldown_s": 0.2, "health_check_interval_s": 1.0}'
)

StartRixin = Callable[..., RixinProcess]
"""The ``start_rixin`` fixture: ``start(models=…, env=…, name=…)`` → a started process."""


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def app_routes() -> list[tuple[str, str, Any]]:
    """Every (method, path, route) the app serves, flattened out of included routers.

    Built from ``create_app(...)`` itself, so a route added anywhere is enumerated here.
    """
    from rixin.app import create_app
    from rixin.settings import Settings

    app = create_app(Settings(data_dir=Path("unused-data-dir"), models=[]))
    found: list[tuple[str, str, Any]] = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for ctx in contexts():
                found.extend((m, ctx.path, ctx.original_route) for m in sorted(ctx.methods))
        else:
            methods = getattr(route, "methods", None) or {"GET"}
            found.extend((m, route.path, route) for m in sorted(methods))
    return [(m, p, r) for m, p, r in found if m != "HEAD"]
