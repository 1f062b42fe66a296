"""keras-serve's own gRPC transport (app/grpc/http2.py, app/grpc/calls.py), frame by
frame: a connection fed raw HTTP/2 bytes, its answers read back with an HPACK decoder.
Real clients (tritonclient.grpc on gRPC core, KServe's on grpc.aio) are in
test_protocol_grpc.py and test_kserve_client.py; here are the cases they never send."""

from __future__ import annotations

import asyncio
import gzip
import struct
from collections.abc import Callable
from typing import Any

import grpc
import hpack
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from app.grpc import http2
from app.grpc.calls import CallContext, GrpcCalls, parse_timeout, percent_encoded
from app.grpc.http2 import Http2Connection

LIVE = "/inference.GRPCInferenceService/ServerLive"
INFER = "/inference.GRPCInferenceService/ModelInfer"
OK = grpc.StatusCode.OK.value[0]


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """ServerLive answers at once; ModelInfer echoes the model name after ``delay``
    (none for the model "quick")."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.cancelled = 0
        self.seen: list[tuple[tuple[str, str], ...]] = []

    async def ServerLive(self, request: Any, context: CallContext) -> Any:
        self.seen.append(context.invocation_metadata())
        return service_pb2.ServerLiveResponse(live=True)

    async def ModelInfer(self, request: Any, context: CallContext) -> Any:
        try:
            await asyncio.sleep(0 if request.model_name == "quick" else self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if request.model_name == "abort":
            await context.abort(grpc.StatusCode.NOT_FOUND, "model 'abort' is not found: 100%")
        return service_pb2.ModelInferResponse(
            model_name=request.model_name, id="x" * request.id.count("y")
        )


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Peer:
    """The client side: writes frames into a connection, reads its frames back."""

    def __init__(
        self, max_message: int = 1 << 20, budget: int = 1 << 20, time_limit: float = 30.0
    ) -> None:
        self.servicer = Servicer()
        self.calls = GrpcCalls(self.servicer, max_message, budget, time_limit)
        self.closed: list[Http2Connection] = []
        self.connection = Http2Connection(self.calls, self.closed.append)
        self.transport = Transport()
        self.connection.connection_made(self.transport)  # type: ignore[arg-type]
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.at = 0
        self.seen: dict[int, list[dict[str, str]]] = {}
        self.data: dict[int, bytes] = {}
        self.send(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0))

    def send(self, data: bytes) -> None:
        self.connection.data_received(data)

    def headers(self, stream: int, path: str = LIVE, *, end: bool = False, **extra: str) -> None:
        fields = [(":method", "POST"), (":scheme", "http"), (":path", path)]
        fields += [(":authority", "localhost"), ("content-type", "application/grpc")]
        fields += [(k.replace("_", "-"), v) for k, v in extra.items()]
        flags = http2.END_HEADERS | (http2.END_STREAM if end else 0)
        self.send(http2.frame(http2.HEADERS, flags, stream, self.encoder.encode(fields)))

    def message(self, stream: int, payload: bytes, flag: int = 0, end: bool = True) -> None:
        body = struct.pack(">BI", flag, len(payload)) + payload
        self.send(http2.frame(http2.DATA, http2.END_STREAM if end else 0, stream, body))

    def call(self, stream: int, request: Any, path: str = INFER, **extra: str) -> None:
        self.headers(stream, path, end=False, **extra)
        self.message(stream, request.SerializeToString())

    def frames(self) -> list[tuple[int, int, int, bytes]]:
        """Frames written since the last look, the server's SETTINGS and window skipped;
        header blocks are decoded in order (as a client must) into ``self.seen``."""
        out, data = [], self.transport.data
        while len(data) - self.at >= 9:
            length = int.from_bytes(data[self.at : self.at + 3], "big")
            kind, flags = data[self.at + 3], data[self.at + 4]
            stream = int.from_bytes(data[self.at + 5 : self.at + 9], "big")
            payload = bytes(data[self.at + 9 : self.at + 9 + length])
            self.at += 9 + length
            if stream or kind not in (http2.SETTINGS, http2.WINDOW_UPDATE):
                out.append((kind, flags, stream, payload))
            if kind == http2.HEADERS:
                block = {str(k): str(v) for k, v in self.decoder.decode(payload)}
                self.seen.setdefault(stream, []).append(block)
            elif kind == http2.DATA:
                self.data[stream] = self.data.get(stream, b"") + payload
        return out

    def answer(self, stream: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """Head, message and trailers of one stream's answer."""
        self.frames()
        blocks, body = self.seen.get(stream, []), self.data.get(stream, b"")
        if len(blocks) == 1:  # trailers only
            return blocks[0], b"", blocks[0]
        assert len(blocks) == 2, blocks
        return blocks[0], body[5:], blocks[1]


