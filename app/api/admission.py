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


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, gate: Admission, on_refuse: Callable[[], None]) -> None:
        self.app = app
        self.gate = gate
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        release = scope.get(admission.RELEASE_KEY)
        if release is not None:  # from here the gate counts the body, or it is refused
            release()
        refused = scope.get(admission.REFUSE_KEY)  # the server dropped the body already
        # inference routes are the POSTs; GETs (health, metadata, metrics) and the
        # operator's own calls always pass, unless their body was dropped
        if not refused and (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].startswith(OPERATOR_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        size = admission.declared_size(scope["headers"])
        admitted = not refused and self.gate.try_enter(size)
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
