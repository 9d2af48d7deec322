"""Run a real ``rixin serve`` process for end-to-end tests and benchmarks."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_models_dir() -> Path:
    """Packaged models assembled once and shared by every test run on this machine."""
    configured = os.environ.get("RIXIN_TEST_MODELS_DIR")
    return Path(configured) if configured else REPO / ".pytest_cache" / "rixin-models"


@dataclass
class RixinProcess:
    data_dir: Path
    models: list[dict[str, Any]] | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    admin_key: str = field(default_factory=lambda: f"sk-rixin-{secrets.token_urlsafe(32)}")
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def start(self, timeout_s: float = 180.0) -> RixinProcess:
        env = {
            **os.environ,
            "RIXIN_DATA_DIR": str(self.data_dir),
            "RIXIN_MODELS_DIR": str(test_models_dir()),
            "RIXIN_ADMIN_KEY": self.admin_key,
            "RIXIN_PORT": str(self.port),
            "OMP_WAIT_POLICY": "PASSIVE",
            **self.env,
        }
        if self.models is not None:
            env["RIXIN_MODELS"] = json.dumps(self.models)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "server.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rixin", "serve"],
                env=env,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"rixin exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"rixin not ready after {timeout_s} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}
