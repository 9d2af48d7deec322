"""A fake upstream that answers with a script of replies: make the model call a tool, then
answer from its result. Shared by the agent and Assistants test packages."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from rixin.testing.fake_upstream import FakeUpstream


class ScriptedUpstream(FakeUpstream):
    def __init__(self) -> None:
        super().__init__(models=("fake-model",))
        self.script: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._current = ""

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.script = []
            self.bodies = []

    def _words(self, body: dict[str, Any]) -> list[str]:
        with self._lock:
            self._current = self.script.pop(0) if self.script else self.behaviour.reply
            if body.get("messages") is not None:
                self.bodies.append(body)
        words = re.findall(r"\S+\s*", self._current)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return words[: int(limit)] if isinstance(limit, int) and limit > 0 else words

    def _finish(self, body: dict[str, Any], words: list[str]) -> str:
        return "length" if len(words) < len(re.findall(r"\S+\s*", self._current)) else "stop"


def call_text(name: str, **arguments: Any) -> str:
    """What a small model writes when it calls a tool."""
    return json.dumps({"name": name, "arguments": arguments})
