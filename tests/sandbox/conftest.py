"""Fixtures for the code interpreter sandbox tests (RELIABILITY §8.6, S1–S8)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rixin.sandbox import SandboxService
from rixin.sandbox.seccomp import SeccompUnavailable, compiled_filter
from sandbox.support import TEST_POLICY


def _missing() -> str | None:
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    try:
        compiled_filter()
    except SeccompUnavailable as exc:
        return str(exc)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[SandboxService]:
    svc = SandboxService(tmp_path / "sandbox", TEST_POLICY)
    try:
        yield svc
    finally:
        await svc.aclose()
