"""Format detection and one extractor per binary format (PDF, DOCX, PPTX, XLSX).

Runs inside the parser subprocess (``runner``); ``extract`` is the only entry point. The format is
decided by the bytes, the file name's extension only breaks ties between text formats, and the
name itself is never used as a path (RELIABILITY B7). Every library call on untrusted bytes may
raise anything, so ``extract`` maps every exception to a ``ParseError``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from rixin.knowledge.parsing import textformats
from rixin.knowledge.parsing.document import DocumentBuilder, ParsedDocument, table_text
from rixin.knowledge.parsing.errors import ParseError
from rixin.knowledge.parsing.limits import ParseLimits
from rixin.knowledge.parsing.safezip import check_office_zip

Extractor = Callable[[BinaryIO, ParseLimits], ParsedDocument]

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OFFICE_PARTS = {"word/document.xml": "docx", "ppt/presentation.xml": "pptx",
                 "xl/workbook.xml": "xlsx"}  # fmt: skip


def extract(f: BinaryIO, *, suffix: str, limits: ParseLimits) -> ParsedDocument:
    """Parse an open, seekable file; raise only ``ParseError``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _dispatch(f, suffix.lower(), limits)
    except ParseError:
        raise
    except MemoryError as exc:
        raise ParseError("resource_limit", "parser ran out of memory") from exc
    except RecursionError as exc:
        raise ParseError("corrupt", "document structure is nested too deeply") from exc
    except Exception as exc:  # a library failing on hostile bytes, whatever it raises
        detail = f"{type(exc).__name__}: {exc}"[:400]
        raise ParseError("corrupt", f"cannot parse file: {detail}") from exc


def checked_head(f: BinaryIO, limits: ParseLimits, n: int = 8192) -> bytes:
    """The first ``n`` bytes of a file within the size limit and not empty; rewinds ``f``."""
    size = f.seek(0, 2)
    f.seek(0)
    if size > limits.max_file_bytes:
        raise ParseError("too_large", f"file is {size} bytes (limit {limits.max_file_bytes})")
    if size == 0:
        raise ParseError("corrupt", "file is empty")
    head = f.read(n)
    f.seek(0)
    return head


def _dispatch(f: BinaryIO, suffix: str, limits: ParseLimits) -> ParsedDocument:
    head = checked_head(f, limits)
    if b"%PDF-" in head[:1024]:
        return extract_pdf(f, limits)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _extract_office(f, limits)
    if head.startswith(_OLE2):
        if "EncryptedPackage".encode("utf-16-le") in f.read(4 * 1024 * 1024):
            raise ParseError("encrypted", "password-protected Office document")
        raise ParseError("unsupported_file_type", "legacy binary Office format (.doc/.xls/.ppt)")
    return textformats.extract_text_file(f.read(), suffix, limits)


def _extract_office(f: BinaryIO, limits: ParseLimits) -> ParsedDocument:
    names = check_office_zip(f, limits)
    f.seek(0)
    kinds = {fmt for part, fmt in _OFFICE_PARTS.items() if part in names}
    if len(kinds) != 1:
        raise ParseError("unsupported_file_type", "zip archive that is not a DOCX/PPTX/XLSX file")
    return _OFFICE_EXTRACTORS[kinds.pop()](f, limits)


# --- PDF ---------------------------------------------------------------------------------------


def extract_pdf(f: BinaryIO, limits: ParseLimits) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, LimitReachedError

    reader = PdfReader(f, strict=False)
    if reader.is_encrypted:
        try:
            decrypted = reader.decrypt("")
        except (DependencyError, NotImplementedError) as exc:
            raise ParseError("encrypted", "encrypted PDF") from exc
        if not decrypted:
            raise ParseError("encrypted", "password-protected PDF")
    pages = len(reader.pages)
    if pages > limits.max_pages:
        raise ParseError("too_large", f"PDF has {pages} pages (limit {limits.max_pages})")
    b = DocumentBuilder("pdf", limits.max_text_chars)
    try:
        for number, page in enumerate(reader.pages, 1):
            for para in re.split(r"\n\s*\n", page.extract_text() or ""):
                b.add("paragraph", para, page=number)
    except LimitReachedError as exc:
        raise ParseError("too_large", f"PDF stream exceeds pypdf's limits: {exc}") from exc
    meta = reader.metadata
    title = meta.title if meta is not None else None
    return b.build(title=title if isinstance(title, str) else None, pages=pages)


# --- DOCX --------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^(?:heading|标题)\s*([1-9])$", re.IGNORECASE)


