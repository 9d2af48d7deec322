"""Splitting documents into chunks for retrieval.

Two strategies, both measured in ``rixin.knowledge.tokens`` tokens:

* ``static_chunks``: OpenAI's ``static`` strategy, a window of ``max_chunk_size_tokens`` moved by
  ``max - overlap`` tokens over the whole text.
* ``structured_chunks``: ``auto``; a chunk never crosses a heading, is cut between sentences
  (``。！？；`` and ``. ! ?``), list items or table rows rather than inside one, keeps a table whole
  when it fits, and overlaps its predecessor by whole sentences.

Every chunk's text is ``doc.text[char_start:char_end]`` (see ``ParsedDocument.text``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rixin.errors import InvalidRequest
from rixin.knowledge.parsing.document import Block, DocumentMetadata, ParsedDocument
from rixin.knowledge.tokens import count_tokens, token_spans

DEFAULT_MAX_TOKENS = 800
DEFAULT_OVERLAP_TOKENS = 400
_PARAM = "chunking_strategy.static."


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    ordinal: int  # 0-based position in the document
    token_count: int
    page: int | None  # page of the chunk's first character
    heading_path: tuple[str, ...]
    char_start: int
    char_end: int


def validate_static(max_chunk_size_tokens: int, chunk_overlap_tokens: int) -> None:
    """OpenAI's rules for ``chunking_strategy.static``; raises ``InvalidRequest``."""
    for name, value in (
        ("max_chunk_size_tokens", max_chunk_size_tokens),
        ("chunk_overlap_tokens", chunk_overlap_tokens),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest(f"'{name}' must be an integer", param=_PARAM + name)
    if not 100 <= max_chunk_size_tokens <= 4096:
        raise InvalidRequest(
            "'max_chunk_size_tokens' must be between 100 and 4096",
            param=_PARAM + "max_chunk_size_tokens",
        )
    if chunk_overlap_tokens < 0 or 2 * chunk_overlap_tokens > max_chunk_size_tokens:
        raise InvalidRequest(
            "'chunk_overlap_tokens' must be non-negative and not exceed half of "
            "'max_chunk_size_tokens'",
            param=_PARAM + "chunk_overlap_tokens",
        )


def static_chunks(
    source: str | ParsedDocument | Sequence[Block],
    max_chunk_size_tokens: int = DEFAULT_MAX_TOKENS,
    chunk_overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[Chunk]:
    """OpenAI's static strategy: fixed token windows with a fixed overlap."""
    validate_static(max_chunk_size_tokens, chunk_overlap_tokens)
    doc = _as_document(source)
    text, locate = doc.text, _Locator(doc)
    pieces = token_spans(text)
    step = max_chunk_size_tokens - chunk_overlap_tokens
    chunks: list[Chunk] = []
    for start in range(0, len(pieces), step):
        end = min(start + max_chunk_size_tokens, len(pieces))
        chunk = _chunk(text, pieces[start][0], pieces[end - 1][1], len(chunks), locate)
        if chunk is not None:
            chunks.append(chunk)
        if end == len(pieces):
            break
    return chunks


def structured_chunks(
    doc: ParsedDocument,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[Chunk]:
    """Structure-aware chunks (OpenAI's ``auto``); see the module docstring."""
    if max_tokens < 1 or not 0 <= overlap_tokens <= max_tokens // 2:
        raise InvalidRequest(
            "chunk size must be positive and the overlap at most half of it",
            param="chunking_strategy",
        )
    text, locate = doc.text, _Locator(doc)
    pieces = token_spans(text)
    units = _units(doc, pieces, max_tokens)
    chunks: list[Chunk] = []
    for first, last in _pack(units, max_tokens, overlap_tokens):
        start, end = pieces[units[first].start][0], pieces[units[last].end - 1][1]
        chunk = _chunk(text, start, end, len(chunks), locate)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


# --- units: the pieces a structured chunk is made of -------------------------------------------

_SENTENCE_END = re.compile(r"[。！？；]+[”’\"」』）)]*|[.!?]+[\"')\]]*(?=\s)")
_LINE_START = re.compile(r"(?<=\n)")


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int  # index of the first token piece
    end: int  # one past the last token piece
    section_start: bool  # a heading: the previous chunk must end before it

    @property
    def tokens(self) -> int:
        return self.end - self.start


def _units(doc: ParsedDocument, pieces: list[tuple[int, int]], max_tokens: int) -> list[_Unit]:
    """Cut the document at block, sentence and line starts, snapped to token pieces."""
    cuts: list[tuple[int, bool]] = []  # (character offset, starts a section)
    prev_heading = False
    for block, (b_start, _) in zip(doc.blocks, doc.block_spans(), strict=True):
        is_heading = block.kind == "heading"
        cuts.append((b_start, is_heading and not prev_heading))
        cuts.extend((b_start + c, False) for c in _cuts(block, max_tokens))
        prev_heading = is_heading
    starts = [s for s, _ in pieces]
    bounds: list[tuple[int, bool]] = [(0, False)]
    for offset, section in cuts:
        index = bisect.bisect_left(starts, offset)
        if index == bounds[-1][0]:
            bounds[-1] = (index, bounds[-1][1] or section)
        else:
            bounds.append((index, section))
    bounds.append((len(pieces), False))
    units: list[_Unit] = []
    for (a, section), (b, _) in zip(bounds, bounds[1:], strict=False):
        if b > a:
            units.extend(_split_oversized(a, b, section, max_tokens))
    return units


def _cuts(block: Block, max_tokens: int) -> list[int]:
    """Offsets inside the block where a chunk may end."""
    if block.kind == "heading":
        return []
    if block.kind == "table" and count_tokens(block.text) <= max_tokens:
        return []
    if block.kind == "paragraph":
        return [m.end() for m in _SENTENCE_END.finditer(block.text) if m.end() < len(block.text)]
    return [m.start() for m in _LINE_START.finditer(block.text)]


def _split_oversized(a: int, b: int, section: bool, max_tokens: int) -> list[_Unit]:
    """A sentence longer than a chunk is cut into quarter-chunk windows."""
    if b - a <= max_tokens:
        return [_Unit(a, b, section)]
    size = max(1, max_tokens // 4)
    return [_Unit(s, min(s + size, b), section and s == a) for s in range(a, b, size)]


def _pack(units: list[_Unit], max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Greedy packing of units into ``(first, last)`` ranges, overlapping by whole units."""
    ranges: list[tuple[int, int]] = []
    first, tokens, has_body = 0, 0, False
    for i, unit in enumerate(units):
        if i > first and unit.section_start and has_body:
            ranges.append((first, i - 1))
            first, tokens, has_body = i, 0, False
        elif i > first and tokens + unit.tokens > max_tokens:
            ranges.append((first, i - 1))
            budget = min(overlap, max_tokens - unit.tokens)
            j, carried = i, 0
            while j - 1 > first and carried + units[j - 1].tokens <= budget:
                j -= 1
                carried += units[j].tokens
            first, tokens = j, carried
        tokens += unit.tokens
        has_body = has_body or not unit.section_start
    if units:
        ranges.append((first, len(units) - 1))
    return ranges


# --- helpers -----------------------------------------------------------------------------------


class _Locator:
    """Page and heading path of the block at a character offset."""

    def __init__(self, doc: ParsedDocument) -> None:
        self._blocks = doc.blocks
        self._starts = [s for s, _ in doc.block_spans()]

    def __call__(self, offset: int) -> Block | None:
        i = bisect.bisect_right(self._starts, offset) - 1
        return self._blocks[i] if i >= 0 else None


def _chunk(text: str, start: int, end: int, ordinal: int, locate: _Locator) -> Chunk | None:
    raw = text[start:end]
    body = raw.strip()
    if not body:
        return None
    start += len(raw) - len(raw.lstrip())
    block = locate(start)
    return Chunk(
        text=body,
        ordinal=ordinal,
        token_count=count_tokens(body),
        page=block.page if block else None,
        heading_path=block.heading_path if block else (),
        char_start=start,
        char_end=start + len(body),
    )


def _as_document(source: str | ParsedDocument | Sequence[Block]) -> ParsedDocument:
    if isinstance(source, ParsedDocument):
        return source
    if isinstance(source, str):
        return ParsedDocument([Block(source, "paragraph")], DocumentMetadata("txt"))
    return ParsedDocument(list(source), DocumentMetadata("txt"))
