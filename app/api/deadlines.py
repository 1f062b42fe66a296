"""A client's deadline, as each protocol states it, capped by the server's own timeout.

HTTP clients send ``X-Request-Timeout: <seconds>``; OIP v2 clients may send the
``timeout`` parameter in microseconds, as Triton reads it. Work still queued when the
deadline passes is dropped by the data plane before it reaches the runtime.
"""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.requests import Request

from app.api.errors import ClientError

HEADER = "x-request-timeout"
HEADER_BYTES = HEADER.encode()


def deadline_of(request: Request, timeout_us: Any = None) -> float | None:
    """The request's deadline on ``time.monotonic()``'s clock, or None when it has none."""
    raw = None
    for name, value in request.scope["headers"]:  # no Headers object on the hot path
        if name == HEADER_BYTES:
            raw = value.decode("latin-1")
            break
    if raw is None and timeout_us is None:
        return None
    cap: float = request.app.state.settings.request_timeout_s
    seconds = cap
    if raw is not None:
        try:
            given = float(raw)
        except ValueError:
            given = math.nan
        if not (math.isfinite(given) and given > 0):
            raise ClientError(
                400, f"X-Request-Timeout: must be a number of seconds > 0, got {raw!r}"
            )
        seconds = min(seconds, given)
    if timeout_us is not None:
        if type(timeout_us) is not int or timeout_us <= 0:
            problem = f"must be a whole number of microseconds > 0, got {timeout_us!r}"
            raise ClientError(400, f"parameters.timeout: {problem}")
        seconds = min(seconds, timeout_us / 1e6)
    return time.monotonic() + seconds