def extract_docx(f: BinaryIO, limits: ParseLimits) -> ParsedDocument:
    import docx
    from docx.text.paragraph import Paragraph

    document = docx.Document(f)
    b = DocumentBuilder("docx", limits.max_text_chars)
    items: list[str] = []

    def flush_list() -> None:
        if items:
            b.add("list", "\n".join(items))
            items.clear()

    for part in document.iter_inner_content():
        if not isinstance(part, Paragraph):
            flush_list()
            b.add("table", table_text(_docx_rows(part, limits)))
            continue
        style = part.style.name if part.style is not None else ""
        level = _docx_heading_level(style or "")
        if level:
            flush_list()
            b.heading(part.text, level)
        elif _docx_is_list(part, style or ""):
            if part.text.strip():
                items.append("- " + " ".join(part.text.split()))
        else:
            flush_list()
            b.add("paragraph", part.text)
    flush_list()
    return b.build(title=document.core_properties.title or None)


def _docx_heading_level(style: str) -> int | None:
    if style.lower() == "title":
        return 1
    m = _HEADING_STYLE.match(style.strip())
    return int(m.group(1)) if m else None


def _docx_is_list(paragraph: Any, style: str) -> bool:
    ppr = paragraph._p.pPr
    return style.lower().startswith("list") or (ppr is not None and ppr.numPr is not None)


def _docx_rows(table: Any, limits: ParseLimits) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in table.rows:
        if len(rows) >= limits.max_table_rows:
            raise ParseError("too_large", f"table has over {limits.max_table_rows} rows")
        cells: list[str] = []
        last = None
        for cell in row.cells[: limits.max_columns]:
            if cell._tc is not last:  # a merged cell repeats; keep it once
                cells.append(cell.text)
            last = cell._tc
        rows.append(cells)
    return rows


# --- PPTX --------------------------------------------------------------------------------------


def extract_pptx(f: BinaryIO, limits: ParseLimits) -> ParsedDocument:
    from pptx import Presentation

    presentation = Presentation(f)
    b = DocumentBuilder("pptx", limits.max_text_chars)
    slides = 0
    for number, slide in enumerate(presentation.slides, 1):
        if number > limits.max_pages:
            raise ParseError("too_large", f"presentation has over {limits.max_pages} slides")
        slides = number
        b.reset_headings()
        title = slide.shapes.title
        if title is not None and title.has_text_frame:
            b.heading(title.text_frame.text, 1, page=number)
        title_id = title.shape_id if title is not None else None
        for shape in _pptx_shapes(slide.shapes, depth=0):
            if shape.shape_id == title_id:
                continue
            if shape.has_text_frame:
                lines = [p.text for p in shape.text_frame.paragraphs]
                b.add("paragraph", "\n".join(lines), page=number)
            elif getattr(shape, "has_table", False) and shape.has_table:
                rows = [[c.text for c in r.cells][: limits.max_columns] for r in shape.table.rows]
                b.add("table", table_text(rows), page=number)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            b.add("paragraph", slide.notes_slide.notes_text_frame.text, page=number)
    return b.build(title=presentation.core_properties.title or None, pages=slides)


def _pptx_shapes(shapes: Any, depth: int) -> Iterator[Any]:
    for shape in shapes:
        if hasattr(shape, "shapes") and depth < 16:  # a group
            yield from _pptx_shapes(shape.shapes, depth + 1)
        else:
            yield shape


# --- XLSX --------------------------------------------------------------------------------------


def extract_xlsx(f: BinaryIO, limits: ParseLimits) -> ParsedDocument:
    import openpyxl

    workbook = openpyxl.load_workbook(f, read_only=True, data_only=True)
    b = DocumentBuilder("xlsx", limits.max_text_chars)
    rows_left = limits.max_table_rows
    try:
        for sheet in workbook.worksheets:
            b.reset_headings()
            b.heading(sheet.title, 1)
            sheet.reset_dimensions()  # never trust the declared dimension (pads every row)
            rows: list[list[str]] = []
            for values in sheet.iter_rows(max_col=limits.max_columns, values_only=True):
                cells = ["" if v is None else str(v) for v in values]
                while cells and not cells[-1]:
                    cells.pop()
                if not cells:
                    continue
                rows_left -= 1
                if rows_left < 0:
                    raise ParseError("too_large", f"workbook has over {limits.max_table_rows} rows")
                rows.append(cells)
            b.add("table", table_text(rows))
    finally:
        workbook.close()
    return b.build(title=workbook.properties.title or None)


_OFFICE_EXTRACTORS: dict[str, Extractor] = {
    "docx": extract_docx,
    "pptx": extract_pptx,
    "xlsx": extract_xlsx,
}
