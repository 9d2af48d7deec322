"""Every format end to end through the parser subprocess; sandbox limits; error mapping."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rixin.errors import InvalidRequest
from rixin.knowledge.parsing import (
    ParsedDocument,
    ParseError,
    ParseLimits,
    last_error,
    openai_error_code,
    parse_file,
    parse_file_async,
    sandbox,
)
from rixin.knowledge.parsing.sandbox import extension_hint

Write = Callable[[bytes], Path]


def parse(write: Write, data: bytes, filename: str, **limits: object) -> ParsedDocument:
    return parse_file(write(data), filename=filename, limits=ParseLimits(**limits))  # type: ignore[arg-type]


def kinds(doc: ParsedDocument) -> list[tuple[str, str]]:
    return [(b.kind, b.text) for b in doc.blocks]


def test_docx_headings_lists_tables_chinese(write: Write, docs: Any) -> None:
    doc = parse(write, docs.docx(), "报告.docx")
    assert doc.metadata.format == "docx" and doc.metadata.title == "测试文档"
    assert kinds(doc)[:5] == [
        ("heading", "项目概述"),
        ("paragraph", "本项目提供私有部署的大模型平台。它兼容 OpenAI 的接口！"),
        ("heading", "Features"),
        ("list", "- Chat completions\n- Vector stores"),
        ("table", "| 名称 | 数量 |\n| 苹果 | 3 |"),
    ]
    assert doc.blocks[4].heading_path == ("项目概述", "Features")
    assert doc.blocks[-1].heading_path == ("项目概述", "Details")


def test_pptx_slide_titles_tables_notes(write: Write, docs: Any) -> None:
    doc = parse(write, docs.pptx(), "deck.pptx")
    assert doc.metadata.pages == 2
    assert ("heading", "季度报告") in kinds(doc)
    assert ("paragraph", "Speaker notes here") in kinds(doc)
    table = next(b for b in doc.blocks if b.kind == "table")
    assert table.text == "| Region | Sales |\n| 华东 | 42 |"
    assert table.page == 2 and table.heading_path == ("Numbers",)


def test_xlsx_sheets_as_headings_rows_as_tables(write: Write, docs: Any) -> None:
    doc = parse(write, docs.xlsx(), "book.xlsx")
    assert kinds(doc) == [
        ("heading", "销售"),
        ("table", "| 产品 | 数量 |\n| 苹果 | 3 |\n| Pear | 5 |"),
        ("heading", "Costs"),
        ("table", "| Item | EUR |\n| Rent | 1200 |"),
    ]


def test_xlsx_row_cap(write: Write, docs: Any) -> None:
    with pytest.raises(ParseError) as exc:
        parse(write, docs.xlsx(), "book.xlsx", max_table_rows=3)
    assert exc.value.code == "too_large"


def test_pdf_pages_and_chinese(write: Write, docs: Any) -> None:
    doc = parse(write, docs.pdf([["Hello world.", "中文测试。"], ["Page two"]]), "a.pdf")
    assert doc.metadata.pages == 2
    assert [(b.page, b.text) for b in doc.blocks] == [
        (1, "Hello world.\n中文测试。"),
        (2, "Page two"),
    ]


def test_pdf_encrypted(write: Write, docs: Any) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(docs.pdf([["secret text"]]))))
    writer.encrypt(user_password="pw", owner_password="owner", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(ParseError) as exc:
        parse(write, buf.getvalue(), "locked.pdf")
    assert exc.value.code == "encrypted"


def test_html_drops_scripts_keeps_structure(write: Write) -> None:
    html = (
        "<!DOCTYPE html><html><head><title>标题页</title><style>p{}</style></head><body>"
        "<script>alert('x')</script><h1>欢迎</h1><p>第一段。<b>加粗</b></p>"
        "<div>loose <a href='#'>link</a> text<h2>Sub</h2><ul><li>one</li><li>二</li></ul></div>"
        "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
        "<pre>x = 1\n  y = 2</pre></body></html>"
    )
    doc = parse(write, html.encode(), "page.html")
    assert doc.metadata.title == "标题页"
    assert kinds(doc) == [
        ("heading", "欢迎"),
        ("paragraph", "第一段。加粗"),
        ("paragraph", "loose link text"),
        ("heading", "Sub"),
        ("list", "- one\n- 二"),
        ("table", "| a | b |\n| 1 | 2 |"),
        ("code", "x = 1\n  y = 2"),
    ]
    assert doc.blocks[4].heading_path == ("欢迎", "Sub")


def test_markdown_structure(write: Write) -> None:
    md = "# 标题\n\n你好，世界。\n\n## Sub\n\n- a\n- b\n\n| x | y |\n|---|---|\n"
    md += "\n```py\ncode()\n```\n"
    doc = parse(write, md.encode(), "notes.md")
    assert kinds(doc) == [
        ("heading", "标题"),
        ("paragraph", "你好，世界。"),
        ("heading", "Sub"),
        ("list", "- a\n- b"),
        ("table", "| x | y |\n|---|---|"),
        ("code", "code()"),
    ]
    assert doc.blocks[3].heading_path == ("标题", "Sub")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
def test_txt_encodings(write: Write, encoding: str) -> None:
    text = "第一段：中文内容。\n\nSecond paragraph."
    doc = parse(write, text.encode(encoding), "a.txt")
    assert kinds(doc) == [("paragraph", "第一段：中文内容。"), ("paragraph", "Second paragraph.")]


def test_csv_as_table(write: Write) -> None:
    doc = parse(write, "name;qty\n苹果;3\n".encode(), "t.csv")
    assert kinds(doc) == [("table", "| name | qty |\n| 苹果 | 3 |")]


def test_json_key_paths(write: Write) -> None:
    data = {"user": {"name": "张三", "tags": ["a", "b"]}, "n": 1}
    doc = parse(write, json.dumps(data, ensure_ascii=False).encode(), "data.json")
    assert kinds(doc) == [
        ("heading", "user"),
        ("paragraph", 'user.name: "张三"\nuser.tags[0]: "a"\nuser.tags[1]: "b"'),
        ("heading", "n"),
        ("paragraph", "n: 1"),
    ]


def test_content_decides_not_the_name(write: Write, docs: Any) -> None:
    doc = parse(write, docs.docx(), "report.txt")
    assert doc.metadata.format == "docx"
    doc = parse(write, b"<!DOCTYPE html><html><body><h1>Hi</h1></body></html>", "noext")
    assert doc.metadata.format == "html"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100), "unsupported_file_type"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "unsupported_file_type"),
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + "EncryptedPackage".encode("utf-16-le"),
            "encrypted",
        ),
        (b"", "corrupt"),
        (b"%PDF-1.7\n garbage", "corrupt"),
        (b"PK\x03\x04 not really a zip", "corrupt"),
        (b'{"unterminated": ', "corrupt"),
    ],
)
def test_rejections(write: Write, data: bytes, code: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse(write, data, "x.json" if data.startswith(b"{") else "x.bin")
    assert exc.value.code == code


def test_plain_zip_is_unsupported(write: Write) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ParseError) as exc:
        parse(write, buf.getvalue(), "a.docx")
    assert exc.value.code == "unsupported_file_type"


async def test_async_parse_keeps_the_loop_free(write: Write, hook: Hook) -> None:
    slow = "{'ok': False, 'code': 'corrupt', 'message': 'slow'}"
    hook(f"import time\ntime.sleep(0.5)\nprint(json.dumps({slow}))")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    with pytest.raises(ParseError, match="slow"):
        await parse_file_async(write(b"x"), filename="a.txt")
    ticker.cancel()
    assert ticks > 10  # ~50 if the loop ran freely for the child's 0.5 s


def test_sync_parse_from_worker_thread(write: Write) -> None:
    path = write(b"hello")
    result: list[ParsedDocument] = []
    t = threading.Thread(target=lambda: result.append(parse_file(path, filename="a.txt")))
    t.start()
    t.join(10)
    assert result[0].blocks[0].text == "hello"


# --- B7: the user's name is a hint, never a path ------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "a\x00b.md", "..\\..\\x.md", "%2e%2e%2f.md", "x" * 4096],
)
def test_b7_filename_is_only_a_type_hint(write: Write, name: str) -> None:
    doc = parse(write, b"# safe\n\ncontent", name)
    assert doc.blocks[-1].text == "content"


def test_b7_extension_hint() -> None:
    assert extension_hint("../../报告.DOCX") == "docx"
    assert extension_hint("a/b.tar.gz") == "gz"
    assert extension_hint("noext") == extension_hint("x.\u2024md") == ""
    assert extension_hint("a.md/../../etc") == ""


# --- the sandbox really confines the child -------------------------------------------------------

_HOOK = """
import json, sys
from rixin.knowledge.parsing import forkserver, runner
from rixin.knowledge.parsing.limits import ParseLimits

