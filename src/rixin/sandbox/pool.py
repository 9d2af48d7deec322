"""A small warm pool: sessions whose dir exists and whose first interpreter is already confined.

Pooled sessions belong to no project until ``take`` hands one out; they hold nothing of
anyone's, so handing one to any tenant is safe. The pool refills in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from rixin.sandbox.session import Session


class WarmPool:
    def __init__(
        self,
        size: int,
        make: Callable[[], Awaitable[Session]],
        dispose: Callable[[Session], Awaitable[None]],
    ) -> None:
        self._size = size
        self._make = make
        self._dispose = dispose
        self._idle: deque[Session] = deque()
        self._filling: asyncio.Task[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._idle)

    def take(self) -> Session | None:
        """A warm session, or None when the pool is empty; triggers a refill either way."""
        session = self._idle.popleft() if self._idle else None
        self.refill()
        return session

    def refill(self) -> None:
        if self._closed or self._size <= 0 or (self._filling and not self._filling.done()):
            return
        self._filling = asyncio.ensure_future(self._fill())

    async def _fill(self) -> None:
        while not self._closed and len(self._idle) < self._size:
            try:
                session = await self._make()
            except Exception:  # out of uids or disk: serve cold until the next take
                return
            session.prespawn()
            if self._closed:
                await self._dispose(session)
                return
            self._idle.append(session)

    async def aclose(self) -> None:
        self._closed = True
        if self._filling is not None:
            with contextlib.suppress(Exception):
                await self._filling
        while self._idle:
            await self._dispose(self._idle.popleft())
