"""Hostile files (RELIABILITY B3 zip bombs, B4 XXE, B5 PDF bombs, B6 fuzzing).

Each is parsed through the sandboxed subprocess and must be answered with a ``ParseError`` of a
clear code quickly, without growing the parent's memory.
"""

from __future__ import annotations

import io
import json
import os
import random
import socket
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rixin.knowledge.parsing import (
    ParsedDocument,
    ParseError,
    ParseLimits,
    parse_file,
    safezip,
    sandbox,
)
from rixin.knowledge.parsing.extractors import extract

Write = Callable[[bytes], Path]
MiB = 1024 * 1024


@contextmanager
def bounded(docs: Any, seconds: float, rss_mb: float = 100) -> Iterator[None]:
    """Assert the block finishes in ``seconds`` and grows the parent's peak RSS < ``rss_mb``."""
    before, start = docs.peak_rss_mb(), time.monotonic()
    yield
    assert time.monotonic() - start < seconds
    assert docs.peak_rss_mb() - before < rss_mb


def rejected(path: Path, filename: str, **limits: Any) -> ParseError:
    with pytest.raises(ParseError) as exc:
        parse_file(path, filename=filename, limits=ParseLimits(**limits))
    return exc.value


def zeros_member(zf: zipfile.ZipFile, name: str, size: int) -> None:
    with zf.open(name, "w") as member:
        chunk = bytes(MiB)
        for _ in range(size // MiB):
            member.write(chunk)


def docx_plus(docs: Any, build: Callable[[zipfile.ZipFile], None]) -> bytes:
    """A real DOCX with extra members written by ``build``."""
    buf = io.BytesIO(docs.docx())
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as zf:
        build(zf)
    return buf.getvalue()


def patch_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite a member's uncompressed size in its local header and central directory."""
    out = bytearray(data)
    raw = name.encode()
    for sig, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        at = out.find(sig + b"")
        while at >= 0:
            n_len = struct.unpack_from("<H", out, at + (26 if sig == b"PK\x03\x04" else 28))[0]
            if out[at + name_at : at + name_at + n_len] == raw:
                struct.pack_into("<I", out, at + size_at, size)
            at = out.find(sig, at + 4)
    return bytes(out)


# --- B3: zip bombs ------------------------------------------------------------------------------


def test_b3_zip_bomb_declared_size(docs: Any, write: Write) -> None:
    data = docx_plus(docs, lambda zf: zeros_member(zf, "word/media/big.bin", 10 * MiB))
    path = write(patch_size(data, "word/media/big.bin", 1024 * MiB))  # claims 1 GiB
    with bounded(docs, 2):
        err = rejected(path, "bomb.docx")
    assert err.code == "too_large" and "declares" in err.message


def test_b3_zip_bomb_compression_ratio(docs: Any, write: Write) -> None:
    path = write(docx_plus(docs, lambda zf: zeros_member(zf, "word/media/z.bin", 100 * MiB)))
    with bounded(docs, 2):
        err = rejected(path, "bomb.docx")
    assert err.code == "too_large" and "ratio" in err.message


def test_b3_limit_enforced_while_inflating(docs: Any) -> None:
    """The counting reader stops at its budget whatever the directory declares."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zeros_member(zf, "a.bin", 8 * MiB)
    with zipfile.ZipFile(buf) as zf, pytest.raises(ParseError) as exc:
        safezip._inflate(zf, zf.getinfo("a.bin"), budget=MiB)
    assert exc.value.code == "too_large"


def test_b3_total_size_cap(docs: Any, write: Write) -> None:
    path = write(docx_plus(docs, lambda zf: zf.writestr("word/media/r.bin", os.urandom(3 * MiB))))
    with bounded(docs, 2):
        err = rejected(path, "a.docx", zip_max_total_bytes=2 * MiB)
    assert err.code == "too_large"


def test_b3_lying_central_directory(docs: Any, write: Write) -> None:
    data = docx_plus(docs, lambda zf: zeros_member(zf, "word/media/lie.bin", 50 * MiB))
    path = write(patch_size(data, "word/media/lie.bin", 1000))  # inflates to 50 MiB, says 1000 B
    with bounded(docs, 2):
        err = rejected(path, "lie.docx")
    assert err.code == "corrupt"


def test_b3_many_entries(docs: Any, write: Write) -> None:
    def build(zf: zipfile.ZipFile) -> None:
        for i in range(20_000):
            zf.writestr(zipfile.ZipInfo(f"word/x{i}"), b"")

    path = write(docx_plus(docs, build))
    with bounded(docs, 2):
        err = rejected(path, "many.docx")
    assert err.code == "too_large" and "entries" in err.message


def test_b3_zip64_many_entries(docs: Any, write: Write) -> None:
    def build(zf: zipfile.ZipFile) -> None:
        for i in range(70_000):  # beyond 0xFFFF: the count lives in the zip64 record
            zf.writestr(zipfile.ZipInfo(f"{i}"), b"")

    data = docx_plus(docs, build)
    assert b"PK\x06\x06" in data[-200:]
    path = write(data)
    with bounded(docs, 2):
        err = rejected(path, "many.xlsx")
    assert err.code == "too_large" and "70" in err.message


def test_b3_nested_archive(docs: Any, write: Write) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as zf:
        zeros_member(zf, "bomb.bin", 5 * MiB)
    by_name = write(docx_plus(docs, lambda zf: zf.writestr("word/inner.zip", inner.getvalue())))
    by_magic = write(docx_plus(docs, lambda zf: zf.writestr("word/media/x.png", inner.getvalue())))
    with bounded(docs, 4):
        assert rejected(by_name, "n.docx").code == "unsupported_file_type"
        assert rejected(by_magic, "n.docx").code == "unsupported_file_type"


def test_b3_embedded_workbook_is_allowed(docs: Any, write: Write) -> None:
    path = write(docx_plus(docs, lambda zf: zf.writestr("word/embeddings/a.xlsx", docs.xlsx())))
    doc = parse_file(path, filename="chart.docx")
    assert doc.blocks[0].text == "项目概述"


def test_b3_docx_renamed_doc(docs: Any, write: Write) -> None:
    doc = parse_file(write(docs.docx()), filename="report.doc")
    assert doc.metadata.format == "docx" and doc.blocks[0].text == "项目概述"
    bomb = docx_plus(docs, lambda zf: zeros_member(zf, "word/media/big.bin", 10 * MiB))
    path = write(patch_size(bomb, "word/media/big.bin", 1024 * MiB))
    with bounded(docs, 2):
        assert rejected(path, "report.doc").code == "too_large"
        assert rejected(path, "report.xlsx").code == "too_large"
        assert rejected(path, "noext").code == "too_large"


# --- B4: XXE and entity expansion ---------------------------------------------------------------


@pytest.fixture
def canary() -> Iterator[socket.socket]:
    """A listener that must never get a connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    yield srv
    with pytest.raises(BlockingIOError):
        srv.accept()
    srv.close()


def _evil_document_xml(port: int) -> bytes:
    laughs = '<!ENTITY l0 "lol">' + "".join(
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
    )
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!DOCTYPE w:document [
  <!ENTITY xxe SYSTEM "file:///etc/passwd">
  <!ENTITY net SYSTEM "http://127.0.0.1:{port}/x">
  {laughs}
]>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:r><w:t>A&xxe;B&net;C&l9;D</w:t></w:r></w:p></w:body></w:document>""".encode()


def _evil_docx(docs: Any, port: int) -> bytes:
    return docs.rewrite_zip(docs.docx(), {"word/document.xml": _evil_document_xml(port)})


def test_b4_docx_xxe_rejected_in_sandbox(docs: Any, write: Write, canary: socket.socket) -> None:
    path = write(_evil_docx(docs, canary.getsockname()[1]))
    with bounded(docs, 2):
        err = rejected(path, "xxe.docx")
    assert err.code == "corrupt" and "DOCTYPE" in err.message
    assert "root:" not in err.message


def test_b4_python_docx_itself_ignores_entities(docs: Any, canary: socket.socket) -> None:
    """Even without our DOCTYPE check, python-docx's parser resolves no entity."""
    import docx
    from lxml import etree

    data = _evil_docx(docs, canary.getsockname()[1])
    with bounded(docs, 2):
        try:
            text = "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)
        except etree.XMLSyntaxError as exc:  # libxml2's entity amplification guard
            text = str(exc)
    assert "root:" not in text and "lol" not in text
    without_laughs = _evil_document_xml(canary.getsockname()[1]).replace(b"&l9;", b"")
    data = docs.rewrite_zip(docs.docx(), {"word/document.xml": without_laughs})
    text = "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)
    assert "root:" not in text and text.startswith("A")


def test_b4_openpyxl_itself_refuses_entities(docs: Any, canary: socket.socket) -> None:
    import openpyxl

    port = canary.getsockname()[1]
    evil = f"""<?xml version="1.0"?><!DOCTYPE sst [<!ENTITY xxe SYSTEM "file:///etc/passwd">
<!ENTITY net SYSTEM "http://127.0.0.1:{port}/">]>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1">
<si><t>&xxe;&net;</t></si></sst>""".encode()
    xlsx = docs.rewrite_zip(docs.xlsx(), {"xl/sharedStrings.xml": evil})
    try:
        wb = openpyxl.load_workbook(io.BytesIO(xlsx), read_only=True, data_only=True)
        values = [
            str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for v in row
        ]
        wb.close()
        assert not any("root:" in v for v in values)
    except Exception as exc:  # defusedxml refuses: fine
        assert "root:" not in str(exc)


def test_b4_html_entities_not_resolved(docs: Any, write: Write, canary: socket.socket) -> None:
    port = canary.getsockname()[1]
    html = (
        f'<!DOCTYPE html [<!ENTITY xxe SYSTEM "file:///etc/passwd">'
        f'<!ENTITY net SYSTEM "http://127.0.0.1:{port}/">]>'
        "<html><body><p>a &xxe; b &net; c</p></body></html>"
    )
    doc = parse_file(write(html.encode()), filename="x.html")
    assert "root:" not in doc.text


# --- B5: PDF bombs ------------------------------------------------------------------------------


def _pdf_with_content(docs: Any, content: bytes, filters: str) -> bytes:
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 3 0 R >> >> >>"
    )
    stream = b"<< /Length %d /Filter %s >>\nstream\n" % (len(content), filters.encode())
    return docs.assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            stream + content + b"\nendstream",
            page,
        ]
    )


