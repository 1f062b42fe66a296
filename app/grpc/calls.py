"""gRPC over HTTP/2 streams: paths to servicer methods, messages, status trailers,
deadlines (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).

Each unary call becomes one task that runs the servicer's method (the same
``InferenceServicer`` grpc.aio serves) with a :class:`CallContext` offering what the
servicer asks of a gRPC context: metadata, the time remaining, abort.

* ``grpc-timeout`` sets the call's deadline; when it passes the call is cancelled and
  answered DEADLINE_EXCEEDED. RST_STREAM from the client cancels it too.
* A message over MAX_BODY_BYTES is RESOURCE_EXHAUSTED as soon as its 5-byte prefix
  says so, before it is buffered. Messages being received take their declared size
  from the process's gRPC buffer budget (MAX_IN_FLIGHT_BYTES; a lone message always
  fits); beyond it, UNAVAILABLE.
* ``grpc-encoding`` gzip and deflate are read (decompressed size bounded by
  MAX_BODY_BYTES); answers are never compressed. Other encodings: UNIMPLEMENTED.
* Methods of the service that keras-serve does not implement, and streaming ones, are
  UNIMPLEMENTED, as grpc.aio answers them.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message
from tritonclient.grpc import service_pb2, service_pb2_grpc

from app.grpc.http2 import Http2Connection, Stream
from app.serving.admission import BodyBuffer
from app.serving.sweeper import DeadlineSweeper

log = logging.getLogger(__name__)
SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
ENCODINGS = {"identity": 0, "gzip": 31, "deflate": 15}  # zlib's wbits for each
ACCEPT_ENCODING = "identity,deflate,gzip"
UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
LARGE_MESSAGE = 65_536  # compressed messages from this size decompress off the loop
_PREFIX = struct.Struct(">BI")


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) in a first byte holding ``first``'s flags."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(text: bytes) -> bytes:
    return _integer(len(text), 7) + text


def literal(name: bytes, value: bytes) -> bytes:
    """A header field HPACK-encoded without indexing: answers never touch the table."""
    return b"\x00" + _string(name) + _string(value)


# :status 200 (static index 8); content-type (static name 31): application/grpc
RESPONSE_HEAD = b"\x88" + _integer(31, 4) + _string(b"application/grpc")
TRAILERS_OK = literal(b"grpc-status", b"0")


def percent_encoded(message: str) -> bytes:
    """``grpc-message`` as gRPC sends it: printable ASCII but ``%`` as is, the rest of
    the UTF-8 bytes as %XX."""
    return b"".join(
        bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in message.encode()
    )


def status_block(code: grpc.StatusCode, message: str, head: bool) -> bytes:
    """Trailers for a status (with the response head first for a trailers-only answer)."""
    block = literal(b"grpc-status", str(code.value[0]).encode())
    if message:
        block += literal(b"grpc-message", percent_encoded(message))
    if code is grpc.StatusCode.UNIMPLEMENTED:
        block += literal(b"grpc-accept-encoding", ACCEPT_ENCODING.encode())
    return (RESPONSE_HEAD + block) if head else block


def http_status(status: int) -> bytes:
    """A plain HTTP answer, for requests that are not gRPC at all."""
    return _integer(8, 4) + _string(str(status).encode())  # :status, static name 8


def parse_timeout(text: str) -> float | None:
    """Seconds from a ``grpc-timeout`` value (at most 8 digits and a unit), or None."""
    value, unit = text[:-1], text[-1:]
    if not (0 < len(value) <= 8 and value.isdigit() and unit in UNITS):
        return None
    return int(value) * UNITS[unit]


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallContext:
    """What the servicer asks of a call: its metadata, the time left, abort."""

    __slots__ = ("deadline", "metadata")
    # this server cancels a running call at its deadline and at REQUEST_TIMEOUT_S, so
    # the servicer need not set a timer of its own (about 4 µs a call)
    time_bounded = True

    def __init__(self, deadline: float | None, metadata: tuple[tuple[str, str], ...]) -> None:
        self.deadline = deadline  # time.monotonic() seconds
        self.metadata = metadata

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Abort(code, details)


Method = Callable[[Any, CallContext], Awaitable[Message]]


@dataclass(slots=True)
class Entry:
    request: type[Message]
    method: Method | None  # None: not implemented here


@dataclass(slots=True, eq=False)
class Call:
    """A call between its headers and its answer."""

    entry: Entry
    context: CallContext
    encoding: int  # zlib wbits, 0 for identity
    declared: int = -1  # the message's length from its prefix, once read
    release: Callable[[], None] | None = None  # its place in the buffer budget
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    stream: tuple[Http2Connection, Stream] | None = None  # while it runs


def method_table(servicer: service_pb2_grpc.GRPCInferenceServiceServicer) -> dict[str, Entry]:
    """Every path of the service: the servicer's own methods, the rest unimplemented."""
    base = service_pb2_grpc.GRPCInferenceServiceServicer
    table = {}
    for method in SERVICE.methods:
        own = getattr(type(servicer), method.name, None) is not getattr(base, method.name)
        unary = not (method.client_streaming or method.server_streaming)
        table[f"/{SERVICE.full_name}/{method.name}"] = Entry(
            getattr(service_pb2, method.input_type.name),
            getattr(servicer, method.name) if own and unary else None,
        )
    return table


