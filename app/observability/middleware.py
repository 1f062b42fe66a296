"""One pure-ASGI middleware for request ids, access logs and request metrics.

Pure ASGI (not BaseHTTPMiddleware) keeps the per-request cost to a few
microseconds and lets the endpoint's context changes reach us.
"""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.context import RequestFacts, current
from app.observability.logs import log_access
from app.observability.metrics import Metrics, protocol_of
from app.observability.tracing import trace_id

UNTRACKED = ("/metrics", "/health/", "/docs", "/openapi.json")


def _valid_request_id(value: bytes) -> str | None:
    text = value.decode("latin-1")
    if 0 < len(text) <= 128 and text.isprintable() and " " not in text:
        return text
    return None


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = _valid_request_id(value)
                break
        facts = RequestFacts(request_id=rid or uuid.uuid4().hex)
        token = current.set(facts)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", facts.request_id.encode("latin-1")),
                ]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            path: str = scope["path"]
            if not path.startswith(UNTRACKED):
                protocol = protocol_of(path)
                self.metrics.requests.labels(
                    facts.model, facts.version, protocol, str(status)
                ).inc()
                self.metrics.latency.labels(facts.model, facts.version, protocol).observe(elapsed)
            if self.access_log:  # a tuple onto a queue: the writer thread formats it
                log_access(
                    scope["method"],
                    path,
                    status,
                    elapsed,
                    facts.request_id,
                    facts.model,
                    facts.version,
                    trace_id(),
                )
            current.reset(token)