def run(body: Callable[[Peer], Any], **kwargs: float) -> Peer:
    async def main() -> Peer:
        peer = Peer(**kwargs)  # type: ignore[arg-type]
        result = body(peer)
        if asyncio.iscoroutine(result):
            await result
        return peer

    return asyncio.run(main())


async def settle(seconds: float = 0.0) -> None:
    for _ in range(5):
        await asyncio.sleep(seconds / 5)


def status(trailers: dict[str, str]) -> int:
    return int(trailers["grpc-status"])


def goaway_code(peer: Peer) -> int:
    away = [payload for kind, _, _, payload in peer.frames() if kind == http2.GOAWAY]
    assert away, "no GOAWAY"
    return int.from_bytes(away[0][4:8], "big")


# ------------------------------------------------------------------------ calls
def test_a_unary_call_gets_head_message_and_ok_trailers() -> None:
    async def body(peer: Peer) -> None:
        peer.call(1, service_pb2.ModelInferRequest(model_name="iris"))
        await settle()
        head, message, trailers = peer.answer(1)
        assert head[":status"] == "200" and head["content-type"] == "application/grpc"
        assert service_pb2.ModelInferResponse.FromString(message).model_name == "iris"
        assert status(trailers) == OK
        assert not peer.connection.streams  # both sides ended: forgotten

    run(body)


def test_metadata_reaches_the_servicer_and_repeated_headers_decode_alike() -> None:
    """Blocks that add to the HPACK table and blocks that only point into it (the second
    and later calls of a client) give the same headers; the decoder's cache never
    serves a block whose meaning depends on a table that has since changed."""

    async def body(peer: Peer) -> None:
        for stream in (1, 3, 5):
            peer.headers(stream, LIVE, x_api_key=f"key-{stream // 4}")
            peer.message(stream, b"")
        await settle()
        keys = [dict(seen)["x-api-key"] for seen in peer.servicer.seen]
        assert keys == ["key-0", "key-0", "key-1"]
        assert all(status(peer.answer(s)[2]) == OK for s in (1, 3, 5))

    run(body)


def test_an_abort_is_a_trailers_only_answer_with_a_percent_encoded_message() -> None:
    async def body(peer: Peer) -> None:
        peer.call(1, service_pb2.ModelInferRequest(model_name="abort"))
        await settle()
        head, message, trailers = peer.answer(1)
        assert head[":status"] == "200" and message == b""
        assert status(trailers) == grpc.StatusCode.NOT_FOUND.value[0]
        assert trailers["grpc-message"] == "model 'abort' is not found: 100%25"

    run(body)


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/inference.GRPCInferenceService/NoSuchMethod", "method not found"),
        ("/inference.GRPCInferenceService/ModelStreamInfer", "method not implemented"),
        ("/inference.GRPCInferenceService/ModelConfig", "method not implemented"),
    ],
)
def test_unknown_streaming_and_unimplemented_methods_are_unimplemented(
    path: str, words: str
) -> None:
    async def body(peer: Peer) -> None:
        peer.headers(1, path)
        await settle()
        _, _, trailers = peer.answer(1)
        assert status(trailers) == grpc.StatusCode.UNIMPLEMENTED.value[0]
        assert words in trailers["grpc-message"]

    run(body)


