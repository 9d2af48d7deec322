"""Parsing untrusted files into structured text, in a sandboxed subprocess.

``parse_file`` / ``parse_file_async`` are the entry points; the extractors themselves run only in
the child started by ``sandbox`` (see ``runner``).
"""

from rixin.knowledge.parsing.document import (
    Block,
    BlockKind,
    DocumentFormat,
    DocumentMetadata,
    ParsedDocument,
)
from rixin.knowledge.parsing.errors import (
    OpenAIFileErrorCode,
    ParseError,
    ParseErrorCode,
    last_error,
    openai_error_code,
)
from rixin.knowledge.parsing.faq import FaqEntry
from rixin.knowledge.parsing.limits import ParseLimits
from rixin.knowledge.parsing.sandbox import parse_faq_async, parse_file, parse_file_async

__all__ = [
    "Block",
    "BlockKind",
    "DocumentFormat",
    "DocumentMetadata",
    "FaqEntry",
    "OpenAIFileErrorCode",
    "ParseError",
    "ParseErrorCode",
    "ParseLimits",
    "ParsedDocument",
    "last_error",
    "openai_error_code",
    "parse_faq_async",
    "parse_file",
    "parse_file_async",
]
