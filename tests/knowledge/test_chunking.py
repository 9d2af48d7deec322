"""Token counting, OpenAI's static chunking and structure-aware chunking."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from rixin.errors import InvalidRequest
from rixin.knowledge.chunking import Chunk, static_chunks, structured_chunks, validate_static
from rixin.knowledge.parsing import Block, DocumentMetadata, ParsedDocument, parse_file
from rixin.knowledge.tokens import count_tokens, split_tokens, token_spans

ZH = "人工智能是计算机科学的一个分支。它企图了解智能的实质！并生产出新的智能机器？"
EN = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs! "


def doc_of(*blocks: Block) -> ParsedDocument:
    return ParsedDocument(list(blocks), DocumentMetadata("txt"))


def check_offsets(doc: ParsedDocument, chunks: list[Chunk]) -> None:
    text = doc.text
    for i, c in enumerate(chunks):
        assert c.ordinal == i
        assert text[c.char_start : c.char_end] == c.text
        assert c.token_count == count_tokens(c.text)


# --- tokens -------------------------------------------------------------------------------------


def test_split_tokens_joins_back_exactly() -> None:
    rng = random.Random(7)
    alphabet = "ab Zé中文。，!?.\n\t  123_🙂\u0301\u3000"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert "".join(split_tokens(text)) == text
        assert len(split_tokens(text)) == count_tokens(text) == len(token_spans(text))


def test_counts_approximate_cl100k() -> None:
    # cl100k: 10 tokens; each Chinese character and mark one token.
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
    assert count_tokens("人工智能是计算机科学的一个分支。") == 16
    assert count_tokens("") == 0
    prose = EN * 20
    assert 3.3 < len(prose) / count_tokens(prose) < 4.8  # ~4 characters per token


# --- static -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "overlap", "param"),
    [
        (99, 0, "max_chunk_size_tokens"),
        (4097, 0, "max_chunk_size_tokens"),
        (True, 0, "max_chunk_size_tokens"),
        (800, 401, "chunk_overlap_tokens"),
        (800, -1, "chunk_overlap_tokens"),
        (800, 1.5, "chunk_overlap_tokens"),
    ],
)
def test_static_validation(size: Any, overlap: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        validate_static(size, overlap)
    assert exc.value.param == f"chunking_strategy.static.{param}"


def test_static_limits_accepted() -> None:
    validate_static(100, 50)
    validate_static(4096, 0)
    validate_static(101, 50)


def test_static_windows_and_overlap() -> None:
    text = (EN + ZH) * 40
    chunks = static_chunks(text, max_chunk_size_tokens=200, chunk_overlap_tokens=100)
    check_offsets(doc_of(Block(text, "paragraph")), chunks)
    assert all(c.token_count <= 200 for c in chunks)
    assert all(c.token_count >= 190 for c in chunks[:-1])
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.char_start < a.char_end  # they overlap
    assert chunks[-1].char_end == len(text.rstrip())
    assert static_chunks("") == []


def test_static_defaults_on_blocks() -> None:
    doc = doc_of(
        Block("Title", "heading", 1, 3, ("Title",)),
        Block(EN * 100, "paragraph", None, 3, ("Title",)),
    )
    chunks = static_chunks(doc)
    check_offsets(doc, chunks)
    assert chunks[0].token_count == 800 and chunks[0].page == 3
    assert chunks[1].char_start < chunks[0].char_end
    assert chunks[0].heading_path == ("Title",)


# --- structured ---------------------------------------------------------------------------------


def _sections() -> ParsedDocument:
    return doc_of(
        Block("第一章", "heading", 1, 1, ("第一章",)),
        Block(ZH * 12, "paragraph", None, 1, ("第一章",)),
        Block("Chapter two", "heading", 1, 2, ("Chapter two",)),
        Block(EN * 12, "paragraph", None, 2, ("Chapter two",)),
        Block("Sub", "heading", 2, 3, ("Chapter two", "Sub")),
        Block("Short.", "paragraph", None, 3, ("Chapter two", "Sub")),
    )


def test_structured_never_crosses_headings() -> None:
    doc = _sections()
    chunks = structured_chunks(doc, max_tokens=120, overlap_tokens=40)
    check_offsets(doc, chunks)
    headings = {"第一章", "Chapter two", "Sub"}
    for c in chunks:
        assert c.token_count <= 120
        inner = [h for h in headings if h in c.text and not c.text.startswith(h)]
        assert inner == [], c.text
    assert chunks[-1].text == "Sub\n\nShort." and chunks[-1].heading_path == ("Chapter two", "Sub")
    assert chunks[-1].page == 3
    assert {c.heading_path for c in chunks} == {
        ("第一章",),
        ("Chapter two",),
        ("Chapter two", "Sub"),
    }


def test_structured_cuts_between_sentences_and_overlaps() -> None:
    doc = _sections()
    chunks = structured_chunks(doc, max_tokens=120, overlap_tokens=40)
    body = [c for c in chunks if c.heading_path != ("Chapter two", "Sub")]
    for c in body:
        assert re.search(r"[。！？.!?]$", c.text), c.text[-20:]
    same_section = [
        (a, b) for a, b in zip(chunks, chunks[1:], strict=False) if a.heading_path == b.heading_path
    ]
    assert same_section and all(b.char_start < a.char_end for a, b in same_section)
    crossing = [
        (a, b) for a, b in zip(chunks, chunks[1:], strict=False) if a.heading_path != b.heading_path
    ]
    assert all(b.char_start >= a.char_end for a, b in crossing)


def test_structured_keeps_tables_whole_or_splits_by_rows() -> None:
    small = "\n".join(f"| 行{i} | {i} |" for i in range(10))
    big = "\n".join(f"| row {i} | value {i} |" for i in range(200))
    doc = doc_of(
        Block(EN * 4, "paragraph"), Block(small, "table"), Block(big, "table"),
    )  # fmt: skip
    chunks = structured_chunks(doc, max_tokens=150, overlap_tokens=0)
    check_offsets(doc, chunks)
    assert any(small in c.text for c in chunks)
    big_chunks = [c for c in chunks if "row " in c.text]
    assert len(big_chunks) > 1
    for c in big_chunks:
        assert all(line.startswith("| row ") for line in c.text.splitlines())
        assert c.token_count <= 150


def test_structured_hard_splits_a_sentence_longer_than_a_chunk() -> None:
    doc = doc_of(Block("无标点的长句" * 200, "paragraph", None, 5))
    chunks = structured_chunks(doc, max_tokens=100, overlap_tokens=20)
    check_offsets(doc, chunks)
    assert all(c.token_count <= 100 for c in chunks)
    assert chunks[-1].char_end == len(doc.text) and chunks[0].page == 5


def test_structured_default_and_empty() -> None:
    assert structured_chunks(doc_of()) == []
    doc = doc_of(Block(EN * 200, "paragraph"))
    chunks = structured_chunks(doc)
    assert all(c.token_count <= 800 for c in chunks) and len(chunks) > 1
    with pytest.raises(InvalidRequest):
        structured_chunks(doc, max_tokens=100, overlap_tokens=60)


def test_parse_then_chunk_a_docx(docs: Any, write: Any) -> None:
    doc = parse_file(write(docs.docx()), filename="a.docx")
    chunks = structured_chunks(doc)
    check_offsets(doc, chunks)
    assert [c.heading_path for c in chunks] == [
        ("项目概述",),
        ("项目概述", "Features"),
        ("项目概述", "Details"),
    ]
    assert "| 名称 | 数量 |" in chunks[1].text


def test_chunks_cover_the_whole_document(tmp_path: Path) -> None:
    rng = random.Random(3)
    words = ["alpha", "béta", "中文", "句子。", "end.", "\n", "Why?", "|", "12345"]
    for _ in range(30):
        blocks = [
            Block(" ".join(rng.choice(words) for _ in range(rng.randint(1, 150))), kind)
            for kind in rng.choices(["paragraph", "list", "table", "code", "heading"], k=8)
        ]
        doc = doc_of(*[b for b in blocks if b.text.strip()])
        for chunks in (structured_chunks(doc, 100, 30), static_chunks(doc, 100, 30)):
            check_offsets(doc, chunks)
            covered = set()
            for c in chunks:
                assert c.token_count <= 100
                covered.update(range(c.char_start, c.char_end))
            assert all(i in covered for i, ch in enumerate(doc.text) if not ch.isspace())
