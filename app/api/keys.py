"""API keys on every HTTP route that is not exempt (pure ASGI: a few microseconds).

Off unless ``API_KEYS`` is set. Health probes, metrics, the docs and the playground
page stay open by default (``API_KEY_EXEMPT``); the admin routes keep their own
token. A refusal is a 401 ``{"error": ...}``, the error shape every HTTP protocol
here shares, with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.fastpath import route_path
from app.auth import KeyRing, presented_key


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyRing, exempt: tuple[str, ...]) -> None:
        self.app = app
        self.keys = keys
        self.exact = frozenset(p for p in exempt if not p.endswith("/*"))
        self.prefixes = tuple(p[:-1] for p in exempt if p.endswith("/*"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_exempt(route_path(scope)):
            await self.app(scope, receive, send)
            return
        authorization = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
        if self.keys.accepts(presented_key(authorization, api_key)):
            await self.app(scope, receive, send)
            return
        missing = authorization is None and api_key is None
        problem = "an API key is required" if missing else "the API key is not valid"
        body = orjson.dumps(
            {"error": f"authorization: {problem}; send X-API-Key or Authorization: Bearer"}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="keras-serve"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _is_exempt(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)