def hostile(argv):
    runner.apply_limits(ParseLimits.from_json(json.loads(argv[1])["limits"]))
{body}
    return 0

runner.main = hostile
sys.exit(forkserver.main(sys.argv))
"""


Hook = Callable[[str], None]


@pytest.fixture
def hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    """Swap in a fork server whose children run ``body`` (after the real limits) instead of
    the parser: the confinement is the fork server's, whatever the child then does."""
    servers: list[sandbox.ForkServer] = []

    def hook(body: str) -> None:
        code = _HOOK.format(body=textwrap.indent(body, "    "))
        server = sandbox.ForkServer(lambda: [sys.executable, "-I", "-B", "-c", code])
        servers.append(server)
        monkeypatch.setattr(sandbox, "_SERVER", server)

    yield hook
    for server in servers:
        server.close()


def test_wall_clock_timeout_kills_the_process_group(
    write: Write, hook: Hook, tmp_path: Path
) -> None:
    hook("import time\nwhile True: time.sleep(0.01)")
    start = time.monotonic()
    with pytest.raises(ParseError) as exc:
        parse(write, b"x", "a.txt", timeout_s=1.0)
    assert exc.value.code == "timeout"
    assert time.monotonic() - start < 3


def test_cpu_limit_kills_a_spinning_child(write: Write, hook: Hook) -> None:
    hook("while True: pass")
    start = time.monotonic()
    with pytest.raises(ParseError) as exc:
        parse(write, b"x", "a.txt", max_cpu_s=1, timeout_s=20)
    assert exc.value.code == "resource_limit"
    assert time.monotonic() - start < 5