def test_not_grpc_gets_plain_http_statuses() -> None:
    async def body(peer: Peer) -> None:
        block = peer.encoder.encode(
            [(":method", "GET"), (":scheme", "http"), (":path", LIVE), (":authority", "x")]
        )
        peer.send(http2.frame(http2.HEADERS, http2.END_HEADERS | http2.END_STREAM, 1, block))
        peer.headers(3, LIVE, end=True, **{"content_type": "text/plain"})  # later wins
        assert peer.answer(1)[0][":status"] == "405"
        assert peer.answer(3)[0][":status"] == "415"

    run(body)


def test_a_bad_message_is_invalid_argument_naming_the_request() -> None:
    async def body(peer: Peer) -> None:
        peer.headers(1, INFER)
        peer.message(1, b"\xff\xff\xff")
        peer.headers(3, INFER, end=True)  # no message at all
        peer.headers(5, INFER)
        peer.message(5, b"", end=False)
        peer.message(7 - 2, b"", end=True)  # a second message on stream 5
        peer.headers(7, INFER)
        peer.message(7, b"\x00", flag=1)  # compressed, without grpc-encoding
        await settle()
        messages = {s: peer.answer(s)[2] for s in (1, 3, 5, 7)}
        assert all(
            status(t) == grpc.StatusCode.INVALID_ARGUMENT.value[0] for t in messages.values()
        )
        assert "not a valid ModelInferRequest" in messages[1]["grpc-message"]
        assert "exactly one whole message" in messages[3]["grpc-message"]
        assert "one message" in messages[5]["grpc-message"]
        assert "grpc-encoding" in messages[7]["grpc-message"]

    run(body)


def test_a_message_over_the_limit_is_refused_from_its_prefix() -> None:
    """RESOURCE_EXHAUSTED as soon as the 5-byte prefix declares too much; the client is
    asked to stop sending (RST_STREAM NO_ERROR), and what it sends anyway is dropped."""

    async def body(peer: Peer) -> None:
        peer.headers(1, INFER)
        peer.send(http2.frame(http2.DATA, 0, 1, struct.pack(">BI", 0, 5000) + b"\x00" * 100))
        frames = peer.frames()
        trailers = peer.seen[1][0]
        assert status(trailers) == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        assert "5000 bytes" in trailers["grpc-message"] and "4096" in trailers["grpc-message"]
        assert (frames[1][0], frames[1][3]) == (http2.RST_STREAM, b"\x00\x00\x00\x00")
        peer.send(http2.frame(http2.DATA, http2.END_STREAM, 1, b"\x00" * 100))
        assert peer.frames() == [] and not peer.connection.streams

    run(body, max_message=4096)


def test_messages_beyond_the_buffer_budget_are_unavailable() -> None:
    async def body(peer: Peer) -> None:
        peer.headers(1, INFER)
        peer.send(http2.frame(http2.DATA, 0, 1, struct.pack(">BI", 0, 3000)))  # held
        peer.headers(3, INFER)
        peer.send(http2.frame(http2.DATA, 0, 3, struct.pack(">BI", 0, 3000)))
        trailers = peer.answer(3)[2]
        assert status(trailers) == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "limit of 4000 bytes" in trailers["grpc-message"]
        peer.send(http2.frame(http2.RST_STREAM, 0, 1, struct.pack(">I", http2.CANCEL)))
        assert peer.calls.budget.held == 0  # the reset stream gave its place back

    run(body, budget=4000)


