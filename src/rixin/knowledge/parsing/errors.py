"""Why a file could not be parsed, and how that reads in OpenAI's ``last_error``."""

from __future__ import annotations

from typing import Literal, get_args

from rixin.errors import InvalidRequest

ParseErrorCode = Literal[
    "unsupported_file_type",
    "encrypted",
    "too_large",
    "timeout",
    "corrupt",
    "resource_limit",
    "invalid_faq",
]
PARSE_ERROR_CODES: frozenset[str] = frozenset(get_args(ParseErrorCode))

OpenAIFileErrorCode = Literal["server_error", "unsupported_file", "invalid_file"]

_OPENAI_CODE: dict[str, OpenAIFileErrorCode] = {
    "unsupported_file_type": "unsupported_file",
    "encrypted": "invalid_file",
    "too_large": "invalid_file",
    "corrupt": "invalid_file",
    "invalid_faq": "invalid_file",  # a FAQ file whose rows or entries miss a field
    "resource_limit": "invalid_file",  # deterministic: the same file exhausts the same limits
    "timeout": "server_error",  # may be load on the host; worth one retry
}


class ParseError(InvalidRequest):
    """A file that could not be parsed; ``code`` is one of ``ParseErrorCode``."""

    code: ParseErrorCode

    def __init__(self, code: ParseErrorCode, message: str) -> None:
        super().__init__(message, param="file", code=code)
        self.code = code
        if code in ("timeout", "resource_limit", "too_large"):
            self.status_code = 422

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, str]]:
        return (type(self), (self.code, self.message))


def openai_error_code(code: ParseErrorCode) -> OpenAIFileErrorCode:
    """Our detailed code mapped onto the enum of a vector store file's ``last_error.code``."""
    return _OPENAI_CODE[code]


def last_error(err: ParseError) -> dict[str, str]:
    """A vector store file's ``last_error``; the detailed code leads the message."""
    return {"code": openai_error_code(err.code), "message": f"{err.code}: {err.message}"}
