"""Resource limits for parsing one untrusted file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What one parse may consume; the parser subprocess is killed or refuses beyond these.

    ``max_memory_bytes`` is the child's address-space limit (``RLIMIT_AS``): the interpreter with
    every parsing library imported maps ~200 MiB, so it bounds resident memory to well below it.
    """

    timeout_s: float = 10.0  # wall clock, enforced by the parent (kills the process group)
    max_cpu_s: int = 10  # RLIMIT_CPU in the child
    max_memory_bytes: int = 1024 * MiB  # RLIMIT_AS in the child
    max_open_files: int = 64  # RLIMIT_NOFILE in the child
    max_file_bytes: int = 128 * MiB  # input size
    max_text_chars: int = 20_000_000  # extracted text
    max_output_bytes: int = 96 * MiB  # JSON the child may write to the parent
    zip_max_entries: int = 10_000
    zip_max_total_bytes: int = 256 * MiB  # declared and actually inflated, all members
    zip_max_ratio: float = 200.0  # uncompressed / compressed, per member above 1 MiB
    max_pages: int = 5_000  # PDF pages, PPTX slides
    max_table_rows: int = 100_000  # XLSX / CSV rows, all sheets together
    max_columns: int = 512

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ParseLimits:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