def test_memory_limit_stops_an_allocating_child(write: Write, hook: Hook) -> None:
    hook("blocks = []\nwhile True: blocks.append(bytearray(50 * 2**20))")
    with pytest.raises(ParseError) as exc:
        parse(write, b"x", "a.txt", max_memory_bytes=512 * 2**20)
    assert exc.value.code == "resource_limit"


def test_child_cannot_write_files(write: Write, hook: Hook, tmp_path: Path) -> None:
    target = tmp_path / "leak"
    hook(
        f"""
import errno
try:
    with open({str(target)!r}, "wb") as f:
        f.write(b"x" * 10)
    print(json.dumps({{"ok": False, "code": "corrupt", "message": "wrote"}}))
except OSError as e:
    print(json.dumps({{"ok": False, "code": "corrupt", "message": errno.errorcode[e.errno]}}))
""",
    )
    with pytest.raises(ParseError) as exc:
        parse(write, b"x", "a.txt")
    assert exc.value.message == "EFBIG"
    assert not target.exists() or target.stat().st_size == 0


def test_child_output_is_bounded(write: Write, hook: Hook) -> None:
    hook("sys.stdout.write('x' * 5_000_000)")
    with pytest.raises(ParseError) as exc:
        parse(write, b"x", "a.txt", max_output_bytes=1_000_000)
    assert exc.value.code == "too_large"


def test_child_gets_no_server_environment(
    write: Write, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIXIN_SECRET", "s3cret")
    hook(
        "import os\nprint(json.dumps({'ok': False, 'code': 'corrupt', "
        "'message': ','.join(sorted(os.environ))}))",
    )
    with pytest.raises(ParseError) as exc:
        parse(write, b"x", "a.txt")
    assert "RIXIN_SECRET" not in exc.value.message


def test_a_dead_fork_server_is_replaced(write: Write) -> None:
    server = sandbox.ForkServer()
    try:
        path = write(b"first file")
        assert "first" in server_parse(server, path).text
        assert server._proc is not None
        first = server._proc.pid
        os.kill(first, signal.SIGKILL)
        server._proc.wait()
        assert "first" in server_parse(server, path).text
        assert server._proc.pid != first
    finally:
        server.close()


def test_a_cancelled_parse_kills_its_child(write: Write, hook: Hook) -> None:
    hook("import time\ntime.sleep(60)")

    async def cancel_mid_parse() -> None:
        task = asyncio.create_task(parse_file_async(write(b"x"), filename="a.txt"))
        deadline = time.monotonic() + 10
        calls = sandbox._SERVER._calls
        while not calls or not all(call.pid for _, call in calls.values()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        pid = next(iter(calls.values()))[1].pid
        assert pid is not None and _alive(pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        while _alive(pid):  # at once, not when the parse's wall clock runs out
            assert time.monotonic() < deadline, "the parser child outlived its cancelled request"
            await asyncio.sleep(0.05)

    asyncio.run(cancel_mid_parse())


def server_parse(server: sandbox.ForkServer, path: Path) -> ParsedDocument:
    request = {"suffix": "txt", "limits": ParseLimits().to_json()}
    with path.open("rb") as source:
        outcome = server.parse(source.fileno(), request, ParseLimits(), sandbox._Call())
    return sandbox._reply(
        outcome.status, outcome.out, outcome.err, lambda r: ParsedDocument.from_json(r["document"])
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- errors -------------------------------------------------------------------------------------


def test_parse_error_maps_to_openai_last_error() -> None:
    err = ParseError("encrypted", "password-protected PDF")
    assert isinstance(err, InvalidRequest)
    assert last_error(err) == {
        "code": "invalid_file",
        "message": "encrypted: password-protected PDF",
    }
    assert openai_error_code("unsupported_file_type") == "unsupported_file"
    assert openai_error_code("timeout") == "server_error"
    assert err.body()["error"]["code"] == "encrypted"