def test_gzip_and_deflate_messages_are_read_and_bombs_refused() -> None:
    import zlib

    async def body(peer: Peer) -> None:
        request = service_pb2.ModelInferRequest(model_name="iris").SerializeToString()
        peer.headers(1, INFER, grpc_encoding="gzip")
        peer.message(1, gzip.compress(request), flag=1)
        peer.headers(3, INFER, grpc_encoding="deflate")
        peer.message(3, zlib.compress(request), flag=1)
        peer.headers(5, INFER, grpc_encoding="gzip")
        peer.message(5, gzip.compress(b"\x00" * 100_000), flag=1)  # 100 KB from ~100 bytes
        peer.headers(7, INFER, grpc_encoding="snappy")
        await settle()
        for stream in (1, 3):
            _, message, trailers = peer.answer(stream)
            assert status(trailers) == OK
            assert service_pb2.ModelInferResponse.FromString(message).model_name == "iris"
        bomb = peer.answer(5)[2]
        assert status(bomb) == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        unknown = peer.answer(7)[2]
        assert status(unknown) == grpc.StatusCode.UNIMPLEMENTED.value[0]
        assert "snappy" in unknown["grpc-message"] and "gzip" in unknown["grpc-accept-encoding"]

    run(body, max_message=65_536)


# -------------------------------------------------------------- deadlines, resets
def test_a_deadline_answers_deadline_exceeded_and_cancels_the_work() -> None:
    async def body(peer: Peer) -> None:
        peer.servicer.delay = 5.0
        peer.call(1, service_pb2.ModelInferRequest(model_name="iris"), grpc_timeout="30m")
        await asyncio.sleep(0.1)
        trailers = peer.answer(1)[2]
        assert status(trailers) == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
        await settle()
        assert peer.servicer.cancelled == 1
        peer.headers(3, INFER, grpc_timeout="soon")
        bad = peer.answer(3)[2]
        assert status(bad) == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "grpc-timeout" in bad["grpc-message"]

    run(body)


def test_calls_past_the_servers_time_limit_are_cancelled_by_the_sweeper() -> None:
    """REQUEST_TIMEOUT_S without a client deadline: cancelled within a tick of the limit."""

    async def body(peer: Peer) -> None:
        peer.servicer.delay = 5.0
        peer.call(1, service_pb2.ModelInferRequest(model_name="iris"))
        peer.call(3, service_pb2.ModelInferRequest(model_name="iris"))
        peer.call(5, service_pb2.ModelInferRequest(model_name="quick"))
        await asyncio.sleep(0.5)
        for stream in (1, 3):
            trailers = peer.answer(stream)[2]
            assert status(trailers) == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
            assert "time limit (0.2 s)" in trailers["grpc-message"]
        assert status(peer.answer(5)[2]) == OK
        await settle()
        assert peer.servicer.cancelled == 2 and not peer.calls.limits.deadlines

    run(body, time_limit=0.2)


def test_parse_timeout_reads_every_unit_and_refuses_the_rest() -> None:
    assert parse_timeout("2S") == 2.0 and parse_timeout("1H") == 3600.0
    assert parse_timeout("1500m") == 1.5 and parse_timeout("7u") == pytest.approx(7e-6)
    for bad in ("", "S", "123456789S", "1.5S", "10x", "-1S"):
        assert parse_timeout(bad) is None
    assert percent_encoded("ünï 100%") == b"%C3%BCn%C3%AF 100%25"


def test_a_reset_stream_cancels_its_call_and_a_lost_connection_all_calls() -> None:
    async def body(peer: Peer) -> None:
        peer.servicer.delay = 5.0
        for stream in (1, 3, 5):
            peer.call(stream, service_pb2.ModelInferRequest(model_name="iris"))
        await settle()
        peer.send(http2.frame(http2.RST_STREAM, 0, 1, struct.pack(">I", http2.CANCEL)))
        await settle()
        assert peer.servicer.cancelled == 1
        peer.connection.connection_lost(None)
        await settle()
        assert peer.servicer.cancelled == 3 and peer.closed == [peer.connection]
        assert not peer.calls.limits.deadlines and peer.calls.budget.held == 0

    run(body)


