"""The ``rixin`` command against real data dirs and a real server in front of the fake upstream."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from typer.testing import CliRunner

from harness import RixinProcess
from rixin.cli.main import app

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(app, ["keys", "create", "--name", "ci", *data])
    assert created.exit_code == 0, created.output
    key = re.search(r"sk-rixin-\w+", created.output)
    key_id = re.search(r"key_\w+", created.output)
    assert key and key_id
    assert (tmp_path / "admin-key").stat().st_mode & 0o777 == 0o600

    listed = runner.invoke(app, ["keys", "list", *data])
    assert listed.exit_code == 0 and key_id.group() in listed.output
    assert key.group() not in listed.output  # shown once, then only redacted

    revoked = runner.invoke(app, ["keys", "revoke", key_id.group(), *data])
    assert revoked.exit_code == 0, revoked.output


def test_models_list(fake_server: RixinProcess) -> None:
    result = runner.invoke(
        app,
        ["models", "list", "--base-url", fake_server.api_url, "--api-key", fake_server.admin_key],
    )
    assert result.exit_code == 0, result.output
    assert "fake-chat" in result.output and "fake-embed" in result.output


def test_models_list_with_a_bad_key_fails_cleanly(fake_server: RixinProcess) -> None:
    result = runner.invoke(
        app, ["models", "list", "--base-url", fake_server.api_url, "--api-key", "sk-rixin-bad"]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output


def test_chat_repl_streams_and_keeps_history(fake_server: RixinProcess) -> None:
    env = {**os.environ, "RIXIN_API_KEY": fake_server.admin_key, "NO_COLOR": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rixin",
            "chat",
            "--model",
            "fake-chat",
            "--base-url",
            fake_server.api_url,
            "--system",
            "be brief",
        ],
        input="hello\nand again\n\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("fake upstream") == 2


def test_serve_prints_where_the_generated_admin_key_is(tmp_path: Path) -> None:
    server = RixinProcess(tmp_path, models=[])
    server.env["RIXIN_ADMIN_KEY"] = ""  # unset: a key is generated
    server.start()
    try:
        key_file = tmp_path / "admin-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert str(key_file) in server.logs()
        key = key_file.read_text().strip()
        assert httpx.get(f"{server.api_url}/models", headers=server.headers(key)).status_code == 200
    finally:
        assert server.stop() == 0
