"""Time limits on running requests, checked by one task instead of a timer per request.

``asyncio.timeout`` costs about 4 µs on every request, for a limit that almost never
fires. One sweeper task per event loop wakes a few times per limit (at most once a
second) while anything runs, and hands what is past its limit to ``on_expiry``; so work
ends between its limit and its limit plus one tick. HTTP's timeout middleware and the
gRPC server (``app/grpc/calls.py``) both use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class DeadlineSweeper(Generic[Key]):
    def __init__(self, seconds: float, on_expiry: Callable[[Key], None]) -> None:
        self.seconds = seconds
        self.tick = min(1.0, seconds / 4)
        self.on_expiry = on_expiry
        self.deadlines: dict[Key, float] = {}  # running work: the loop time it must end by
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, key: Key) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests start one per client)
            self._loop, self._task = loop, None
            self.deadlines.clear()
        self.deadlines[key] = loop.time() + self.seconds
        if self._task is None:
            self._task = loop.create_task(self._sweep(loop))

    def discard(self, key: Key) -> None:
        self.deadlines.pop(key, None)

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand over the work past its limit; ends when nothing runs."""
        try:
            while self.deadlines:
                await asyncio.sleep(self.tick)
                now = loop.time()
                for key, deadline in list(self.deadlines.items()):
                    if deadline <= now:
                        del self.deadlines[key]
                        self.on_expiry(key)
        finally:
            if self._loop is loop:
                self._task = None
