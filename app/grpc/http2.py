"""HTTP/2 as unary gRPC calls use it (RFC 9113), on the app's event loop.

keras-serve's own gRPC transport. ``grpc.aio`` spends about 120 µs of event-loop time
on each call in its Python layers (measured here: 9,900 ServerLive calls/s at best);
this connection costs a small part of that, because a unary call needs little of
HTTP/2: one HEADERS (and CONTINUATION) block and DATA in, HEADERS, DATA and trailers
out. What it does not need is refused rather than half-done: a client's
PUSH_PROMISE, frames out of order, header blocks over the limit (connection errors,
GOAWAY then close).

* Request headers are decoded with ``hpack`` (python-hyper's HPACK, the one ``h2``
  uses). A block that leaves the decoder's dynamic table unchanged (a client that
  repeats its headers sends only table indices) is decoded once per table state and
  then read from a small cache.
* Responses never use the dynamic table: their headers are precomputed bytes.
* Flow control both ways: the peer's windows bound what is sent (the rest waits for
  WINDOW_UPDATE), and windows are given back as request data is read. Memory is
  bounded by the gRPC layer (message size limit, the process's buffer budget) and by
  ``MAX_CONCURRENT_STREAMS``; a peer that stops reading pauses reading from it.

The gRPC meaning of a stream (paths, status trailers, deadlines) is ``calls.py``'s;
this module only moves frames.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Protocol, cast

import hpack
from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
# flags
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 11
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE = 1, 2, 3, 4
MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 5, 6

DEFAULT_WINDOW = 65_535
DEFAULT_FRAME = 16_384
MAX_WINDOW = 2**31 - 1
# what this server allows its peers
STREAMS_PER_CONNECTION = 256
STREAM_WINDOW = 1 << 20  # a request up to 1 MiB needs no WINDOW_UPDATE
CONNECTION_WINDOW = 1 << 24
HEADER_LIST_LIMIT = 16_384  # decoded size, as HPACK counts it (and gRPC's default)
HEADER_BLOCK_LIMIT = 65_536  # encoded bytes across HEADERS and CONTINUATION frames
HEADER_CACHE = 64  # decoded blocks kept per connection

_HEAD = struct.Struct(">BHBBI")  # length (1 + 2 bytes), type, flags, stream id
_SETTING = struct.Struct(">HI")
_WORD = struct.Struct(">I")

Headers = list[tuple[str, str]]


class ProtocolViolation(Exception):
    """The peer broke the protocol: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _HEAD.pack(size >> 16, size & 0xFFFF, kind, flags, stream_id) + payload


class Stream:
    """One request/response exchange: what arrived, and what still waits to be sent."""

    __slots__ = (
        "answered",
        "body",
        "call",
        "ended",
        "headers",
        "id",
        "on_reset",
        "pending",
        "received",
        "send_window",
    )

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.headers: Headers = []
        self.body = bytearray()
        self.received = 0  # request bytes since the last stream WINDOW_UPDATE
        self.ended = False  # the peer sent END_STREAM
        self.answered = False  # this side sent END_STREAM (or reset the stream)
        self.send_window = send_window
        self.pending: list[bytes] = []  # DATA payload, then trailers, blocked by windows
        self.on_reset: Callable[[], None] | None = None  # the gRPC layer's cleanup
        self.call: object = None  # the gRPC layer's own record of the call


class CallHandler(Protocol):
    """The gRPC layer, as a connection sees it."""

    def headers_received(self, connection: Http2Connection, stream: Stream) -> None: ...

    def data_received(self, connection: Http2Connection, stream: Stream) -> None: ...

    def request_ended(self, connection: Http2Connection, stream: Stream) -> None: ...