# ------------------------------------------------------------------ flow control
def test_answers_wait_for_the_peers_window_and_go_on_after_window_update() -> None:
    async def body(peer: Peer) -> None:
        window = struct.pack(">HI", http2.INITIAL_WINDOW_SIZE, 10)
        peer.send(http2.frame(http2.SETTINGS, 0, 0, window))
        peer.call(1, service_pb2.ModelInferRequest(model_name="iris", id="y" * 50))
        await settle()
        sent = peer.frames()
        assert [len(p) for kind, _, _, p in sent if kind == http2.DATA] == [10]
        assert len(peer.seen[1]) == 1  # the head; the trailers wait for the window
        peer.send(http2.frame(http2.WINDOW_UPDATE, 0, 1, struct.pack(">I", 1000)))
        rest = peer.frames()
        assert rest[-1][0] == http2.HEADERS and rest[-1][1] & http2.END_STREAM
        _, message, trailers = peer.answer(1)
        assert service_pb2.ModelInferResponse.FromString(message).id == "x" * 50
        assert status(trailers) == OK

    run(body)


def test_request_data_gives_windows_back() -> None:
    async def body(peer: Peer) -> None:
        peer.headers(1, INFER)
        chunk = b"\x00" * http2.DEFAULT_FRAME
        peer.send(http2.frame(http2.DATA, 0, 1, struct.pack(">BI", 0, 40 * len(chunk))))
        for _ in range(40):  # 640 KiB: over half the stream window
            peer.send(http2.frame(http2.DATA, 0, 1, chunk))
        updates = [(s, p) for kind, _, s, p in peer.frames() if kind == http2.WINDOW_UPDATE]
        assert updates and updates[0][0] == 1
        assert int.from_bytes(updates[0][1], "big") >= http2.STREAM_WINDOW // 2

    run(body, max_message=1 << 21, budget=1 << 21)


def test_a_peer_that_stops_reading_is_not_read_from() -> None:
    peer = Peer()
    peer.connection.pause_writing()
    assert not peer.transport.reading
    peer.connection.resume_writing()
    assert peer.transport.reading


# -------------------------------------------------------------- connection errors
@pytest.mark.parametrize(
    ("data", "code"),
    [
        (http2.frame(http2.DATA, 0, 0, b"x"), http2.PROTOCOL_ERROR),
        (http2.frame(http2.HEADERS, 0, 2, b""), http2.PROTOCOL_ERROR),
        (http2.frame(http2.PUSH_PROMISE, 0, 1, b"\x00" * 4), http2.PROTOCOL_ERROR),
        (http2.frame(http2.PING, 0, 0, b"short"), http2.PROTOCOL_ERROR),
        (http2.frame(http2.SETTINGS, 0, 0, b"\x00" * 5), http2.FRAME_SIZE_ERROR),
        (http2.frame(http2.WINDOW_UPDATE, 0, 0, b"\x00" * 4), http2.PROTOCOL_ERROR),
        (http2.frame(http2.RST_STREAM, 0, 99, b"\x00" * 4), http2.PROTOCOL_ERROR),
        (b"\x00\x40\x01\x00\x00\x00\x00\x00\x01", http2.FRAME_SIZE_ERROR),  # 16 KiB + 1
        (http2.frame(http2.HEADERS, http2.END_HEADERS, 1, b"\xff\xff\xff\xff"), 9),
        (
            http2.frame(http2.HEADERS, 0, 1, b"\x82")
            + http2.frame(http2.PING, 0, 0, b"\x00" * 8),  # a header block interrupted
            http2.PROTOCOL_ERROR,
        ),
    ],
    ids=[
        "data-on-0",
        "even-stream",
        "push",
        "bad-ping",
        "odd-settings",
        "zero-window",
        "reset-idle",
        "frame-too-large",
        "bad-hpack",
        "interrupted-block",
    ],
)
def test_protocol_violations_go_away_and_close(data: bytes, code: int) -> None:
    peer = Peer()
    peer.send(data)
    assert goaway_code(peer) == code
    assert peer.transport.closed


