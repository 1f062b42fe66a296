"""How many inference requests the process takes at once: one counter, two doors.

HTTP requests are admitted by a middleware *before their body is read*, so an
overloaded server holds at most the limit's worth of parsed bodies, not one per
open connection; requests that reach the data plane another way (gRPC, in-process
callers) are admitted there. A request is counted once, whichever door it used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar

# set while a request holds a place, so that the data plane does not count it twice
holding: ContextVar[bool] = ContextVar("admitted", default=False)
# in the ASGI scope of a request answered 503 with Retry-After: the seconds for which
# the HTTP protocol (app/runner/http.py) reads nothing more from that connection
HOLD_KEY = "keras_serve.hold_s"
# in the ASGI scope, set by the HTTP protocol (app/runner/http.py): REFUSE_KEY when it
# dropped the body of a request the admission middleware must refuse; RELEASE_KEY, a
# callable that frees the request's place among bodies buffered but not yet admitted
REFUSE_KEY = "keras_serve.refuse"
RELEASE_KEY = "keras_serve.release"
RETRY_AFTER_S = 1


def declared_size(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The body size a request's raw headers declare (0 without a valid Content-Length;
    the body limit middleware bounds a chunked body while it streams)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) <= 12 else 0
    return 0


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


class BodyBuffer:
    """Bytes of request bodies the HTTP server has buffered for requests that the
    admission middleware has not seen yet.

    A burst of connections is parsed in one turn of the event loop, before any of their
    requests reaches the middleware: each connection's first read (up to 256 KiB) would
    be kept as its body, a thousand clients a quarter of a gigabyte, whatever the
    admission limit. So the protocol reserves a large body's declared size here when
    its head arrives; beyond ``limit`` (a lone body always fits) it drops the body and
    the middleware answers 503. The middleware frees the reservation when it decides,
    from then on the admission byte budget counts the body."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def reserve(self, size: int) -> Callable[[], None] | None:
        """A function that gives the place back (once, however often it is called), or
        None when there is no room."""
        if self.held and self.held + size > self.limit:
            return None
        self.held += size
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.held -= size

        return release
