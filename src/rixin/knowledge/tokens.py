"""A tokenizer-agnostic token counter for chunk sizes, with no files and no network.

Chunk sizes in OpenAI's API are given in tokens of its own tokenizers (cl100k / o200k), whose BPE
tables tiktoken downloads at runtime; rixin must work offline, so it approximates them:

* each CJK ideograph, kana or hangul syllable is one token (cl100k: 1–2, o200k: ~1);
* a run of letters is one token per 8 letters (``the`` = 1, ``internationalization`` = 3;
  cl100k keeps most common words whole and splits rare long ones);
* a run of digits is one token per 3 digits (cl100k groups digits by three);
* every other visible character (punctuation, symbols, emoji) is one token;
* one space before a word is part of that word's token (``" fox"`` is one token in cl100k);
  other whitespace runs are one token each (``"\\n\\n"`` is one token in cl100k).

On English prose this gives ~1.3 tokens per word (~4 characters per token), on Chinese prose one
token per character and punctuation mark, both within ~20 % of cl100k. ``split_tokens`` returns
the pieces counted, and they join back to the input exactly, so chunkers can cut at token edges.
"""

from __future__ import annotations

import re

_CJK = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_LETTER = rf"(?:(?![{_CJK}])[^\W\d_])"

_PIECE = re.compile(
    rf"""
      [ ]?[{_CJK}]              # one CJK character
    | [ ]?{_LETTER}{{1,8}}      # up to eight letters
    | [ ]?\d{{1,3}}             # up to three digits
    | [ ]?[^\s\w]|[ ]?_         # one punctuation mark or symbol
    | \s+?(?=[ ]\S)             # whitespace, leaving one space for the next piece
    | \s+                       # a whitespace run
    """,
    re.VERBOSE,
)


def split_tokens(text: str) -> list[str]:
    """The pieces ``count_tokens`` counts; ``"".join(split_tokens(t)) == t`` always."""
    return _PIECE.findall(text)


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of each piece of ``split_tokens(text)``."""
    return [m.span() for m in _PIECE.finditer(text)]


def count_tokens(text: str) -> int:
    """Approximate cl100k token count of ``text`` (see the module docstring)."""
    return sum(1 for _ in _PIECE.finditer(text))
