"""D2 (small variant): kill -9 mid-run three times; after each restart no run is stuck, and no
assistant message or run step is duplicated. F5: a client leaving a run stream cancels the run."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import openai
import pytest

from harness import RixinProcess
from scripted_upstream import ScriptedUpstream, call_text

from .conftest import ENV, assistant_models, beta_client

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SETTLED = {"completed", "failed", "cancelled", "incomplete", "expired", "requires_action"}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def wait_settled(client: openai.OpenAI, thread_id: str, run_id: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status
        if status in SETTLED:
            return status
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still active after {timeout} s")


def test_d2_kill_mid_run_resumes_or_fails_without_duplicates(
    tmp_path: Path, scripted: tuple[ScriptedUpstream, str]
) -> None:
    fake, base_url = scripted
    fake.reset()
    server = RixinProcess(tmp_path / "d2", models=assistant_models(base_url), env=ENV)
    server.start()
    try:
        client = beta_client(server)
        assistant = client.beta.assistants.create(model="fake-chat", tools=[WEATHER])
        runs: list[tuple[str, str]] = []
        for attempt in range(3):
            fake.reset()
            fake.behaviour.tokens_per_s = 8
            fake.behaviour.reply = "slow words " * 10
            if attempt == 1:  # a tool-call step is recorded before the kill
                fake.script = [call_text("get_weather")]
            thread = client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
            run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
            runs.append((thread.id, run.id))
            deadline = time.monotonic() + 10
            while client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            if attempt == 1:
                status = wait_settled(client, thread.id, run.id)
                assert status == "requires_action"
                call = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
                assert call.required_action is not None
                tool_call = call.required_action.submit_tool_outputs.tool_calls[0]
                client.beta.threads.runs.submit_tool_outputs(
                    run.id,
                    thread_id=thread.id,
                    tool_outputs=[{"tool_call_id": tool_call.id, "output": "ok"}],
                )
            time.sleep(0.5 + 0.3 * attempt)
            server.stop(signal.SIGKILL)
            fake.behaviour.tokens_per_s = 200
            server.start()
            client = beta_client(server)
        for thread_id, run_id in runs:
            status = wait_settled(client, thread_id, run_id)
            run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
            assert status in ("completed", "failed"), status
            if status == "failed":
                assert run.last_error is not None and run.last_error.code == "server_error"
            messages = client.beta.threads.messages.list(thread_id, limit=100).data
            produced = [m for m in messages if m.run_id == run_id]
            assert len(produced) <= 1 + 1, [m.id for m in produced]
            assert not [k for k, n in Counter(m.id for m in messages).items() if n > 1]
            steps = client.beta.threads.runs.steps.list(run_id=run_id, thread_id=thread_id).data
            assert len({s.id for s in steps}) == len(steps)
            kinds = Counter(s.type for s in steps)
            assert kinds["message_creation"] == len(produced)
            assert kinds["message_creation"] <= 1
    finally:
        server.stop()


def test_f5_disconnect_from_a_run_stream_cancels_the_run(
    client: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    """F5 for Assistants: the client closes a streamed run after its first token; the upstream
    sees the cancellation within ~1 s and the run ends ``cancelled``."""
    upstream.behaviour.tokens_per_s = 10
    upstream.behaviour.reply = "word " * 200
    assistant = client.beta.assistants.create(model="fake-chat", name="f5")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "talk"}])
    stream = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, stream=True
    )
    run_id = None
    for event in stream:
        if event.event == "thread.run.created":
            run_id = event.data.id
        if event.event == "thread.message.delta":
            break
    stream.close()
    assert upstream.stats.wait_cancelled(timeout=1.5)
    assert run_id is not None
    final = client.beta.threads.runs.poll(run_id, thread_id=thread.id, poll_interval_ms=100)
    assert final.status == "cancelled"
