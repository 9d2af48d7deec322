"""FAQ files (SenseNova's ``qa_lst`` shape): a standard question, similar questions, an answer.

Runs inside the parser subprocess like every extractor (the file is untrusted); ``extract_faq``
is the entry point and raises only ``ParseError``. Accepted files:

* CSV/TSV or XLSX with a header row naming the columns ``question`` (``std_q``, 标准问题),
  ``similar_questions`` (``simi_qs``, 相似问题, optional) and ``answer`` (答案); the similar
  questions of one cell are separated by newlines, ``|``, ``;`` or ``；``. Every sheet of a
  workbook has its own header row.
* JSON: ``{"qa_lst": [{"std_q": …, "simi_qs": […], "answer": …}, …]}`` or a list of such
  objects; ``question`` / ``similar_questions`` are accepted as keys too.

A malformed file fails with ``invalid_faq`` and a message naming the row or entry and the field.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from rixin.knowledge.parsing.errors import ParseError
from rixin.knowledge.parsing.extractors import checked_head
from rixin.knowledge.parsing.limits import ParseLimits

MAX_SIMILAR = 100
"""Similar questions per entry."""
MAX_QUESTION_CHARS = 300
"""Longer questions would not fit the embedding model's input (512 tokens for e5)."""

_COLUMNS = {
    "question": ("question", "stdq", "standardquestion", "问题", "标准问题", "标准问", "主问题"),
    "similar": (
        "similarquestions",
        "similarquestion",
        "simiqs",
        "相似问题",
        "相似问",
        "相似问法",
        "扩展问题",
    ),
    "answer": ("answer", "答案", "回答", "标准答案"),
}
_ROLE = {alias: role for role, aliases in _COLUMNS.items() for alias in aliases}
_KEYS = {
    "question": ("std_q", "question", "standard_question"),
    "similar": ("simi_qs", "similar_questions"),
    "answer": ("answer",),
}
_SEPARATORS = re.compile(r"[\n|;；]+")
_HEADER_NOISE = re.compile(r"[\s_\-]+")
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


@dataclass(frozen=True, slots=True)
class FaqEntry:
    """One question-answer pair of a FAQ knowledge base."""

    question: str
    similar: tuple[str, ...]
    answer: str

    @property
    def questions(self) -> tuple[str, ...]:
        """The standard question first, then the similar ones."""
        return (self.question, *self.similar)


def faq_to_json(entries: Iterable[FaqEntry]) -> list[list[Any]]:
    return [[e.question, list(e.similar), e.answer] for e in entries]


def faq_from_json(data: Any) -> list[FaqEntry]:
    """Rebuild from ``faq_to_json``, checking every field (the data crossed a process edge)."""
    if not isinstance(data, list):
        raise TypeError("FAQ entries must be a list")
    entries: list[FaqEntry] = []
    for item in data:
        question, similar, answer = item
        if not isinstance(question, str) or not isinstance(answer, str) or not question:
            raise TypeError("bad FAQ entry")
        if not isinstance(similar, list) or not all(isinstance(s, str) for s in similar):
            raise TypeError("bad similar questions")
        entries.append(FaqEntry(question, tuple(similar), answer))
    return entries


def extract_faq(f: BinaryIO, *, suffix: str, limits: ParseLimits) -> list[FaqEntry]:
    """The entries of an open FAQ file; raises only ``ParseError``."""
    try:
        entries = _dispatch(f, suffix.lower(), limits)
    except ParseError:
        raise
    except MemoryError as exc:
        raise ParseError("resource_limit", "parser ran out of memory") from exc
    except Exception as exc:  # a library failing on hostile bytes, whatever it raises
        detail = f"{type(exc).__name__}: {exc}"[:400]
        raise ParseError("corrupt", f"cannot parse file: {detail}") from exc
    if not entries:
        raise ParseError("invalid_faq", "the FAQ file holds no question-answer entries")
    _check_size(entries, limits)
    return entries


def _dispatch(f: BinaryIO, suffix: str, limits: ParseLimits) -> list[FaqEntry]:
    head = checked_head(f, limits, 1024)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _xlsx(f, limits)
    if b"%PDF-" in head or head.startswith(_OLE2):
        raise ParseError("unsupported_file_type", "a FAQ file must be CSV, XLSX or JSON")
    from rixin.knowledge.parsing.textformats import decode_text

    text = decode_text(f.read())
    if suffix == "json" or (suffix not in ("csv", "tsv") and text.lstrip()[:1] in ("{", "[")):
        return _json(text, limits)
    return _csv(text, limits)


# --- tables: CSV and XLSX ----------------------------------------------------------------------


def _csv(text: str, limits: ParseLimits) -> list[FaqEntry]:
    first = text.lstrip("\ufeff").split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    return list(_table_entries(enumerate(reader, 1), "", limits))


