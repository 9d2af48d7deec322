"""Parsing untrusted files into structured text, in a sandboxed subprocess.

``parse_file`` / ``parse_file_async`` are the entry points; the extractors themselves run only in
the children of the parser fork server (``sandbox``, ``forkserver``, ``runner``). ``sandbox`` (and
with it ``asyncio``) is imported on first use only: the fork server imports this package, and it
must start quickly when it is restarted.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from rixin.knowledge.parsing.sandbox import parse_faq_async, parse_file, parse_file_async

_SANDBOX = ("parse_faq_async", "parse_file", "parse_file_async")


def __getattr__(name: str) -> Any:
    if name in _SANDBOX:
        from rixin.knowledge.parsing import sandbox

        return getattr(sandbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