class GrpcCalls:
    """The gRPC layer over HTTP/2 connections (``CallHandler``)."""

    def __init__(
        self,
        servicer: service_pb2_grpc.GRPCInferenceServiceServicer,
        max_message: int,
        buffer_budget: int,
        time_limit: float = 30.0,
    ) -> None:
        self.table = method_table(servicer)
        self.max_message = max_message
        self.budget = BodyBuffer(buffer_budget)
        # REQUEST_TIMEOUT_S, as HTTP's middleware keeps it: one sweeper, not a timer a call
        self.limits: DeadlineSweeper[Call] = DeadlineSweeper(time_limit, self._time_up)

    # -------------------------------------------------------------- from HTTP/2
    def headers_received(self, connection: Http2Connection, stream: Stream) -> None:
        pseudo: dict[str, str] = {}
        metadata: list[tuple[str, str]] = []
        timeout = encoding = content_type = None
        for name, value in stream.headers:
            if name[0] == ":":
                pseudo[name] = value
            elif name == "content-type":
                content_type = value
            elif name == "grpc-timeout":
                timeout = value
            elif name == "grpc-encoding":
                encoding = value
            elif name != "te":
                metadata.append((name, value))
        if pseudo.get(":method") != "POST":
            self._refuse_http(connection, stream, 405)
            return
        if content_type is None or not content_type.startswith("application/grpc"):
            self._refuse_http(connection, stream, 415)
            return
        path = pseudo.get(":path", "")
        entry = self.table.get(path)
        if entry is None or entry.method is None:
            what = "not implemented" if entry is not None else "not found"
            self.fail(connection, stream, grpc.StatusCode.UNIMPLEMENTED, f"method {what}: {path}")
            return
        wbits = ENCODINGS.get(encoding or "identity")
        if wbits is None:
            self.fail(
                connection,
                stream,
                grpc.StatusCode.UNIMPLEMENTED,
                f"grpc-encoding: {encoding!r} is not supported; send one of {ACCEPT_ENCODING}",
            )
            return
        deadline = None
        if timeout is not None:
            seconds = parse_timeout(timeout)
            if seconds is None:
                self.fail(
                    connection,
                    stream,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"grpc-timeout: {timeout!r} is not 1 to 8 digits and a unit (H M S m u n)",
                )
                return
            deadline = time.monotonic() + seconds
        stream.call = Call(entry, CallContext(deadline, tuple(metadata)), wbits)

    def data_received(self, connection: Http2Connection, stream: Stream) -> None:
        call = stream.call
        if not isinstance(call, Call):  # answered at its headers: no data comes here
            return
        if call.declared >= 0 or len(stream.body) < 5:
            if call.declared >= 0 and len(stream.body) > call.declared + 5:
                self.fail(
                    connection,
                    stream,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "request: a unary call takes one message; more data followed it",
                )
            return
        flag, length = _PREFIX.unpack_from(stream.body)
        if length > self.max_message:
            self.fail(
                connection,
                stream,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request: the message of {length} bytes is larger than the limit of "
                f"{self.max_message} bytes (MAX_BODY_BYTES)",
            )
            return
        if flag > 1 or (flag and not call.encoding):
            self.fail(
                connection,
                stream,
                grpc.StatusCode.INVALID_ARGUMENT,
                "request: a compressed message needs grpc-encoding gzip or deflate"
                if flag == 1
                else f"request: message flag {flag} is not 0 or 1",
            )
            return
        release = self.budget.reserve(length)
        if release is None:
            self.fail(
                connection,
                stream,
                grpc.StatusCode.UNAVAILABLE,
                f"the server is at its limit of {self.budget.limit} bytes of gRPC messages "
                "being received; retry shortly",
            )
            return
        call.declared, call.release = length, release
        stream.on_reset = lambda: self._reset(call)
        self.data_received(connection, stream)  # more than one message already?

    def request_ended(self, connection: Http2Connection, stream: Stream) -> None:
        call = stream.call
        if not isinstance(call, Call):
            return
        body = stream.body
        if call.declared < 0 or len(body) != call.declared + 5:
            self.fail(
                connection,
                stream,
                grpc.StatusCode.INVALID_ARGUMENT,
                "request: a unary call takes exactly one whole message"
                if call.declared < 0 or len(body) < call.declared + 5
                else "request: a unary call takes one message; more data followed it",
            )
            return
        stream.body = bytearray()
        message = body[5:] if len(body) > 5 else b""
        loop = asyncio.get_running_loop()
        call.task = loop.create_task(
            self._run(connection, stream, call, bytes(message), body[0] == 1)
        )
        stream.on_reset = lambda: self._reset(call)
        if call.context.deadline is not None:  # the client's own: kept to the millisecond
            delay = call.context.deadline - time.monotonic()
            call.timer = loop.call_later(delay, self._expire, connection, stream, call)
        call.stream = (connection, stream)
        self.limits.add(call)

    # --------------------------------------------------------------- the call
    async def _run(
        self,
        connection: Http2Connection,
        stream: Stream,
        call: Call,
        message: bytes,
        compressed: bool,
    ) -> None:
        try:
            if compressed:
                message = await self._decompress(message, call.encoding)
            try:
                request = call.entry.request.FromString(message)
            except DecodeError:
                name = call.entry.request.DESCRIPTOR.name
                invalid = Abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid {name}")
                raise invalid from None
            assert call.entry.method is not None
            response = await call.entry.method(request, call.context)
            data = response.SerializeToString()
            framed = _PREFIX.pack(0, len(data)) + data
            connection.respond(stream, RESPONSE_HEAD, framed, TRAILERS_OK)
        except Abort as exc:
            self.fail(connection, stream, exc.code, exc.details)
        except asyncio.CancelledError:
            pass  # its deadline passed (answered then), or the client reset it or went away
        except Exception:
            log.exception("unhandled error in %s", call.entry.request.DESCRIPTOR.name)
            self.fail(connection, stream, grpc.StatusCode.INTERNAL, "internal error")
        finally:
            self._done(call)

    async def _decompress(self, message: bytes, wbits: int) -> bytes:
        if len(message) < LARGE_MESSAGE:
            return self._inflate(message, wbits)
        return await asyncio.get_running_loop().run_in_executor(None, self._inflate, message, wbits)

    def _inflate(self, message: bytes, wbits: int) -> bytes:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(message, self.max_message + 1)
        except zlib.error as exc:
            reason = f"request: cannot decompress: {exc}"
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, reason) from None
        if len(out) > self.max_message:
            raise Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request: the message decompresses to more than the limit of "
                f"{self.max_message} bytes (MAX_BODY_BYTES)",
            )
        if not inflater.eof:
            reason = "request: the compressed message is cut short"
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
        return out

    def _expire(
        self,
        connection: Http2Connection,
        stream: Stream,
        call: Call,
        message: str = "deadline exceeded",
    ) -> None:
        """The deadline passed: answer now, and drop the work (a task cancelled before
        its first step never runs, so the answer cannot be left to it)."""
        call.timer = None
        self.fail(connection, stream, grpc.StatusCode.DEADLINE_EXCEEDED, message)
        if call.task is not None:
            call.task.cancel()

    def _time_up(self, call: Call) -> None:
        """REQUEST_TIMEOUT_S passed while the call ran."""
        if call.stream is not None:
            limit = self.limits.seconds
            message = f"the request took longer than its time limit ({limit:g} s)"
            self._expire(*call.stream, call, message)

    def _reset(self, call: Call) -> None:
        if call.task is not None:
            call.task.cancel()
        self._done(call)

    def _done(self, call: Call) -> None:
        self.limits.discard(call)
        call.stream = None
        release, call.release = call.release, None
        if release is not None:
            release()
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    # --------------------------------------------------------------- answers
    def fail(
        self, connection: Http2Connection, stream: Stream, code: grpc.StatusCode, message: str
    ) -> None:
        """A trailers-only answer with the status; the call's data is no longer read."""
        stream.body.clear()
        if isinstance(stream.call, Call):
            self._done(stream.call)
        connection.respond(stream, b"", b"", status_block(code, message, head=True))

    def _refuse_http(self, connection: Http2Connection, stream: Stream, status: int) -> None:
        connection.respond(stream, b"", b"", http_status(status))
