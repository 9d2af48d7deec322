"""Durability of runs: D2 (kill -9 mid-run), D4 (a side effect exactly once), F5, B10."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from harness import REPO, RixinProcess
from scripted_upstream import ScriptedUpstream, call_text

from .conftest import agent_env, agent_models

HERE = Path(__file__).resolve().parent


def test_d4_side_effect_runs_once_across_a_crash(tmp_path: Path) -> None:
    """D4: SIGKILL after the tool's side effect, before its result is recorded; on resume the
    tool is not run again (ledger count = 1) and the run fails with server_error."""
    env = {"PYTHONPATH": f"{REPO / 'src'}"}
    worker = [sys.executable, str(HERE / "d4_worker.py"), str(tmp_path)]
    proc = subprocess.Popen([*worker, "start"], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    ledger = tmp_path / "ledger.txt"
    deadline = time.monotonic() + 30
    while not (ledger.exists() and ledger.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = subprocess.run(
        [*worker, "resume", run_id], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "failed"
    assert result["error"]["code"] == "server_error"
    assert ledger.read_text().splitlines() == [f"{run_id}:call_1"]


def test_f5_disconnect_cancels_generation(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.behaviour.tokens_per_s = 10
    upstream.behaviour.reply = "word " * 200
    stream = client.responses.create(model="fake-chat", input="talk", stream=True)
    response_id = None
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            break
    stream.close()
    assert upstream.stats.wait_cancelled(timeout=1.5)
    assert response_id is not None
    assert _final_status(client, response_id) == "cancelled"


def test_b10_invalid_upstream_chunk_fails_the_response(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.behaviour.invalid_json_after = 2
    response = client.responses.create(model="fake-chat", input="x")
    assert response.status == "failed"
    assert response.error is not None and response.error.code == "server_error"


def test_b10_huge_output_fails_the_response(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    upstream.script = ["x" * 1_100_000]
    with client.responses.create(model="fake-chat", input="x", stream=True) as stream:
        last = [event for event in stream][-1]
    assert last.type == "response.failed"
    assert last.response.error is not None


@pytest.mark.slow
def test_d2_kill9_mid_background_run(
    scripted_upstream: tuple[ScriptedUpstream, str], tmp_path: Path
) -> None:
    """D2: kill -9 while background responses run; after restart none stays in progress beyond
    its lease (resumed or failed with server_error) and no item is duplicated."""
    fake, base_url = scripted_upstream
    fake.reset()
    fake.behaviour.tokens_per_s = 20
    fake.behaviour.reply = "steady " * 20
    server = RixinProcess(tmp_path / "d2", models=agent_models(base_url), env=agent_env())
    ids: list[str] = []
    try:
        for _ in range(2):
            server.start()
            client = openai.OpenAI(base_url=server.api_url, api_key=server.admin_key)
            ids += [
                client.responses.create(model="fake-chat", input=f"r{i}", background=True).id
                for i in range(2)
            ]
            time.sleep(0.6)
            server.stop(signal.SIGKILL)
        server.start()
        client = openai.OpenAI(base_url=server.api_url, api_key=server.admin_key)
        deadline = time.monotonic() + 60
        final: dict[str, Any] = {}
        while time.monotonic() < deadline:
            final = {i: client.responses.retrieve(i) for i in ids}
            if all(r.status not in ("queued", "in_progress") for r in final.values()):
                break
            time.sleep(0.5)
        for response in final.values():
            assert response.status in ("completed", "failed"), response.status
            if response.status == "failed":
                assert response.error is not None and response.error.code == "server_error"
            item_ids = [item.id for item in response.output]
            assert len(item_ids) == len(set(item_ids))
            assert sum(item.type == "message" for item in response.output) <= 1
        headers = server.headers()
        for rid in ids:
            body = httpx.get(f"{server.api_url}/responses/{rid}", headers=headers).json()
            assert body["status"] in ("completed", "failed")
    finally:
        server.stop()
        fake.reset()


def _sandboxed(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return out.stdout.split()


def test_f5_disconnect_during_code_execution_kills_the_sandbox(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """F5 for code execution: the client leaves while the sandbox runs its code; the sandboxed
    process is gone within seconds and the response ends cancelled."""
    marker = f"{3600 + time.monotonic_ns() % 1000}.4242"  # a unique `sleep` argument to look for
    code = f"import subprocess\nsubprocess.run(['/bin/sleep', '{marker}'])"
    upstream.script = [call_text("code_interpreter", code=code), "never reached"]
    stream = client.responses.create(
        model="fake-chat",
        input="Run it.",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
        stream=True,
    )
    response_id = None
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.code_interpreter_call.in_progress":
            break
    deadline = time.monotonic() + 20
    while not _sandboxed(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandboxed(marker), "the sandboxed code never started"
    stream.close()
    deadline = time.monotonic() + 5
    while _sandboxed(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sandboxed(marker) == []
    assert response_id is not None
    assert _final_status(client, response_id) == "cancelled"


def _final_status(client: openai.OpenAI, response_id: str, timeout_s: float = 5.0) -> str:
    """The response's status once it is ``cancelled`` (or whatever it is after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    status = client.responses.retrieve(response_id).status
    while status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
        status = client.responses.retrieve(response_id).status
    return str(status)