def _xlsx(f: BinaryIO, limits: ParseLimits) -> list[FaqEntry]:
    import openpyxl

    from rixin.knowledge.parsing.safezip import check_office_zip

    if "xl/workbook.xml" not in check_office_zip(f, limits):
        raise ParseError("unsupported_file_type", "a FAQ file must be CSV, XLSX or JSON")
    f.seek(0)
    workbook = openpyxl.load_workbook(f, read_only=True, data_only=True)
    entries: list[FaqEntry] = []
    try:
        for sheet in workbook.worksheets:
            sheet.reset_dimensions()  # never trust the declared dimension (pads every row)
            rows = sheet.iter_rows(max_col=limits.max_columns, values_only=True)
            cells = (
                (n, ["" if v is None else str(v) for v in values])
                for n, values in enumerate(rows, 1)
            )
            entries.extend(_table_entries(cells, f"sheet {sheet.title!r} ", limits))
    finally:
        workbook.close()
    return entries


def _table_entries(
    rows: Iterator[tuple[int, list[str]]], where: str, limits: ParseLimits
) -> Iterator[FaqEntry]:
    """Entries from numbered rows: the first non-empty row is the header."""
    columns: dict[str, int] | None = None
    for count, (number, row) in enumerate(rows, 1):
        if count > limits.max_table_rows:
            raise ParseError("too_large", f"FAQ has over {limits.max_table_rows} rows")
        if not any(cell.strip() for cell in row):
            continue
        if columns is None:
            columns = _header(row, f"{where}row {number}")
            continue
        fields: dict[str, str | list[str]] = {
            role: row[i] if i < len(row) else "" for role, i in columns.items()
        }
        yield _entry(fields, f"{where}row {number}", "is empty")
    if columns is None:
        raise ParseError("invalid_faq", f"{where}has no header row".strip())


def _header(row: Sequence[str], where: str) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(row):
        role = _ROLE.get(_HEADER_NOISE.sub("", cell.lstrip("\ufeff")).casefold())
        if role is None:
            continue
        if role in columns:
            raise ParseError("invalid_faq", f"{where}: two columns name the {role}")
        columns[role] = i
    if "question" not in columns or "answer" not in columns:
        found = ", ".join(repr(c.strip()[:40]) for c in row if c.strip())[:300]
        raise ParseError(
            "invalid_faq",
            f"{where}: the header must name a 'question' (标准问题) and an 'answer' (答案) "
            f"column, and may name 'similar_questions' (相似问题); found {found or 'nothing'}",
        )
    return columns


# --- JSON --------------------------------------------------------------------------------------


def _json(text: str, limits: ParseLimits) -> list[FaqEntry]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ParseError("invalid_faq", f"invalid JSON: {exc}") from exc
    prefix = ""
    if isinstance(data, dict) and "qa_lst" in data:
        data, prefix = data["qa_lst"], "qa_lst"
    if not isinstance(data, list):
        raise ParseError(
            "invalid_faq", "a JSON FAQ is a list of entries or an object with a 'qa_lst' list"
        )
    if len(data) > limits.max_table_rows:
        raise ParseError("too_large", f"FAQ has over {limits.max_table_rows} entries")
    entries: list[FaqEntry] = []
    for i, item in enumerate(data):
        where = f"{prefix or 'entry '}[{i}]"
        if not isinstance(item, dict):
            raise ParseError("invalid_faq", f"{where}: an entry must be an object")
        fields = {role: _value(item, keys, where) for role, keys in _KEYS.items()}
        entries.append(_entry(fields, where, "is missing or empty"))
    return entries


def _value(item: dict[str, Any], keys: Sequence[str], where: str) -> str | list[str]:
    for key in keys:
        if key in item:
            value = item[key]
            if isinstance(value, list) and key in _KEYS["similar"]:
                for j, part in enumerate(value):
                    if not isinstance(part, str):
                        raise ParseError("invalid_faq", f"{where}.{key}[{j}] must be a string")
                return value
            if value is None:
                return ""
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise ParseError("invalid_faq", f"{where}.{key} must be a string")
            return str(value)
    return ""


# --- entries -----------------------------------------------------------------------------------


def _entry(fields: dict[str, str | list[str]], where: str, empty: str) -> FaqEntry:
    question = " ".join(str(fields["question"]).split())
    answer = str(fields["answer"]).strip()
    for role, value in (("question", question), ("answer", answer)):
        if not value:
            raise ParseError("invalid_faq", f"{where}: the {role} {empty}")
    if len(question) > MAX_QUESTION_CHARS:
        raise ParseError("invalid_faq", f"{where}: the question exceeds {MAX_QUESTION_CHARS} chars")
    seen = {question.casefold()}
    similar: list[str] = []
    given = fields.get("similar", "")
    for part in given if isinstance(given, list) else _SEPARATORS.split(given):
        text = " ".join(part.split())[:MAX_QUESTION_CHARS]
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            similar.append(text)
    if len(similar) > MAX_SIMILAR:
        raise ParseError("invalid_faq", f"{where}: over {MAX_SIMILAR} similar questions")
    return FaqEntry(question, tuple(similar), answer)


def _check_size(entries: Sequence[FaqEntry], limits: ParseLimits) -> None:
    chars = sum(len(e.answer) + sum(len(q) for q in e.questions) for e in entries)
    if chars > limits.max_text_chars:
        raise ParseError("too_large", f"FAQ text exceeds {limits.max_text_chars} characters")
