"""Extractors for text formats: HTML, Markdown, plain text, CSV and JSON (UTF-8 or GB18030)."""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from rixin.knowledge.parsing.document import (
    BlockKind,
    DocumentBuilder,
    ParsedDocument,
    table_text,
)
from rixin.knowledge.parsing.errors import ParseError
from rixin.knowledge.parsing.limits import ParseLimits

_SUFFIX_FORMAT = {
    "html": "html", "htm": "html", "xhtml": "html",
    "md": "markdown", "markdown": "markdown", "mdx": "markdown",
    "csv": "csv", "tsv": "csv",
    "json": "json",
}  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def decode_text(data: bytes) -> str:
    """Decode by BOM, else UTF-8, else GB18030; refuse what is not text."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                       (codecs.BOM_UTF16_BE, "utf-16-be")):  # fmt: skip
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace")
    if b"\x00" in data[:8192] or data.startswith(b"{\\rtf"):
        raise ParseError("unsupported_file_type", "binary file of an unsupported type")
    for codec in ("utf-8", "gb18030"):
        try:
            text = data.decode(codec)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = data.decode("utf-8", errors="replace")
        if text.count("\ufffd") > len(text) // 100:
            raise ParseError("unsupported_file_type", "not text in UTF-8 or GB18030")
    sample = text[:8192]
    if len(_CONTROL.findall(sample)) > len(sample) // 20:
        raise ParseError("unsupported_file_type", "binary file of an unsupported type")
    return text


def extract_text_file(data: bytes, suffix: str, limits: ParseLimits) -> ParsedDocument:
    text = decode_text(data)
    fmt = _SUFFIX_FORMAT.get(suffix) or _sniff(text)
    return _EXTRACTORS[fmt](text, limits)


def _sniff(text: str) -> str:
    start = text.lstrip()[:64].lower()
    if start.startswith(("<!doctype html", "<html")):
        return "html"
    if start.startswith(("{", "[")):
        try:
            json.loads(text)
            return "json"
        except ValueError:
            pass
    return "txt"


# --- HTML --------------------------------------------------------------------------------------

_DROP = "script, style, noscript, template, iframe, object, embed, svg, math, head, nav, footer"
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = frozenset(
    "address article aside blockquote body dd details div dl dt fieldset figcaption figure form "
    "header hr li main ol p pre section summary table tbody td tfoot th thead tr ul".split()
)
_MAX_DEPTH = 200


def extract_html(text: str, limits: ParseLimits) -> ParsedDocument:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    title_node = tree.css_first("title")
    title = title_node.text(deep=True) if title_node is not None else None
    for node in tree.css(_DROP):
        node.decompose()
    b = DocumentBuilder("html", limits.max_text_chars)
    if tree.body is not None:
        _html_children(tree.body, b, limits, depth=0)
    return b.build(title=title)


def _html_children(node: Any, b: DocumentBuilder, limits: ParseLimits, depth: int) -> None:
    inline: list[str] = []
    for child in node.iter(include_text=True):
        tag = child.tag
        if tag not in _BLOCK_TAGS and tag not in _HEADINGS:
            if not tag.startswith(("-", "!", "_")) or tag == "-text":
                inline.append(child.text(deep=True, separator=" " if tag != "-text" else ""))
            continue
        b.add("paragraph", "".join(inline))
        inline.clear()
        _html_block(child, tag, b, limits, depth)
    b.add("paragraph", "".join(inline))


def _html_block(node: Any, tag: str, b: DocumentBuilder, limits: ParseLimits, depth: int) -> None:
    if tag in _HEADINGS:
        b.heading(node.text(deep=True, separator=" "), _HEADINGS[tag])
    elif tag in ("ul", "ol", "dl"):
        items = [li.text(deep=True, separator=" ") for li in node.css("li, dt, dd")]
        b.add("list", "\n".join("- " + " ".join(i.split()) for i in items if i.strip()))
    elif tag == "table":
        b.add("table", table_text(_html_rows(node, limits)))
    elif tag == "pre":
        b.add("code", node.text(deep=True))
    elif depth >= _MAX_DEPTH:
        b.add("paragraph", node.text(deep=True, separator=" "))
    else:
        _html_children(node, b, limits, depth + 1)


def _html_rows(table: Any, limits: ParseLimits) -> list[list[str]]:
    rows: list[list[str]] = []
    for tr in table.css("tr"):
        if len(rows) >= limits.max_table_rows:
            raise ParseError("too_large", f"table has over {limits.max_table_rows} rows")
        cells = tr.css("th, td")[: limits.max_columns]
        rows.append([c.text(deep=True, separator=" ") for c in cells])
    return rows


# --- Markdown ----------------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_MD_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_LIST = re.compile(r"^\s{0,8}(?:[-*+]|\d{1,9}[.)])\s+")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")


def extract_markdown(text: str, limits: ParseLimits) -> ParsedDocument:
    b = DocumentBuilder("markdown", limits.max_text_chars)
    lines = text.splitlines()
    kind: BlockKind = "paragraph"
    buf: list[str] = []
    fence: str | None = None

    def flush() -> None:
        nonlocal kind
        b.add(kind, "\n".join(buf))
        buf.clear()
        kind = "paragraph"

    for i, line in enumerate(lines):
        if fence is not None:
            if line.strip().startswith(fence):
                flush()
                fence = None
            else:
                buf.append(line)
            continue
        if m := _MD_FENCE.match(line):
            flush()
            fence, kind = m.group(1), "code"
            continue
        if m := _MD_HEADING.match(line):
            flush()
            b.heading(m.group(2), len(m.group(1)))
            continue
        setext = _MD_SETEXT.match(line)
        if setext and kind == "paragraph" and len(buf) == 1 and i > 0:
            b.heading(buf.pop(), 1 if setext.group(1)[0] == "=" else 2)
            continue
        if not line.strip():
            flush()
            continue
        line_kind: BlockKind
        if line.lstrip().startswith("|"):
            line_kind = "table"
        elif _MD_LIST.match(line) or kind == "list":
            line_kind = "list"
        else:
            line_kind = "paragraph"
        if line_kind != kind:
            flush()
            kind = line_kind
        buf.append(line)
    flush()
    return b.build()


# --- plain text, CSV, JSON ---------------------------------------------------------------------


def extract_txt(text: str, limits: ParseLimits) -> ParsedDocument:
    b = DocumentBuilder("txt", limits.max_text_chars)
    for para in re.split(r"\n[ \t\r\f\v]*\n", text):
        b.add("paragraph", para)
    return b.build()


def extract_csv(text: str, limits: ParseLimits) -> ParsedDocument:
    sample = text[:16384]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",\t;|")
    except csv.Error:
        dialect = csv.excel
    rows: list[list[str]] = []
    for row in csv.reader(text.splitlines(), dialect):
        if len(rows) >= limits.max_table_rows:
            raise ParseError("too_large", f"CSV has over {limits.max_table_rows} rows")
        rows.append(row[: limits.max_columns])
    b = DocumentBuilder("csv", limits.max_text_chars)
    b.add("table", table_text(rows))
    return b.build()


def extract_json(text: str, limits: ParseLimits) -> ParsedDocument:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ParseError("corrupt", f"invalid JSON: {exc}") from exc
    b = DocumentBuilder("json", limits.max_text_chars)
    if isinstance(data, dict):
        for key, value in data.items():
            b.reset_headings()
            b.heading(str(key), 1)
            b.add("paragraph", "\n".join(_json_lines(value, str(key), limits.max_table_rows)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            b.add("paragraph", "\n".join(_json_lines(value, f"[{i}]", limits.max_table_rows)))
    else:
        b.add("paragraph", json.dumps(data, ensure_ascii=False))
    return b.build()


def _json_lines(value: Any, path: str, max_lines: int) -> Iterator[str]:
    """``a.b[0].c: value`` lines, depth first, iteratively (no recursion limit to hit)."""
    stack = [(path, value)]
    emitted = 0
    while stack:
        p, v = stack.pop()
        if isinstance(v, dict):
            stack.extend((f"{p}.{k}" if p else str(k), x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((f"{p}[{i}]", x) for i, x in reversed(list(enumerate(v))))
        else:
            emitted += 1
            if emitted > max_lines:
                raise ParseError("too_large", f"JSON has over {max_lines} values")
            yield f"{p}: {json.dumps(v, ensure_ascii=False)}"


_EXTRACTORS: dict[str, Callable[[str, ParseLimits], ParsedDocument]] = {
    "html": extract_html,
    "markdown": extract_markdown,
    "txt": extract_txt,
    "csv": extract_csv,
    "json": extract_json,
}
