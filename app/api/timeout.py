"""A bounded request time: past ``seconds`` the handler is cancelled and gets a 504.

One sweeper task per process checks the running requests a few times per limit
(at most once a second) instead of a timer per request: ``asyncio.timeout`` costs
about 4 µs on every request, for a limit that almost never fires. A request is
therefore cancelled between ``seconds`` and ``seconds`` plus one tick.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class TimeoutMiddleware:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.tick = min(1.0, seconds / 4)
        self._deadlines: dict[asyncio.Task[object], float] = {}  # running request: deadline
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests start one per client)
            self._loop, self._sweeper = loop, None
            self._deadlines.clear()
            self._expired.clear()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(loop))
        self._deadlines[task] = loop.time() + self.seconds
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if task not in self._expired:  # the client left, or the server is stopping
                raise
            task.uncancel()
            if started:  # too late for a status; the connection is closed by the server
                raise TimeoutError from None
            body = orjson.dumps({"error": f"request: not finished within {self.seconds:g} s"})
            await send(
                {
                    "type": "http.response.start",
                    "status": 504,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            self._deadlines.pop(task, None)
            self._expired.discard(task)

    async def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel the requests past their deadline; ends when none is running."""
        try:
            while self._deadlines:
                await asyncio.sleep(self.tick)
                now = loop.time()
                for task, deadline in list(self._deadlines.items()):
                    if deadline <= now and task not in self._expired:
                        self._expired.add(task)
                        task.cancel()
        finally:
            if self._loop is loop:
                self._sweeper = None