def _deflate_zeros(size: int) -> bytes:
    c = zlib.compressobj(9)
    chunk = bytes(MiB)
    return b"".join(c.compress(chunk) for _ in range(size // MiB)) + c.flush()


def _outcome(path: Path, **limits: Any) -> ParsedDocument | ParseError:
    try:
        return parse_file(path, filename="x.pdf", limits=ParseLimits(**limits))
    except ParseError as exc:
        return exc


def test_b5_nested_flatedecode_bomb(docs: Any, write: Write) -> None:
    bomb = zlib.compress(_deflate_zeros(200 * MiB), 9)
    path = write(_pdf_with_content(docs, bomb, "[/FlateDecode /FlateDecode]"))
    with bounded(docs, 10):
        result = _outcome(path)
    assert isinstance(result, ParseError) and result.code in ("too_large", "corrupt")


def test_b5_bomb_stays_under_256_mb_in_the_child(docs: Any, write: Write) -> None:
    """The forked child's own peak RSS (``peak_rss_kb`` of its reply: the fork server's resident
    pages at the fork, then whatever the child grows to) while it refuses a 70 MB bomb."""
    path = write(_pdf_with_content(docs, _deflate_zeros(70 * MiB), "/FlateDecode"))
    request = {"suffix": "pdf", "limits": ParseLimits().to_json()}
    server = sandbox.ForkServer()
    try:
        start = time.monotonic()
        with path.open("rb") as source:
            outcome = server.parse(source.fileno(), request, ParseLimits(), sandbox._Call())
        assert time.monotonic() - start < 10
    finally:
        server.close()
    assert outcome.status == 0
    reply = json.loads(outcome.out)
    assert 0 < reply["peak_rss_kb"] < 256 * 1024


def test_b5_content_operator_bomb_is_killed(docs: Any, write: Write) -> None:
    ops = zlib.compress(b"BT /F1 1 Tf (a) Tj ET\n" * 3_000_000, 9)  # 66 MB of operators
    path = write(_pdf_with_content(docs, ops, "/FlateDecode"))
    with bounded(docs, 10):
        result = _outcome(path, timeout_s=3, max_cpu_s=3)
    assert isinstance(result, ParseError)
    assert result.code in ("timeout", "resource_limit", "too_large")


def test_b5_inline_dct_image_without_end(docs: Any, write: Write) -> None:
    junk = random.Random(5).randbytes(2 * MiB).replace(b"EI", b"xx")
    content = b"BT /F1 12 Tf 72 700 Td (x) Tj ET\nBI /W 900 /H 900 /CS /RGB /BPC 8 /F /DCT ID "
    path = write(_pdf_with_content(docs, zlib.compress(content + junk), "/FlateDecode"))
    with bounded(docs, 10):
        result = _outcome(path)
    assert isinstance(result, (ParsedDocument, ParseError))


def test_b5_missing_root_huge_size(docs: Any, write: Write) -> None:
    objects = [b"<< /Type /Pages /Kids [] /Count 0 >>", b"<< /Foo /Bar >>"]
    data = docs.assemble_pdf(objects, root=None, trailer_extra="/Size 2147483647 ")
    data = data.replace(b"/Size 3 ", b"")
    with bounded(docs, 10):
        result = _outcome(write(data))
    assert isinstance(result, ParseError) and result.code == "corrupt"


def test_b5_malformed_xref_huge_size(docs: Any, write: Write) -> None:
    data = docs.pdf([["xref is lying"]])
    xref_at = data.rindex(b"xref\n")
    data = data[:xref_at] + b"xref\n0 999999999\n0000000000 65535 f \n9999999999 00000 n \n"
    data += b"trailer\n<< /Size 999999999 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref_at
    with bounded(docs, 10):
        result = _outcome(write(data))
    assert isinstance(result, (ParsedDocument, ParseError))


def test_b5_page_tree_cycle(docs: Any, write: Write) -> None:
    data = docs.assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 9 >>",
            b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 9 >>",
        ]  # fmt: skip
    )
    with bounded(docs, 10):
        result = _outcome(write(data))
    assert isinstance(result, (ParsedDocument, ParseError))


