"""Fixture documents for the knowledge tests, generated here (no binaries in the repository)."""

from __future__ import annotations

import io
import resource
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def docx_bytes() -> bytes:
    import docx

    d = docx.Document()
    d.core_properties.title = "测试文档"
    d.add_heading("项目概述", level=1)
    d.add_paragraph("本项目提供私有部署的大模型平台。它兼容 OpenAI 的接口！")
    d.add_heading("Features", level=2)
    d.add_paragraph("Chat completions", style="List Bullet")
    d.add_paragraph("Vector stores", style="List Bullet")
    table = d.add_table(rows=2, cols=2)
    for (r, c), text in {(0, 0): "名称", (0, 1): "数量", (1, 0): "苹果", (1, 1): "3"}.items():
        table.cell(r, c).text = text
    d.add_heading("Details", level=2)
    d.add_paragraph("English text after the table.")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def pptx_bytes() -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    p = Presentation()
    s1 = p.slides.add_slide(p.slide_layouts[1])
    s1.shapes.title.text = "季度报告"
    s1.placeholders[1].text = "收入增长百分之二十。\nCosts fell."
    s1.notes_slide.notes_text_frame.text = "Speaker notes here"
    s2 = p.slides.add_slide(p.slide_layouts[5])
    s2.shapes.title.text = "Numbers"
    shape = s2.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1))
    for (r, c), text in {(0, 0): "Region", (0, 1): "Sales", (1, 0): "华东", (1, 1): "42"}.items():
        shape.table.cell(r, c).text = text
    buf = io.BytesIO()
    p.save(buf)
    return buf.getvalue()


def xlsx_bytes() -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "销售"
    ws.append(["产品", "数量"])
    ws.append(["苹果", 3])
    ws.append([None, None])
    ws.append(["Pear", 5])
    costs = wb.create_sheet("Costs")
    costs.append(["Item", "EUR"])
    costs.append(["Rent", 1200])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def pdf_bytes(pages: list[list[str]], *, trailer_extra: str = "") -> bytes:
    """A minimal PDF by hand: latin lines in Helvetica, lines with CJK in STSong (UCS-2)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    first_page = 5
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H "
        b"/DescendantFonts [<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> >>] >>"
    )
    for i, lines in enumerate(pages):
        ops = []
        for j, line in enumerate(lines):
            y = 750 - 20 * j
            if line.isascii():
                esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                ops.append(f"BT /F1 12 Tf 72 {y} Td ({esc}) Tj ET")
            else:
                ops.append(f"BT /F2 12 Tf 72 {y} Td <{line.encode('utf-16-be').hex()}> Tj ET")
        content = "\n".join(ops).encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Contents {first_page + 2 * i + 1} 0 R "
            "/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    return assemble_pdf(objects, trailer_extra=trailer_extra)


def assemble_pdf(objects: list[bytes], *, trailer_extra: str = "", root: int | None = 1) -> bytes:
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    root_entry = f"/Root {root} 0 R " if root else ""
    out += f"trailer\n<< /Size {len(objects) + 1} {root_entry}{trailer_extra}>>\n".encode()
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def rewrite_zip(
    data: bytes, replace: dict[str, bytes], add: dict[str, bytes] | None = None
) -> bytes:
    """A copy of a zip with some members' contents replaced or added."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info)))
        for name, body in (add or {}).items():
            dst.writestr(name, body)
    return buf.getvalue()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Docs:
    """The generators above, handed to tests as the ``docs`` fixture."""

    docx = staticmethod(docx_bytes)
    pptx = staticmethod(pptx_bytes)
    xlsx = staticmethod(xlsx_bytes)
    pdf = staticmethod(pdf_bytes)
    assemble_pdf = staticmethod(assemble_pdf)
    rewrite_zip = staticmethod(rewrite_zip)
    peak_rss_mb = staticmethod(peak_rss_mb)


@pytest.fixture
def docs() -> type[Docs]:
    return Docs


@pytest.fixture
def write(tmp_path: Path) -> Iterator[Callable[[bytes], Path]]:
    """Write bytes under a server-style generated name (the user's name is passed separately)."""
    counter = iter(range(10**6))

    def _write(data: bytes) -> Path:
        path = tmp_path / f"blob-{next(counter)}"
        path.write_bytes(data)
        return path

    yield _write