class Http2Connection(asyncio.Protocol):
    """The server side of one HTTP/2 connection."""

    def __init__(self, handler: CallHandler, on_close: Callable[[Http2Connection], None]) -> None:
        self.handler = handler
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface = False
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = HEADER_LIST_LIMIT
        self.decoder.max_allowed_table_size = 4096
        self.cache: dict[bytes, tuple[int, Headers]] = {}
        self.table_state = 0  # bumped whenever a block changed the decoder's table
        self.streams: dict[int, Stream] = {}
        self.last_stream_id = 0
        self.continuing: tuple[int, int, bytearray] | None = None  # stream, flags, block
        self.peer_window = DEFAULT_WINDOW  # peer's initial stream window
        self.peer_frame = DEFAULT_FRAME
        self.send_window = DEFAULT_WINDOW  # the connection's
        self.received = 0  # connection bytes since the last WINDOW_UPDATE
        self.blocked: dict[int, Stream] = {}  # streams waiting on a window, in order
        self.going_away = False  # GOAWAY sent: no new streams
        self.closed = False

    # ----------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        settings = b"".join(
            _SETTING.pack(key, value)
            for key, value in (
                (MAX_CONCURRENT_STREAMS, STREAMS_PER_CONNECTION),
                (INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (MAX_HEADER_LIST_SIZE, HEADER_LIST_LIMIT),
                (ENABLE_PUSH, 0),
            )
        )
        grow = _WORD.pack(CONNECTION_WINDOW - DEFAULT_WINDOW)
        self.transport.write(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, grow))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        self.blocked.clear()
        for stream in streams.values():
            self._reset_locally(stream)
        self.on_close(self)

    def pause_writing(self) -> None:
        """The peer reads slower than it asks: read nothing more from it until it caught up."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        try:
            at = 0
            if not self.preface:
                if len(buffer) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buffer)):
                        raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if buffer[: len(PREFACE)] != PREFACE:
                    raise ProtocolViolation(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.preface = True
                at = len(PREFACE)
            end = len(buffer)
            while end - at >= 9:
                high, low, kind, flags, stream_id = _HEAD.unpack_from(buffer, at)
                length = (high << 16) | low
                stream_id &= 0x7FFFFFFF
                if length > DEFAULT_FRAME:
                    raise ProtocolViolation(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if end - at - 9 < length:
                    break
                payload = bytes(buffer[at + 9 : at + 9 + length])
                at += 9 + length
                self._frame(kind, flags, stream_id, payload)
                if self.closed:
                    return
            del buffer[:at]
        except ProtocolViolation as exc:
            self.go_away(exc.code, str(exc))
            self.close()

    # ------------------------------------------------------------------ frames
    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise ProtocolViolation(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, stream_id, payload)
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == PING:
            if stream_id or len(payload) != 8:
                raise ProtocolViolation(PROTOCOL_ERROR, "a malformed PING")
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise ProtocolViolation(PROTOCOL_ERROR, "a malformed RST_STREAM")
            self._idle_check(stream_id)
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self.blocked.pop(stream_id, None)
                self._reset_locally(stream)
        elif kind == PRIORITY:
            if not stream_id or len(payload) != 5:
                raise ProtocolViolation(PROTOCOL_ERROR, "a malformed PRIORITY")
        elif kind == PUSH_PROMISE:
            raise ProtocolViolation(PROTOCOL_ERROR, "a client may not push")
        elif kind == GOAWAY:
            pass  # the peer opens no more streams; the ones it has finish as usual
        # other frame types are ignored, as RFC 9113 §4.1 says

    def _idle_check(self, stream_id: int) -> None:
        if stream_id > self.last_stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, f"a frame for idle stream {stream_id}")

    def _unpad(self, flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise ProtocolViolation(PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        self._idle_check(stream_id)
        size = len(payload)  # padding included: flow control counts the whole frame
        self.received += size
        if self.received >= CONNECTION_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, _WORD.pack(self.received)))
            self.received = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # reset or answered already: its data is dropped
        if stream.ended:
            raise ProtocolViolation(STREAM_CLOSED, f"DATA after END_STREAM on stream {stream_id}")
        stream.body += self._unpad(flags, payload)
        self.handler.data_received(self, stream)
        if flags & END_STREAM:
            self._request_ended(stream)
        elif not stream.answered:
            stream.received += size
            if stream.received >= STREAM_WINDOW // 2:
                self._write(frame(WINDOW_UPDATE, 0, stream_id, _WORD.pack(stream.received)))
                stream.received = 0

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id % 2:
            raise ProtocolViolation(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise ProtocolViolation(PROTOCOL_ERROR, "a malformed HEADERS priority")
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self.continuing = (stream_id, flags, bytearray(block))

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuing is None or self.continuing[0] != stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION out of place")
        block = self.continuing[2]
        block += payload
        if len(block) > HEADER_BLOCK_LIMIT:
            raise ProtocolViolation(ENHANCE_YOUR_CALM, "a header block over the limit")
        if flags & END_HEADERS:
            first_flags = self.continuing[1]
            self.continuing = None
            self._header_block(stream_id, first_flags, bytes(block))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decode(block)  # always: the table must follow the peer's
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers: only END_STREAM means anything to a unary call
            if stream.ended or not flags & END_STREAM:
                raise ProtocolViolation(PROTOCOL_ERROR, f"a second header block on {stream_id}")
            self._request_ended(stream)
            return
        if stream_id <= self.last_stream_id:
            return  # a stream this side closed early (trailers, say): nothing to do
        self.last_stream_id = stream_id
        if self.going_away or len(self.streams) >= STREAMS_PER_CONNECTION:
            self._write(frame(RST_STREAM, 0, stream_id, _WORD.pack(REFUSED_STREAM)))
            return
        stream = Stream(stream_id, self.peer_window)
        stream.headers = headers
        stream.ended = bool(flags & END_STREAM)
        self.streams[stream_id] = stream
        self.handler.headers_received(self, stream)
        if stream.ended and not stream.answered:
            self.handler.request_ended(self, stream)

    def _decode(self, block: bytes) -> Headers:
        cached = self.cache.get(block)
        if cached is not None and cached[0] == self.table_state:
            return cached[1]
        before = self._table_state()
        try:
            headers = [(str(name), str(value)) for name, value in self.decoder.decode(block)]
        except (HPACKError, UnicodeDecodeError, ValueError, IndexError) as exc:
            reason = f"a header block HPACK cannot read: {exc}"
            raise ProtocolViolation(COMPRESSION_ERROR, reason) from None
        if self._table_state() != before:
            self.table_state += 1
        else:
            if len(self.cache) >= HEADER_CACHE:
                self.cache.clear()
            self.cache[block] = (self.table_state, headers)
        return headers

    def _table_state(self) -> tuple[int, int, int]:
        """Tells apart any two states of the decoder's dynamic table that a block could
        leave (an insertion puts a new tuple first, a size update changes the size)."""
        entries = self.decoder.header_table.dynamic_entries
        return len(entries), self.decoder.header_table.maxsize, id(entries[0]) if entries else 0

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "a SETTINGS frame of odd size")
        for at in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, at)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                delta, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise ProtocolViolation(PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.peer_frame = value
            elif key == ENABLE_PUSH and value > 1:
                raise ProtocolViolation(PROTOCOL_ERROR, "ENABLE_PUSH must be 0 or 1")
        self._write(frame(SETTINGS, ACK, 0))
        self._flush_blocked()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "a WINDOW_UPDATE of the wrong size")
        increment = _WORD.unpack(payload)[0] & 0x7FFFFFFF
        if not increment:
            raise ProtocolViolation(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        if not stream_id:
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, "the connection window overflowed")
        else:
            self._idle_check(stream_id)
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                self._write(frame(RST_STREAM, 0, stream_id, _WORD.pack(FLOW_CONTROL_ERROR)))
                self.streams.pop(stream_id, None)
                self.blocked.pop(stream_id, None)
                self._reset_locally(stream)
                return
        self._flush_blocked()

    def _request_ended(self, stream: Stream) -> None:
        stream.ended = True
        if stream.answered:
            self._forget(stream)
        else:
            self.handler.request_ended(self, stream)

    # ------------------------------------------------------------------ sending
    def respond(self, stream: Stream, head: bytes, data: bytes, trailers: bytes) -> None:
        """Answer a stream: response headers (an encoded block; empty for a
        trailers-only answer), DATA, and trailers that end it."""
        if stream.answered or self.closed:
            return
        stream.answered = True
        out = [frame(HEADERS, END_HEADERS, stream.id, head)] if head else []
        if data:
            stream.pending = [data, trailers]
            self._send_pending(stream, out)
        else:
            out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, trailers))
            self._finish(stream, out)
        self._write(b"".join(out))

    def _send_pending(self, stream: Stream, out: list[bytes]) -> None:
        data = stream.pending[0]
        at = 0
        while at < len(data):
            room = min(self.send_window, stream.send_window, self.peer_frame)
            if room <= 0:
                break
            chunk = data[at : at + room]
            at += len(chunk)
            self.send_window -= len(chunk)
            stream.send_window -= len(chunk)
            out.append(frame(DATA, 0, stream.id, chunk))
        if at < len(data):
            stream.pending[0] = data[at:]
            self.blocked[stream.id] = stream
            return
        out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, stream.pending[1]))
        stream.pending = []
        self.blocked.pop(stream.id, None)
        self._finish(stream, out)

    def _flush_blocked(self) -> None:
        if not self.blocked or self.send_window <= 0:
            return
        out: list[bytes] = []
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                break
            if stream.send_window > 0:
                self._send_pending(stream, out)
        if out:
            self._write(b"".join(out))

    def _finish(self, stream: Stream, out: list[bytes]) -> None:
        """This side ended the stream: done with it, or ask the peer to stop sending."""
        if stream.ended:
            self._forget(stream)
        else:  # answered before the whole request came: RFC 9113 §8.1
            out.append(frame(RST_STREAM, 0, stream.id, _WORD.pack(NO_ERROR)))
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        self.streams.pop(stream.id, None)
        self.blocked.pop(stream.id, None)

    def _reset_locally(self, stream: Stream) -> None:
        """The peer reset the stream or the connection closed: stop its work."""
        stream.answered = True
        callback, stream.on_reset = stream.on_reset, None
        if callback is not None:
            callback()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    # --------------------------------------------------------------- shutting down
    def go_away(self, code: int = NO_ERROR, reason: str = "") -> None:
        """No new streams (those already open finish)."""
        if not self.going_away:
            self.going_away = True
            payload = _WORD.pack(self.last_stream_id) + _WORD.pack(code) + reason.encode()[:256]
            self._write(frame(GOAWAY, 0, 0, payload))

    @property
    def idle(self) -> bool:
        return not self.streams

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
