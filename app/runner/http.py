"""Uvicorn's httptools protocol with limits on the request head.

httptools (llhttp) keeps a partial header in memory for as long as it grows, and uvicorn
starts no timer before a request's first byte nor while its head trickles in: endless
header lines or slowloris sockets hold memory and connections without bound. This
subclass keeps httptools' speed (h11's ``h11_max_incomplete_event_size`` would bound the
size too, but parses in Python) and adds, per connection:

- a bound on the bytes of the request head (request line and headers): 431 beyond it,
  memory held at most the bound plus one read (256 KiB);
- a bound on the number of header lines: 431;
- a time limit for the head, from the connection's start, or from the first read of a
  later request's head that did not hold all of it: 408 and the connection closed;
- the idle keep-alive timeout is uvicorn's own (``timeout_keep_alive``).

It also holds refused clients to their ``Retry-After``: after a 503 the connection's
next request is not read until that time has passed (at most ``MAX_HOLD_S``). A client
that retries at once would otherwise have the event loop answering refusals in a
tight loop, ahead of the admitted requests it is meant to protect; held, it waits in
its own socket buffer, costing nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.serving.admission import HOLD_KEY, REFUSE_KEY, RELEASE_KEY, BodyBuffer, declared_size
from app.settings import get_settings

log = logging.getLogger("app.http")


def _response(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: "
        + str(len(message)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + message
    )


TOO_LARGE = _response(b"431 Request Header Fields Too Large", b"request head too large")
TOO_MANY = _response(b"431 Request Header Fields Too Large", b"too many header fields")
TOO_SLOW = _response(b"408 Request Timeout", b"request head not received in time")
MAX_HOLD_S = 5.0
# bodies declared larger than this take a place in the process's BodyBuffer before
# uvicorn keeps them; smaller ones are kept at once (a thousand of them is 16 MiB)
RESERVE_FROM = 16 * 1024


class _Refused(Exception):
    """Stops the parser once the connection was refused."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes: int = 0  # read from the settings by the first connection
    max_headers: int = 0
    head_timeout: float = 0.0
    bodies: BodyBuffer = BodyBuffer(0)  # the process's, made by the first connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cls = type(self)
        if not cls.max_head_bytes:
            settings = get_settings()
            cls.max_head_bytes = settings.max_header_bytes
            cls.max_headers = settings.max_headers
            cls.head_timeout = settings.header_timeout_s
            cls.bodies = BodyBuffer(settings.max_in_flight_bytes)
        super().connection_made(transport)
        self.connected_at = self.loop.time()  # read by a draining server (app.runner.process)
        self._head_bytes = 0
        self._in_head = True
        self._head_started = False
        self._dropping = False  # this request's body is not kept: the middleware refuses it
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            cls.head_timeout, self._head_timed_out
        )

    def data_received(self, data: bytes) -> None:
        """Uvicorn's, with the head counted, and quiet once the connection was refused."""
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self.transport.is_closing():  # refused by us, or closed meanwhile
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_head:  # the head is incomplete after this read
            if self._head_bytes > self.max_head_bytes:
                self._refuse(TOO_LARGE, "request head over %d bytes", self.max_head_bytes)
            elif self._head_started and self._head_timer is None:  # it trickles in
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def on_message_begin(self) -> None:
        self._head_started = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_started = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if len(self.headers) > self.max_headers:
            self._refuse(TOO_MANY, "more than %d header fields", self.max_headers)
            raise _Refused  # the parser stops; data_received sees a closing transport
        super().on_headers_complete()
        self._reserve_body()

    def _reserve_body(self) -> None:
        """A large body takes its place in the BodyBuffer before a byte of it is kept
        (the scope carries the function that gives it back); without one it is dropped
        as it arrives and the admission middleware answers 503 (it sees REFUSE_KEY)."""
        self._dropping = False
        size = declared_size(self.headers)
        if size < RESERVE_FROM or self.cycle is None or self.parser.should_upgrade():
            return  # (an upgrade is no HTTP request the middleware would see)
        scope = cast("dict[str, object]", self.scope)
        release = self.bodies.reserve(size)
        if release is not None:
            scope[RELEASE_KEY] = release
        else:
            self._dropping = True
            scope[REFUSE_KEY] = True

    def _release_bodies(self) -> None:
        """Give back the places of requests the middleware will not see: the connection
        closed before their turn (the middleware gives back all the others)."""
        cycles = [self.cycle] if self.cycle is not None else []
        for cycle in [*cycles, *(cycle for cycle, _ in self.pipeline)]:
            release = cycle.scope.get(RELEASE_KEY)
            if callable(release):
                release()

    def on_body(self, body: bytes) -> None:
        if not self._dropping:
            super().on_body(body)

    def on_message_complete(self) -> None:
        # whatever comes next on this connection is the next request's head (uvicorn's
        # keep-alive timer covers an idle wait for it; a head that does not arrive in
        # one read starts our timer in data_received, so the usual case costs no timer)
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        hold = cycle.scope.get(HOLD_KEY) if cycle is not None else None
        if cycle is not None:  # the answer is out: the body it buffered is garbage, and
            cycle.body = bytearray()  # uvicorn keeps the cycle until the next request
        super().on_response_complete()
        if isinstance(hold, (int, float)) and hold > 0 and not self.transport.is_closing():
            self._unset_keepalive_if_required()  # re-armed when reading resumes
            self.flow.pause_reading()
            self.loop.call_later(min(hold, MAX_HOLD_S), self._end_hold)

    def _end_hold(self) -> None:
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.cycle is None or self.cycle.response_complete:  # idle: keep-alive applies
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._release_bodies()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(TOO_SLOW, "request head not complete within %.0f s", self.head_timeout)

    def _refuse(self, response: bytes, why: str, limit: float) -> None:
        log.debug("closing %s: " + why, self.client, limit)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._in_head = False
        self.transport.write(response)
        self.transport.close()
