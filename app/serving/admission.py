"""How many inference requests the process takes at once: one counter, two doors.

HTTP requests are admitted by a middleware *before their body is read*, so an
overloaded server holds at most the limit's worth of parsed bodies, not one per
open connection; requests that reach the data plane another way (gRPC, in-process
callers) are admitted there. A request is counted once, whichever door it used.
"""

from __future__ import annotations

from contextvars import ContextVar

# set while a request holds a place, so that the data plane does not count it twice
holding: ContextVar[bool] = ContextVar("admitted", default=False)
# in the ASGI scope of a request answered 503 with Retry-After: the seconds for which
# the HTTP protocol (app/runner/http.py) reads nothing more from that connection
HOLD_KEY = "keras_serve.hold_s"
RETRY_AFTER_S = 1


class Admission:
    """At most ``limit`` requests, and at most ``byte_limit`` bytes of their bodies, at
    once. A body costs far more memory parsed than on the wire (a 250 KB JSON body of
    100 images parses into about 3 MB of Python lists), so large bodies are bounded by
    their total size as well as by their number. A lone request is always admitted."""

    def __init__(self, limit: int, byte_limit: int | None = None) -> None:
        self.limit = limit
        self.byte_limit = byte_limit
        self.in_flight = 0
        self.bytes_in_flight = 0

    def try_enter(self, size: int = 0) -> bool:
        if self.in_flight >= self.limit:
            return False
        if (
            self.byte_limit is not None
            and self.in_flight
            and self.bytes_in_flight + size > self.byte_limit
        ):
            return False
        self.in_flight += 1
        self.bytes_in_flight += size
        return True

    def leave(self, size: int = 0) -> None:
        self.in_flight -= 1
        self.bytes_in_flight -= size

    def refusal(self) -> str:
        if self.in_flight < self.limit:
            return (
                f"the server is at its limit of {self.byte_limit} bytes of request bodies "
                "in flight; retry shortly"
            )
        return f"the server is at its limit of {self.limit} requests in flight; retry shortly"
