"""The parser child: ``main`` runs in each child the fork server forks (``forkserver``), or
standalone as ``python -I -B -m rixin.knowledge.parsing.runner REQUEST``.

The file to parse arrives as stdin (an open descriptor, never a path); ``REQUEST`` is JSON with
the extension hint, the limits and the ``format`` (``"faq"``: a FAQ file, see ``faq``). Limits
are applied before the first untrusted byte is read. The reply is one JSON object on stdout:
``{"ok": true, "document": …}`` (``"faq": …`` for a FAQ file) or
``{"ok": false, "code": …, "message": …}``, plus ``peak_rss_kb`` for diagnostics.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from typing import Any

from rixin.knowledge.parsing.errors import ParseError
from rixin.knowledge.parsing.limits import ParseLimits


def apply_limits(limits: ParseLimits) -> None:
    """Confine this process: CPU seconds, address space, no file writes, few descriptors,
    no children, no core dumps."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing a file fails (EFBIG), not a kill
    _limit(resource.RLIMIT_CPU, limits.max_cpu_s, limits.max_cpu_s + 1)
    _limit(resource.RLIMIT_AS, limits.max_memory_bytes, limits.max_memory_bytes)
    _limit(resource.RLIMIT_FSIZE, 0, 0)
    _limit(resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files)
    _limit(resource.RLIMIT_CORE, 0, 0)
    _limit(resource.RLIMIT_NPROC, 0, 0)


def _limit(which: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    resource.setrlimit(which, (min(soft, hard), hard))


def run(request: dict[str, Any]) -> dict[str, Any]:
    limits = ParseLimits.from_json(request["limits"])
    apply_limits(limits)
    from rixin.knowledge.parsing.extractors import extract

    try:
        with open(0, "rb", closefd=False) as f:
            if request.get("format") == "faq":
                from rixin.knowledge.parsing.faq import extract_faq, faq_to_json

                entries = extract_faq(f, suffix=str(request["suffix"]), limits=limits)
                return {"ok": True, "faq": faq_to_json(entries)}
            document = extract(f, suffix=str(request["suffix"]), limits=limits)
        return {"ok": True, "document": document.to_json()}
    except ParseError as exc:
        return {"ok": False, "code": exc.code, "message": exc.message}


def _encode(reply: dict[str, Any], limit: int) -> bytes:
    reply["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = json.dumps(reply, ensure_ascii=False).encode("utf-8")
    if len(data) > limit:
        too_large = {"ok": False, "code": "too_large", "message": "extracted text too large"}
        data = json.dumps(too_large).encode()
    return data


def main(argv: list[str]) -> int:
    request = json.loads(argv[1])
    try:
        reply = run(request)
        data = _encode(reply, int(request["limits"]["max_output_bytes"]))
    except MemoryError:
        reply = {"ok": False, "code": "resource_limit", "message": "parser ran out of memory"}
        data = json.dumps(reply).encode()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
