"""Servers that drain without resetting accepted connections, and the worker supervisor.

Closing a listening socket resets every connection still in its accept queue: the
client completed its handshake and may have sent its request, yet it gets a reset. With
several workers it is worse: uvicorn's supervisor keeps the socket open while the
workers drain, so the kernel keeps completing handshakes nobody will accept, and resets
them all when the supervisor exits.

On SIGTERM, before anything closes, :func:`quiesce` therefore attaches a socket filter
that drops new SYNs to the listening socket (the kernel socket that every worker
shares), and waits until the workers have accepted what is already queued. Clients
whose SYN was dropped retry it, and are refused once the socket closes: never accepted,
safe to retry elsewhere. Then the usual drain runs. The filter needs ``CAP_NET_ADMIN``;
without it (a non-root container) the accept queue is cut to one connection, and the
supervisor answers 503 with ``Retry-After`` to whatever still arrives while the workers
drain. Only a single worker without the capability keeps a window of microseconds (a
connection arriving between the last accept and the close) where a reset can happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from app.observability.logs import flush_logs
from app.runner.memory import pin_mmap_threshold

log = logging.getLogger("app.runner")

SO_ATTACH_FILTER = 26  # Linux, <asm-generic/socket.h>
# classic BPF, run on each TCP segment that reaches the listener: accept anything with
# ACK set (handshakes already under way complete), drop a bare SYN, accept the rest
_DROP_SYN = (
    (0x30, 0, 0, 13),  # ldb [13]           TCP flags
    (0x45, 2, 0, 0x10),  # jset #ACK          -> accept
    (0x45, 0, 1, 0x02),  # jset #SYN          -> drop, else accept
    (0x06, 0, 0, 0),  # ret #0             drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1            accept
)
_FILTER_CODE = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in _DROP_SYN))
_FILTER = struct.pack("HL", len(_DROP_SYN), ctypes.addressof(_FILTER_CODE))


def accept_queue(sock: Any) -> int:
    """Connections the kernel completed that no one accepted yet (``tcpi_unacked`` of a
    listening socket)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 24)[0])


def refuse_new_connections(sockets: Iterable[Any]) -> list[Any]:
    """Hold back new connections on these listening TCP sockets; returns those it applies to.

    A socket filter that drops new SYNs needs ``CAP_NET_ADMIN`` (root on the host; a
    container or pod must add it). Without it the accept queue is cut to its minimum
    (``listen(0)``: one connection) instead, so few can still slip in; the supervisor
    answers those with a 503 (:func:`answer_stragglers`).
    """
    done = []
    for sock in sockets:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _FILTER)
        except OSError as exc:
            with socket.socket(fileno=os.dup(sock.fileno())) as same:
                same.listen(0)
            log.info("new connections: accept queue cut to one (no socket filter: %s)", exc)
        try:
            accept_queue(sock)
        except OSError:  # not Linux
            continue
        done.append(sock)
    return done


UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: 48\r\n\r\n"
    b'{"error": "the server is shutting down; retry"}\n'
)


def answer_stragglers(sockets: Iterable[Any], stop: threading.Event) -> None:
    """While the workers drain, accept what still reaches the socket and answer 503
    (instead of leaving it queued, to be reset when the socket closes)."""
    listeners = [socket.socket(fileno=os.dup(s.fileno())) for s in sockets]
    for listener in listeners:
        listener.settimeout(0.02)
    try:
        while True:
            stopping = stop.is_set()
            for listener in listeners:
                try:
                    connection, _ = listener.accept()
                except OSError:  # nothing queued (timeout), or closed
                    continue
                threading.Thread(target=_unavailable, args=(connection,), daemon=True).start()
            if stopping:
                return
    finally:
        for listener in listeners:
            listener.close()


def _unavailable(connection: socket.socket) -> None:
    with connection:
        connection.settimeout(1.0)
        try:
            connection.recv(65536)  # the request head: unread data would turn close into a reset
            connection.sendall(UNAVAILABLE)
            connection.shutdown(socket.SHUT_WR)
            while connection.recv(65536):
                pass
        except OSError:
            pass


