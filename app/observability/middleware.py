"""One pure-ASGI middleware for what every HTTP request carries: its trace context,
its request id, the request metrics and the access log line.

Pure ASGI (not BaseHTTPMiddleware) and a single layer: each layer costs a frame and
a wrapped ``send`` per request, and these four jobs read the same headers and wrap
the same response start. The endpoint's context changes (which model and version
answered) reach us through :data:`current`.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import tracing
from app.observability.context import RequestFacts, current
from app.observability.logs import log_access
from app.observability.metrics import Metrics, protocol_of
from app.serving.admission import HOLD_KEY

UNTRACKED = ("/metrics", "/health/", "/docs", "/openapi.json")


def _valid_request_id(value: bytes) -> str | None:
    text = value.decode("latin-1")
    if 0 < len(text) <= 128 and text.isprintable() and " " not in text:
        return text
    return None


def retry_after(headers: Any) -> float:
    """The seconds of a response's ``Retry-After`` (0 when it has none or a date)."""
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return 0.0
    return 0.0


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = traceparent = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = _valid_request_id(value)
            elif key == b"traceparent":
                traceparent = value.decode("latin-1")
        trace = tracing.start_trace(traceparent)
        trace_token = tracing.current_trace.set(trace)
        facts = RequestFacts(request_id=rid or tracing.random_id(128))
        token = current.set(facts)
        status = 500
        started = time.perf_counter()

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 503:  # overloaded: hold the client to its Retry-After
                    scope[HOLD_KEY] = retry_after(message.get("headers", ()))
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", facts.request_id.encode("latin-1")),
                    (b"traceparent", trace.traceparent.encode()),
                ]
            await send(message)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            in_flight.dec()
            elapsed = time.perf_counter() - started
            path: str = scope["path"]
            if not path.startswith(UNTRACKED):
                self.metrics.record_request(
                    facts.model, facts.version, protocol_of(path), str(status), elapsed
                )
            if self.access_log:  # a tuple onto a queue: the writer thread formats it
                log_access(
                    scope["method"],
                    path,
                    status,
                    elapsed,
                    facts.request_id,
                    facts.model,
                    facts.version,
                    trace.trace_id,
                )
            current.reset(token)
            tracing.current_trace.reset(trace_token)
            if tracing.exporter.enabled:
                tracing.exporter.export(trace, f"{scope['method']} {scope['path']}")