def test_a_connection_that_is_not_http2_is_closed() -> None:
    transport = Transport()
    connection = Http2Connection(GrpcCalls(Servicer(), 1024, 1024), lambda c: None)
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.data.find(bytes((http2.GOAWAY,)) + b"\x00" * 5) > 0  # type, flags, id
    assert transport.data.endswith(b"not an HTTP/2 connection preface")
    assert transport.closed


def test_header_blocks_over_the_limit_are_refused() -> None:
    peer = Peer()
    peer.send(http2.frame(http2.HEADERS, 0, 1, b"\x82"))
    piece = http2.frame(http2.CONTINUATION, 0, 1, b"\x82" * http2.DEFAULT_FRAME)
    for _ in range(5):
        peer.send(piece)
    assert goaway_code(peer) == http2.ENHANCE_YOUR_CALM


def test_pings_are_answered_and_streams_past_the_limit_refused() -> None:
    async def body(peer: Peer) -> None:
        peer.send(http2.frame(http2.PING, 0, 0, b"12345678"))
        assert peer.frames() == [(http2.PING, http2.ACK, 0, b"12345678")]
        peer.servicer.delay = 5.0
        for n in range(http2.STREAMS_PER_CONNECTION + 1):
            peer.headers(2 * n + 1, INFER)
        refused = [(s, p) for kind, _, s, p in peer.frames() if kind == http2.RST_STREAM]
        last = 2 * http2.STREAMS_PER_CONNECTION + 1
        assert refused == [(last, struct.pack(">I", http2.REFUSED_STREAM))]

    run(body)


def test_after_goaway_new_streams_are_refused_and_open_ones_finish() -> None:
    async def body(peer: Peer) -> None:
        peer.servicer.delay = 0.05
        peer.call(1, service_pb2.ModelInferRequest(model_name="iris"))
        peer.connection.go_away()
        peer.call(3, service_pb2.ModelInferRequest(model_name="iris"))
        await asyncio.sleep(0.2)
        frames = peer.frames()
        away = [p for kind, _, _, p in frames if kind == http2.GOAWAY]
        assert int.from_bytes(away[0][:4], "big") == 1  # the last stream it will answer
        assert (http2.RST_STREAM, 3) in [(kind, s) for kind, _, s, _ in frames]
        assert status(peer.answer(1)[2]) == OK
        assert peer.connection.idle

    run(body)


def test_random_frames_never_escape_as_exceptions() -> None:
    """Fuzzed input (seeded): any frame type, flags, stream and payload, valid header
    blocks among them, either is served or ends the connection with GOAWAY; nothing
    raises out of data_received (asyncio would log it and drop the connection untidily)."""
    import random

    rng = random.Random(20261124)
    kinds = [*range(10), 0x10]
    encoder = hpack.Encoder()
    block = encoder.encode(
        [(":method", "POST"), (":path", INFER), ("content-type", "application/grpc")]
    )

    async def body() -> None:
        for _ in range(300):
            peer = Peer()
            for _ in range(rng.randint(1, 12)):
                kind = rng.choice(kinds)
                flags = rng.choice([0, 1, 4, 5, 8, 0x20, 0x25, 0xFF])
                stream = rng.choice([0, 1, 1, 3, 5, 2, 2**31 - 1])
                if kind == http2.HEADERS and rng.random() < 0.5:
                    payload = block
                elif rng.random() < 0.3:
                    payload = struct.pack(">BI", rng.choice([0, 1, 2]), rng.randint(0, 64))
                else:
                    payload = rng.randbytes(rng.choice([0, 1, 4, 5, 6, 8, 9, 40]))
                data = http2.frame(kind, flags, stream, payload)
                if rng.random() < 0.2:  # split anywhere
                    cut = rng.randint(0, len(data))
                    peer.send(data[:cut])
                    peer.send(data[cut:])
                else:
                    peer.send(data)
                if peer.transport.closed:
                    break
            await settle()
            peer.connection.connection_lost(None)
            await settle()
            assert peer.calls.budget.held == 0 and not peer.calls.limits.deadlines

    asyncio.run(body())
