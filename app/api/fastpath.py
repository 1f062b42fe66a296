"""An explicit fast path for the hot prediction routes.

FastAPI's per-request machinery (scanning every route, solving dependencies, its
exception and exit-stack middleware) costs more than a small model's whole
prediction. A route opts in by being declared with ``route_class_override=HotRoute``;
:class:`FastPathMiddleware` then matches it by its compiled path pattern and calls
its endpoint directly, inside the same id, metrics, limit and timeout middleware,
with errors answered by the app's own exception handlers.

What keeps this honest:

* only marked routes are served, and a marked route must take the ``Request`` alone
  and have no dependencies (a guard such as a token check would otherwise be
  skipped): anything else is refused when the app starts;
* paths are matched the way Starlette's router matches them, after ``root_path``;
* ``tests/test_fastpath.py`` asserts, for every marked route, byte-identical answers
  from this path and from FastAPI's own routing, errors included.

The routes stay registered with FastAPI, which serves them when the fast path is
off (``FAST_PATH=false``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from fastapi.routing import APIRoute, APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorResponder = Callable[[Request, Exception], Awaitable[Response]]


class HotRoute(APIRoute):
    """A route the fast path may serve (see the module docstring for the rules)."""


def hot_post(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """Declare a POST route that the fast path may serve (``@hot_post(router, path)``)."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path, endpoint, methods=["POST"], route_class_override=HotRoute, **options
        )
        return endpoint

    return register


class UnsafeHotRoute(RuntimeError):
    """A route marked hot that the fast path cannot serve without changing its meaning."""


def hot_routes(routes: Sequence[Any]) -> list[tuple[re.Pattern[str], Endpoint]]:
    """Every marked route, in routing order; refuses those the fast path would alter."""
    found = []
    for route, context in _effective_routes(routes):
        if not isinstance(route, HotRoute):
            continue
        path = context.path
        parameters = [p.name for p in inspect.signature(route.endpoint).parameters.values()]
        if parameters != ["request"]:
            raise UnsafeHotRoute(
                f"{path}: a hot route's endpoint must take only the Request, not {parameters}"
            )
        dependant = getattr(context, "dependant", None)
        if context.dependencies or (dependant is not None and dependant.dependencies):
            raise UnsafeHotRoute(
                f"{path}: a hot route must have no dependencies; the fast path would skip them"
            )
        if route.methods != {"POST"}:
            raise UnsafeHotRoute(f"{path}: only POST routes can be hot")
        found.append((context.path_regex, route.endpoint))
    return found


def _effective_routes(routes: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    """(route, its effective context) pairs: the path, regex and dependencies a route has
    once included (prefixes and router dependencies applied). FastAPI up to 0.128 copies
    included routes into ``app.routes``; later releases keep included routers, whose
    ``effective_candidates()`` give the same facts."""
    for route in routes:
        candidates = getattr(route, "effective_candidates", None)
        if callable(candidates):
            yield from _effective_routes(candidates())
        elif isinstance(route, APIRoute):
            yield route, route
        elif isinstance(getattr(route, "original_route", None), APIRoute):
            yield route.original_route, route


def route_path(scope: Scope) -> str:
    """The path as the router sees it: without the ``root_path`` a proxy mounted us at."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :]
    return path


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
            path = route_path(scope)
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
