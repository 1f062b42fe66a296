"""A bounded request time: past ``seconds`` the handler is cancelled and gets a 504.

The limit is kept by the process's :class:`~app.serving.sweeper.DeadlineSweeper`, one
task rather than a timer per request, so a request is cancelled between ``seconds``
and ``seconds`` plus one tick.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.serving.sweeper import DeadlineSweeper


class TimeoutMiddleware:
    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self._expired: set[asyncio.Task[object]] = set()  # cancelled for their time
        self._sweeper: DeadlineSweeper[asyncio.Task[object]] = DeadlineSweeper(
            seconds, self._expire
        )

    def _expire(self, task: asyncio.Task[object]) -> None:
        self._expired.add(task)
        task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        self._sweeper.add(task)
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
            self._sweeper.discard(task)
            self._expired.discard(task)
