"""Serve the hot prediction routes straight from their endpoints.

FastAPI's per-request machinery (route scan, dependency solving, its exception and
exit-stack middleware) costs more than a small model's whole prediction. Routes whose
endpoint takes only the ``Request`` (the predict and infer routes, which read their own
path parameters and body) are matched here by their compiled path regex and called
directly; errors go through the app's own exception handlers, so answers are the same.
The routes stay registered with FastAPI too: they still appear in /openapi.json.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorResponder = Callable[[Request, Exception], Awaitable[Response]]


def direct_routes(routes: Sequence[Any]) -> list[tuple[re.Pattern[str], Endpoint]]:
    """The POST routes whose endpoint takes the Request alone, in routing order."""
    found = []
    for route in routes:
        if not isinstance(route, APIRoute) or "POST" not in route.methods:
            continue
        parameters = list(inspect.signature(route.endpoint).parameters.values())
        if [p.name for p in parameters] == ["request"]:
            found.append((route.path_regex, route.endpoint))
    return found


class FastPathMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        routes: list[tuple[re.Pattern[str], Endpoint]],
        on_error: ErrorResponder,
    ) -> None:
        self.app = app
        self.routes = routes
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for pattern, endpoint in self.routes:
                match = pattern.match(path)
                if match is None:
                    continue
                scope["path_params"] = match.groupdict()
                request = Request(scope, receive)
                try:
                    response = await endpoint(request)
                except Exception as exc:  # answered by the app's own handlers
                    response = await self.on_error(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
