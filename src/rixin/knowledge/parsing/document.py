"""What a parser extracts from a file: blocks of text with their structure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from rixin.knowledge.parsing.errors import ParseError

BlockKind = Literal["heading", "paragraph", "list", "table", "code"]
BLOCK_KINDS: frozenset[str] = frozenset(get_args(BlockKind))
DocumentFormat = Literal["pdf", "docx", "pptx", "xlsx", "html", "markdown", "txt", "csv", "json"]
DOCUMENT_FORMATS: frozenset[str] = frozenset(get_args(DocumentFormat))

BLOCK_SEPARATOR = "\n\n"


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit; ``heading_path`` holds the enclosing headings (a heading includes
    itself), ``page`` the 1-based PDF page or PPTX slide, ``level`` a heading's level (1 = top)."""

    text: str
    kind: BlockKind
    level: int | None = None
    page: int | None = None
    heading_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DocumentMetadata:
    format: DocumentFormat
    title: str | None = None
    pages: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    blocks: list[Block]
    metadata: DocumentMetadata

    @property
    def text(self) -> str:
        """The document's text: block texts joined by a blank line; chunk offsets index it."""
        return BLOCK_SEPARATOR.join(b.text for b in self.blocks)

    def block_spans(self) -> list[tuple[int, int]]:
        """``(start, end)`` of each block in ``text``."""
        spans: list[tuple[int, int]] = []
        pos = 0
        for b in self.blocks:
            spans.append((pos, pos + len(b.text)))
            pos += len(b.text) + len(BLOCK_SEPARATOR)
        return spans

    def to_json(self) -> dict[str, Any]:
        return {
            "blocks": [
                [b.text, b.kind, b.level, b.page, list(b.heading_path)] for b in self.blocks
            ],
            "metadata": {
                "format": self.metadata.format,
                "title": self.metadata.title,
                "pages": self.metadata.pages,
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> ParsedDocument:
        """Rebuild from ``to_json``, checking every field (the data crossed a process edge)."""
        try:
            meta = data["metadata"]
            fmt, title, pages = meta["format"], meta["title"], meta["pages"]
            if fmt not in DOCUMENT_FORMATS:
                raise ValueError(fmt)
            metadata = DocumentMetadata(format=fmt, title=_opt(title, str), pages=_opt(pages, int))
            blocks = [_block_from_json(item) for item in data["blocks"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed parsed document: {exc!r}") from exc
        return cls(blocks=blocks, metadata=metadata)


def _opt(value: Any, typ: type) -> Any:
    if value is not None and (not isinstance(value, typ) or isinstance(value, bool)):
        raise TypeError(f"expected {typ.__name__}, got {type(value).__name__}")
    return value


def _block_from_json(item: Any) -> Block:
    text, kind, level, page, path = item
    if not isinstance(text, str) or kind not in BLOCK_KINDS:
        raise ValueError("bad block")
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise TypeError("bad heading path")
    return Block(text, kind, _opt(level, int), _opt(page, int), tuple(path))


def _valid_unicode(text: str) -> str:
    """Replace lone surrogates (some PDFs produce them) so the text encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
    return text


_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def clean_text(text: str) -> str:
    """Collapse runs of spaces, drop NULs and blank-line runs, strip; keep single newlines."""
    text = _valid_unicode(text.replace("\x00", ""))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n", "\n".join(lines)).strip()


@dataclass
class DocumentBuilder:
    """Collects blocks in reading order, tracks the heading path and caps the text size."""

    format: DocumentFormat
    max_chars: int
    blocks: list[Block] = field(default_factory=list)
    _path: list[tuple[int, str]] = field(default_factory=list)
    _chars: int = 0

    def heading(self, text: str, level: int, page: int | None = None) -> None:
        text = " ".join(clean_text(text).split())
        if not text:
            return
        level = max(1, min(level, 9))
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))
        self._append(Block(text, "heading", level, page, self.heading_path))

    def add(self, kind: BlockKind, text: str, page: int | None = None) -> None:
        text = _valid_unicode(text.strip("\n")) if kind == "code" else clean_text(text)
        if text.strip():
            self._append(Block(text, kind, None, page, self.heading_path))

    def reset_headings(self) -> None:
        self._path.clear()

    @property
    def heading_path(self) -> tuple[str, ...]:
        return tuple(t for _, t in self._path)

    def _append(self, block: Block) -> None:
        self._chars += len(block.text) + len(BLOCK_SEPARATOR)
        if self._chars > self.max_chars:
            raise ParseError("too_large", f"extracted text exceeds {self.max_chars} characters")
        self.blocks.append(block)

    def build(self, *, title: str | None = None, pages: int | None = None) -> ParsedDocument:
        if title is not None:
            title = " ".join(title.split())[:1000] or None
        if title is None:
            title = next((b.text[:1000] for b in self.blocks if b.kind == "heading"), None)
        return ParsedDocument(self.blocks, DocumentMetadata(self.format, title, pages))


def table_text(rows: list[list[str]]) -> str:
    """Rows as ``| a | b |`` lines; cell newlines become spaces and pipes are escaped."""
    lines = []
    for row in rows:
        cells = [" ".join(c.split()).replace("|", "\\|") for c in row]
        if any(cells):
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
