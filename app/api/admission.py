"""Admission before the body is read: inference requests beyond the process's limit
get 503 with Retry-After at once (``{"error": ...}``, the shape every HTTP protocol
here shares), before uvicorn has buffered more than its first read of the body, or,
for a large body beyond the protocol's buffer (``BodyBuffer``), none of it.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.serving import admission
from app.serving.admission import RETRY_AFTER_S, Admission

OPERATOR_PATHS = ("/admin/", "/v2/repository/")


def declared_length(scope: Scope) -> int:
    """The body size a request declares (0 without a valid Content-Length; the body
    limit middleware bounds a chunked body while it streams)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) <= 12 else 0
    return 0


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, gate: Admission, on_refuse: Callable[[], None]) -> None:
        self.app = app
        self.gate = gate
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # inference routes are the POSTs; GETs (health, metadata, metrics) and the
        # operator's own calls always pass, unless the server dropped the body already
        if not scope.get(admission.REFUSE_KEY) and (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].startswith(OPERATOR_PATHS)
        ):
            release = scope.get(admission.RELEASE_KEY)
            if release is not None:
                release()
            await self.app(scope, receive, send)
            return
        size = declared_length(scope)
        admitted = not scope.get(admission.REFUSE_KEY) and self.gate.try_enter(size)
        release = scope.get(admission.RELEASE_KEY)
        if release is not None:  # the gate counts the body from here, or it is refused
            release()
        if not admitted:
            self.on_refuse()
            body = orjson.dumps({"error": self.gate.refusal()})
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"retry-after", str(RETRY_AFTER_S).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        token = admission.holding.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            admission.holding.reset(token)
            self.gate.leave(size)