def _pending(sockets: Iterable[Any], timeout: float) -> Iterator[None]:
    """Stop taking new connections, then yield (the caller waits 5 ms, accepting meanwhile)
    until the accept queue has stayed empty for 50 ms, or ``timeout`` runs out."""
    held = refuse_new_connections(sockets)
    deadline = time.monotonic() + timeout
    empty_since: float | None = None
    while held and time.monotonic() < deadline:
        if any(accept_queue(s) for s in held):
            empty_since = None
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since > 0.05:  # handshakes in flight have landed
            return
        yield


def quiesce(sockets: Iterable[Any], timeout: float = 5.0) -> None:
    """Stop taking new connections, then wait (at most ``timeout``) until the accept
    queue stays empty, while the workers keep accepting."""
    for _ in _pending(sockets, timeout):
        time.sleep(0.005)


async def quiesce_async(sockets: Iterable[Any], timeout: float = 5.0) -> None:
    """:func:`quiesce` for a server whose own event loop does the accepting."""
    for _ in _pending(sockets, timeout):
        await asyncio.sleep(0.005)


class DrainingServer(uvicorn.Server):
    """Uvicorn, except that on SIGTERM/SIGINT it first accepts what the kernel already
    queued (:func:`quiesce`), writes its logs out, and exits with status 0 once drained.

    Uvicorn re-raises the signal after its graceful shutdown, so the process would end
    "killed by SIGTERM" (status -15) although every request was answered; orchestrators
    read that as a crash, and the re-raised signal would skip the log writer's flush.
    """

    first_request_grace = 1.0  # seconds a just-accepted connection gets to send its request

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        pin_mmap_threshold()  # in each worker: bursts of large bodies give memory back
        super().run(sockets=sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        listeners = [s for server in self.servers for s in (server.sockets or ())]
        await quiesce_async(listeners or sockets or [])
        # uvicorn closes every connection without a request in progress; one accepted
        # a moment ago has its request on the way: wait for it (briefly) first
        deadline = time.monotonic() + self.first_request_grace
        while time.monotonic() < deadline and any(
            self._awaiting_first_request(c) for c in self.server_state.connections
        ):
            await asyncio.sleep(0.005)
        await super().shutdown(sockets=sockets)

    def _awaiting_first_request(self, connection: Any) -> bool:
        if getattr(connection, "cycle", False) is not None:
            return False
        connected_at = getattr(connection, "connected_at", None)
        if connected_at is None:
            return False
        return bool(connection.loop.time() - connected_at < self.first_request_grace)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                handled = (signal.SIGTERM, signal.SIGINT)
                self._captured_signals = [s for s in self._captured_signals if s not in handled]
                flush_logs()


class WorkerProcess(Process):
    """A worker running :class:`DrainingServer` (uvicorn's runs the plain Server)."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


class Supervisor(Multiprocess):
    """Uvicorn's worker supervisor (which already restarts a worker that died or hangs),
    plus: new connections held back before the workers drain, a dead worker's live
    gauges removed from the shared metrics directory, and that directory removed at exit.
    """

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], metrics_dir: Path | None
    ) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            process = WorkerProcess(self.config, self.sockets)
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # it hangs, or it is gone already
            process.join()
            self._forget(process.pid)
            if process.exitcode == STARTUP_FAILURE:  # the app cannot start: nor will the next
                log.error("worker %s failed to start; stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning(
                "worker %s died (exit code %s); starting another", process.pid, process.exitcode
            )
            replacement = WorkerProcess(self.config, self.sockets)
            replacement.start()
            self.processes[index] = replacement

    def terminate_all(self) -> None:
        log.info("no new connections; letting the workers accept what is queued, then drain")
        quiesce(self.sockets)
        super().terminate_all()

    def join_all(self) -> None:
        stop = threading.Event()
        sweeper = threading.Thread(target=answer_stragglers, args=(self.sockets, stop))
        sweeper.start()
        try:
            super().join_all()
        finally:
            stop.set()
            sweeper.join(5)

    def run(self) -> None:
        try:
            super().run()
        finally:
            for sock in self.sockets:
                sock.close()
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
            flush_logs()

    def _forget(self, pid: int | None) -> None:
        if self.metrics_dir is None or pid is None:
            return
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]


def make_metrics_dir(parent: Path | None) -> Path:
    """A fresh directory for this start's multiprocess metrics (removed at exit)."""
    return Path(tempfile.mkdtemp(prefix=f"keras-serve-metrics-{os.getpid()}-", dir=parent))
