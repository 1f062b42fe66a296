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


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def refusal(self) -> str:
        return f"the server is at its limit of {self.limit} requests in flight; retry shortly"
