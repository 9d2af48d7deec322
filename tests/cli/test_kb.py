"""``rixin kb`` against a real server on the packaged models: create, ingest, list, search, ask,
delete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness import RixinProcess
from rixin.cli.main import app

pytestmark = pytest.mark.model

runner = CliRunner()


def kb(server: RixinProcess, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["kb", *args],
        env={
            "RIXIN_BASE_URL": server.api_url,
            "RIXIN_API_KEY": server.admin_key,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        },
    )
    return result.exit_code, result.output


def test_kb_lifecycle(real_server: RixinProcess, tmp_path: Path) -> None:
    code, out = kb(real_server, "create", "cli corpus")
    assert code == 0, out
    found = re.search(r"vs_\w+", out)
    assert found, out
    store_id = found.group()

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "lighthouse.txt").write_text("The Pebble Island lighthouse was built in 1887.")
    (docs / "sub" / "熊猫.md").write_text("# 熊猫\n\n大熊猫几乎只吃竹子。", encoding="utf-8")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not really a pdf")
    (docs / ".hidden").write_text("skipped")
    code, out = kb(real_server, "ingest", store_id, str(docs))
    assert code == 1, out
    assert "1 of 3 failed" in out and "broken.pdf" in out and "invalid_file" in out
    assert "indexing" in out and "lighthouse.txt" not in out.split("failed", 1)[1]

    code, out = kb(real_server, "list")
    assert code == 0, out
    listed = next(line for line in out.splitlines() if store_id in line)
    assert "cli corpus" in listed and "2/3 (1 failed)" in listed

    code, out = kb(real_server, "search", store_id, "大熊猫吃什么", "-n", "1")
    assert code == 0, out
    assert out.startswith("[1] ") and "熊猫.md" in out and "lighthouse.txt" not in out

    code, out = kb(real_server, "ask", store_id, "When was the lighthouse built?", "-n", "1")
    assert code == 0, out
    answer, sources = out.split("Sources", 1)
    assert answer.strip()  # the real model's words are not asserted
    assert re.search(r"^\[1\] lighthouse\.txt \(score \d\.\d{3}\): The Pebble", sources, re.M)

    code, out = kb(real_server, "delete", store_id)
    assert code == 0 and '"deleted": true' in out
    code, out = kb(real_server, "search", store_id, "anything")
    assert code == 1 and "No vector store found" in out and "Traceback" not in out


def test_kb_ingest_into_an_unknown_store_uploads_nothing(
    real_server: RixinProcess, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("text")
    code, out = kb(real_server, "ingest", "vs_missing", str(tmp_path))
    assert code == 1 and "No vector store found" in out
    assert "uploading" not in out


def test_kb_ask_says_when_the_knowledge_base_has_no_answer(real_server: RixinProcess) -> None:
    code, out = kb(real_server, "create", "empty")
    store_id = re.search(r"vs_\w+", out)
    assert code == 0 and store_id, out
    code, out = kb(real_server, "ask", store_id.group(), "蒙娜丽莎是谁画的？")
    assert code == 0, out
    assert out.strip() == "知识库中没有找到这个问题的答案。"
