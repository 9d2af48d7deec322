"""Shared engine fixtures: the packaged 0.5B GGUF, assembled once and reused across runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rixin.engines import packaged
from rixin.errors import ModelUnavailable

FAST_MODEL = "qwen2.5-coder-0.5b-instruct-q4"


@pytest.fixture(scope="session")
def rixin_test_models_dir(request: pytest.FixtureRequest) -> Path:
    """``RIXIN_TEST_MODELS_DIR``, else ``.pytest_cache/rixin-models`` (as ``tests/harness.py``):
    packaged models are assembled once per machine and stamp-checked on later runs."""
    configured = os.environ.get("RIXIN_TEST_MODELS_DIR")
    if configured:
        return Path(configured)
    return Path(request.config.rootpath) / ".pytest_cache" / "rixin-models"


@pytest.fixture(scope="session")
def fast_model_path(rixin_test_models_dir: Path) -> Path:
    try:
        return packaged.assemble(FAST_MODEL, rixin_test_models_dir)
    except ModelUnavailable as exc:
        pytest.skip(f"packaged test model unavailable: {exc.message}")