# --- B6-lite: random and mutated inputs ---------------------------------------------------------


def _seeds(docs: Any) -> list[tuple[str, bytes]]:
    return [
        ("docx", docs.docx()),
        ("pptx", docs.pptx()),
        ("xlsx", docs.xlsx()),
        ("pdf", docs.pdf([["Hello.", "中文。"], ["two"]])),
        ("html", b"<html><body><h1>x</h1><table><tr><td>1</td></tr></table><ul><li>a</ul>"),
        ("md", b"# t\n\n- a\n\n| x |\n```\ncode\n"),
        ("json", b'{"a": [1, {"b": null}], "c": "\\u4e2d"}'),
        ("csv", b"a,b\n1,2\n"),
        ("txt", "纯文本。".encode("gb18030")),
    ]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buf:
            break
        op, at = rng.random(), rng.randrange(len(buf))
        if op < 0.6:
            buf[at] = rng.randrange(256)
        elif op < 0.8:
            del buf[at : at + rng.randint(1, 64)]
        else:
            buf[at:at] = rng.randbytes(rng.randint(1, 64))
    return bytes(buf)


def test_b6_fuzz_extractors_raise_only_parse_errors(docs: Any) -> None:
    rng = random.Random(20240611)
    seeds = _seeds(docs)
    limits = ParseLimits()
    deadline = time.monotonic() + 5
    runs = 0
    while time.monotonic() < deadline:
        suffix, seed = rng.choice(seeds)
        data = rng.randbytes(rng.randint(0, 512)) if rng.random() < 0.2 else _mutate(rng, seed)
        start = time.monotonic()
        try:
            extract(io.BytesIO(data), suffix=suffix, limits=limits)
        except ParseError:
            pass
        assert time.monotonic() - start < 5, (suffix, data[:64])
        runs += 1
    assert runs > 50
