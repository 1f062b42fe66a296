"""HTTP limits on the real server (``python -m app``): header size and count, the
time for a request head, and the keep-alive idle timeout. Attacks stay on loopback,
are bounded in bytes and time, and stop by themselves."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import MODELS_DIR
from tests.live_server import Service, service_process
from tests.model_rows import card

pytestmark = pytest.mark.slow

LIMITS = {
    "MAX_HEADER_BYTES": "16384",
    "MAX_HEADERS": "50",
    "HEADER_TIMEOUT_S": "1",
    "KEEP_ALIVE_TIMEOUT_S": "1",
    "WATCH_INTERVAL_S": "0",
}


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with service_process(MODELS_DIR, LIMITS) as running:
        yield running


def address(service: Service) -> tuple[str, int]:
    parts = urlsplit(service.url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return answer


def open_connections(service: Service) -> int:
    """Established TCP connections to the service's port (server side), from /proc."""
    port = f"{address(service)[1]:04X}"
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":" + port) and fields[3] == "01":  # local port, ESTABLISHED
                count += 1
    return count


def test_normal_requests_pass_big_headers_and_big_bodies(service: Service) -> None:
    cookie = "c=" + "x" * 8000  # well within 16 KiB
    headers = {"Cookie": cookie, **{f"X-H{i}": "v" for i in range(30)}}
    body = {"instances": [{"image": [[255] * 28] * 28}] * 200}  # 640 KB: a body is no head
    with httpx.Client(base_url=service.url, timeout=30) as http:
        answer = http.post("/models/digits/predict", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 200
        for _ in range(3):  # keep-alive: the next heads are counted afresh
            assert http.get("/health/live", headers=headers).status_code == 200


def test_too_many_header_fields_get_431(service: Service) -> None:
    headers = "".join(f"X-H{i}: v\r\n" for i in range(60))
    with socket.create_connection(address(service)) as sock:
        sock.sendall(f"GET /health/live HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        answer = read_answer(sock, 5)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert b"too many header fields" in answer


def test_header_flood_is_cut_off_and_holds_no_memory(service: Service) -> None:
    """Four sockets stream endless header lines; each is answered 431 and closed after
    about the limit, and the server's memory does not grow with what they send."""
    pid = service.process.pid
    before = rss_mb(pid)
    sent: list[int] = []
    answers: list[bytes] = []
    lock = threading.Lock()

    def flood() -> None:
        line = b"X-Flood: " + b"a" * 1000 + b"\r\n"
        total = 0
        with socket.create_connection(address(service)) as sock:
            sock.settimeout(5)
            try:
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
                while total < 50_000_000:  # bounded: 50 MB at most per socket
                    sock.sendall(line * 64)
                    total += len(line) * 64
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass
            answer = read_answer(sock, 2)
        with lock:
            sent.append(total)
            answers.append(answer)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    after = rss_mb(pid)
    assert len(sent) == 4
    # the server closed each one long before the 50 MB cap (kernel buffers take some)
    assert max(sent) < 20_000_000, sent
    assert all(a.startswith(b"HTTP/1.1 431") or a == b"" for a in answers), answers
    assert any(a.startswith(b"HTTP/1.1 431") for a in answers)
    assert after - before < 30, (before, after)
    assert httpx.get(service.url + "/health/live").status_code == 200


def test_slowloris_and_idle_sockets_are_closed_after_the_head_timeout(service: Service) -> None:
    """100 sockets trickle a header byte every 0.2 s, 20 send nothing at all: the server
    closes every one of them about HEADER_TIMEOUT_S (1 s) after it opened."""
    trickling = [socket.create_connection(address(service)) for _ in range(100)]
    idle = [socket.create_connection(address(service)) for _ in range(20)]
    started = time.monotonic()
    for sock in trickling:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
    closed_at: dict[int, float] = {}
    deadline = started + 10  # the attack stops by itself
    while len(closed_at) < len(trickling) and time.monotonic() < deadline:
        for index, sock in enumerate(trickling):
            if index in closed_at:
                continue
            try:
                sock.send(b"X")
                if sock.recv(65536):  # the 408 arrived: the server is closing
                    closed_at[index] = time.monotonic() - started
            except BlockingIOError:
                pass
            except OSError:
                closed_at[index] = time.monotonic() - started
        time.sleep(0.2)
    assert len(closed_at) == len(trickling), f"{len(trickling) - len(closed_at)} still open"
    assert max(closed_at.values()) < 4, max(closed_at.values())
    for sock in idle:
        assert read_answer(sock, 5).startswith(b"HTTP/1.1 408")
    for sock in trickling + idle:
        sock.close()
    time.sleep(0.5)
    assert open_connections(service) == 0
    assert httpx.get(service.url + "/health/live").status_code == 200


def test_idle_keep_alive_connection_is_closed(service: Service) -> None:
    with socket.create_connection(address(service)) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = read_answer(sock, 5)  # the answer, then EOF when the idle timeout closes it
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 200")
    assert 0.8 < waited < 3, waited


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """One whole HTTP response (by its Content-Length) from a keep-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_refused_client_is_held_to_its_retry_after() -> None:
    """After a 503 with Retry-After, the connection's next request is read only once that
    time has passed: a client that retries at once cannot keep the server busy refusing."""
    body = json.dumps(card("iris", 2).example).encode()
    request = (
        b"POST /models/iris/predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    env = {"MAX_IN_FLIGHT": "1", "WATCH_INTERVAL_S": "0"}
    with (
        service_process(MODELS_DIR, env) as running,
        socket.create_connection(address(running)) as holder,
        socket.create_connection(address(running)) as eager,
    ):
        holder.sendall(request[: -len(body)])  # admitted, then waits for its body
        time.sleep(0.3)
        eager.sendall(request)
        assert read_response(eager, 5).startswith(b"HTTP/1.1 503")
        eager.sendall(request)  # at once, ignoring Retry-After: 1
        sent = time.monotonic()
        holder.sendall(body)  # the place is free again
        assert read_response(holder, 5).startswith(b"HTTP/1.1 200")
        assert read_response(eager, 5).startswith(b"HTTP/1.1 200")
        waited = time.monotonic() - sent
    assert 0.8 < waited < 3, waited


class FakeTransport:
    """Just enough of an asyncio transport for uvicorn's protocol, in-process."""

    def __init__(self) -> None:
        self.written = b""
        self.closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, *args: object) -> None:
        pass


def test_a_burst_of_large_bodies_keeps_at_most_the_body_buffer() -> None:
    """Connections parsed in one turn of the event loop reach the admission middleware
    only afterwards: each would keep its first read as its body, whatever the limit. So
    past MAX_IN_FLIGHT_BYTES of declared large bodies, a body is dropped as it arrives,
    and its request gets 503 with Retry-After; the others are served."""
    import asyncio

    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from app.main import create_app
    from app.runner import http as runner_http
    from app.serving.admission import BodyBuffer
    from app.settings import Settings

    rows = [card("iris", 2).example] * 300
    body = json.dumps({"instances": rows}).encode()
    assert len(body) >= runner_http.RESERVE_FROM
    request = (
        b"POST /models/iris/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    limit = 2 * len(body) + 100  # room for two declared bodies at once
    settings = Settings(models_dir=MODELS_DIR, runtime="onnx", grpc_enabled=False)
    app = create_app(settings)
    protocol_class = runner_http.LimitedHttpToolsProtocol

    async def burst() -> list[tuple[FakeTransport, int]]:
        config = Config(app=app, lifespan="off", log_config=None)
        state = ServerState()
        saved = protocol_class.bodies, protocol_class.max_head_bytes
        protocol_class.max_head_bytes, protocol_class.max_headers = 65536, 100
        protocol_class.head_timeout, protocol_class.bodies = 10.0, BodyBuffer(limit)
        try:
            async with app.router.lifespan_context(app):
                connections = []
                for _ in range(5):  # all parsed before any request task runs
                    protocol = protocol_class(config, state, {})
                    transport = FakeTransport()
                    protocol.connection_made(transport)  # type: ignore[arg-type]
                    protocol.data_received(request)
                    kept = len(protocol.cycle.body) if protocol.cycle is not None else 0
                    connections.append((protocol, transport, kept))
                await asyncio.sleep(0.5)  # the requests run
                for protocol, _, _ in connections:
                    protocol.connection_lost(None)
                assert protocol_class.bodies.held == 0  # every place was given back
                return [(transport, kept) for _, transport, kept in connections]
        finally:
            protocol_class.bodies, protocol_class.max_head_bytes = saved

    answers = asyncio.run(burst())
    statuses = [transport.written.split(b" ", 2)[1] for transport, _ in answers]
    assert statuses == [b"200", b"200", b"503", b"503", b"503"], statuses
    assert [kept for _, kept in answers] == [len(body), len(body), 0, 0, 0]
    for transport, _ in answers[2:]:
        head = transport.written.split(b"\r\n\r\n", 1)[0].lower()
        assert b"retry-after: 1" in head
