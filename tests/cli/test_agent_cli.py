"""``rixin agent run`` and ``rixin chat --tools`` against a real server.

Deterministic tool calls come from a scripted fake upstream (the model "calls" ``file_search``
or ``code_interpreter`` on cue); one smoke run uses the packaged model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from typer.testing import CliRunner

from conftest import CHAT_MODEL, fake_models
from harness import RixinProcess
from rixin.cli.main import app
from scripted_upstream import ScriptedUpstream, call_text

runner = CliRunner()
ZORBIA = b"The capital of the kingdom of Zorbia is Quentaville, founded in 1723."


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedUpstream, str]]:
    fake = ScriptedUpstream()
    with fake.serve() as base_url:
        yield fake, base_url


@pytest.fixture(scope="module")
def server(
    scripted: tuple[ScriptedUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RixinProcess]:
    models = fake_models(scripted[1])
    models[0]["capabilities"] = {"constrained_tools": True, "json_schema": True}
    process = RixinProcess(
        tmp_path_factory.mktemp("rixin-agent-cli"),
        models=models,
        env={"RIXIN_AGENTS__MAX_TOOL_ITERATIONS": "1"},
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def upstream(scripted: tuple[ScriptedUpstream, str]) -> Iterator[ScriptedUpstream]:
    fake, _ = scripted
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture(scope="module")
def store(server: RixinProcess) -> str:
    client = openai.OpenAI(base_url=server.api_url, api_key=server.admin_key)
    uploaded = client.files.create(file=("zorbia.txt", ZORBIA), purpose="assistants")
    created = client.vector_stores.create(name="cli", file_ids=[uploaded.id])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        created = client.vector_stores.retrieve(created.id)
        if created.file_counts.in_progress == 0:
            break
        time.sleep(0.3)
    assert created.file_counts.completed == 1
    return created.id


def rixin(server: RixinProcess, *args: str, stdin: str | None = None) -> Any:
    options = ["--base-url", server.api_url, "--api-key", server.admin_key]
    return runner.invoke(app, [*args, *options], input=stdin, env={"NO_COLOR": "1"})


def test_agent_run_prints_file_search_then_the_answer(
    server: RixinProcess, upstream: ScriptedUpstream, store: str
) -> None:
    upstream.script = [call_text("file_search", query="capital of Zorbia"), "Quentaville [1]."]
    result = rixin(
        server,
        "agent",
        "run",
        "What is the capital of Zorbia?",
        "--model",
        "fake-chat",
        "--tools",
        "file_search",
        "--vector-store",
        store,
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert '⚙ file_search: "capital of Zorbia" → 1 result' in lines
    assert "  · zorbia.txt" in result.output
    assert lines[-1] == "Quentaville [1]."
    assert upstream.bodies[-1]["tools"][0]["function"]["name"] == "file_search"


def test_agent_run_prints_code_and_its_output(
    server: RixinProcess, upstream: ScriptedUpstream
) -> None:
    for _attempt in range(2):  # the sandbox's first spawn can fail (reported upstream)
        upstream.script = [call_text("code_interpreter", code="print(6 * 7)"), "It is 42."]
        result = rixin(
            server, "agent", "run", "6*7?", "--model", "fake-chat", "--tools", "code_interpreter"
        )
        if "│ 42" in result.output:
            break
    assert result.exit_code == 0, result.output
    assert "⚙ code_interpreter" in result.output
    assert "│ print(6 * 7)" in result.output
    assert "│ 42" in result.output
    assert result.output.splitlines()[-1] == "It is 42."


def test_agent_run_exits_non_zero_when_incomplete(
    server: RixinProcess, upstream: ScriptedUpstream, store: str
) -> None:
    # the server allows one tool call per run: the second makes the run incomplete
    upstream.behaviour.reply = call_text("file_search", query="again")
    result = rixin(
        server,
        "agent",
        "run",
        "loop",
        "--model",
        "fake-chat",
        "--tools",
        "file_search",
        "--vector-store",
        store,
    )
    assert result.exit_code == 1, result.output
    assert "incomplete: max_tool_calls" in result.output


def test_agent_run_refuses_bad_options(server: RixinProcess) -> None:
    unknown = rixin(server, "agent", "run", "x", "--tools", "web_search")
    assert unknown.exit_code == 2 and "unknown tool 'web_search'" in unknown.output
    lonely = rixin(server, "agent", "run", "x", "--tools", "file_search")
    assert lonely.exit_code == 2 and "--vector-store" in lonely.output
    missing = rixin(server, "agent", "run", "x", "--model", "no-such-model")
    assert missing.exit_code == 1 and "Traceback" not in missing.output


def test_chat_with_tools_chains_responses(
    server: RixinProcess, upstream: ScriptedUpstream, store: str
) -> None:
    upstream.script = [
        call_text("file_search", query="Zorbia"),
        "Quentaville.",
        "It was founded in 1723.",
    ]
    result = rixin(
        server,
        "chat",
        "--model",
        "fake-chat",
        "--tools",
        "file_search",
        "--vector-store",
        store,
        stdin="Capital of Zorbia?\nWhen founded?\n\n",
    )
    assert result.exit_code == 0, result.output
    assert '⚙ file_search: "Zorbia" → 1 result' in result.output
    assert "Quentaville." in result.output and "It was founded in 1723." in result.output
    second = upstream.bodies[-1]["messages"]
    contents = [str(m.get("content")) for m in second]
    assert "Capital of Zorbia?" in contents and "Quentaville." in contents  # previous_response_id
    assert contents[-1] == "When founded?"


@pytest.mark.model
def test_agent_run_on_the_packaged_model(real_server: RixinProcess) -> None:
    result = rixin(real_server, "agent", "run", "Say hello in one short sentence.")
    assert result.exit_code == 0, result.output
    assert result.output.strip()
    assert CHAT_MODEL == "qwen2.5-coder-0.5b-instruct"  # the command's default model
