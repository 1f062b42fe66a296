"""Start and stop the gRPC server inside the app's lifespan, on the HTTP server's loop.

One process and one event loop serve both protocols, so gRPC requests share the
data plane's batchers with REST requests (a REST and a gRPC request for one version
can ride in one runtime call). Two servers carry the same servicer
(``GRPC_SERVER``):

* ``asyncio`` (the default): keras-serve's own HTTP/2 for unary calls
  (``http2.py``, ``calls.py``) on the event loop. It costs a fraction of grpc.aio's
  per-call Python (measured in docs/benchmarks.md).
* ``grpcio``: ``grpc.aio``, gRPC's own server, for what the first does not do
  (streaming RPCs, which this service does not offer either, and gRPC core's
  channel options).

With several uvicorn workers, each worker's server joins the same port
(``SO_REUSEPORT``) and the kernel spreads connections over all of them, as it does for
HTTP. With one worker a port another process listens on is an error at startup.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

from app.grpc.calls import GrpcCalls
from app.grpc.http2 import Http2Connection
from app.grpc.servicer import InferenceServicer, Served
from app.observability.metrics import Metrics
from app.settings import Settings

log = logging.getLogger(__name__)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ensure_free(host: str, port: int) -> None:
    """Raise if something already listens on ``host:port``: SO_REUSEPORT would otherwise
    let a second server (another keras-serve, say) silently share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address(host, port)}: {exc}") from None


class GrpcioServers:
    """Several ``grpc.aio`` servers (``GRPC_ACCEPTORS``) sharing the port through
    ``SO_REUSEPORT``. A grpc.aio server asks gRPC core for its next call only after the
    previous one reached Python, which takes a few turns of a busy event loop, so one
    server admits calls one at a time: measured here with 64 connections, 1,450
    ModelInfer calls/s and 4,600 ServerLive calls/s from one server, against 2,900 and
    6,700 from 16. The kernel spreads connections (not calls) over the servers."""

    def __init__(self, servicer: InferenceServicer, settings: Settings) -> None:
        self.settings = settings
        options = [
            # a message over the limit is refused by gRPC with RESOURCE_EXHAUSTED
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 1),
        ]
        self.servers: list[grpc.aio.Server] = []
        for _ in range(settings.grpc_acceptors):
            server = grpc.aio.server(options=options)
            service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                servicer, GenericHandlersOnly(server)
            )
            self.servers.append(server)

    async def start(self, host: str, port: int) -> int:
        for server in self.servers:
            try:
                bound = server.add_insecure_port(address(host, port))
            except RuntimeError as exc:
                raise RuntimeError(f"gRPC cannot listen on {address(host, port)}: {exc}") from None
            if not bound:
                raise RuntimeError(f"gRPC cannot listen on {address(host, port)}")
            port = bound
        await asyncio.gather(*(server.start() for server in self.servers))
        return port

    async def stop(self) -> None:
        """Refuse new calls (UNAVAILABLE) and let running ones finish, up to DRAIN_SECONDS."""
        await asyncio.gather(*(server.stop(self.settings.drain_seconds) for server in self.servers))


class Http2Server:
    """keras-serve's own gRPC server: an asyncio server of HTTP/2 connections."""

    def __init__(self, servicer: InferenceServicer, settings: Settings) -> None:
        self.settings = settings
        self.calls = GrpcCalls(
            servicer,
            settings.max_body_bytes,
            settings.max_in_flight_bytes,
            settings.request_timeout_s,
        )
        self.connections: set[Http2Connection] = set()
        self.server: asyncio.Server | None = None

    def _connection(self) -> Http2Connection:
        connection = Http2Connection(self.calls, self.connections.discard)
        self.connections.add(connection)
        return connection

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(
                self._connection, host, port, reuse_port=self.settings.workers > 1, backlog=2048
            )
        except OSError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address(host, port)}: {exc}") from None
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """GOAWAY to every client (no new calls), let running calls finish up to
        DRAIN_SECONDS, then close the connections."""
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections):
            connection.go_away()
        deadline = time.monotonic() + self.settings.drain_seconds
        while any(not c.idle for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.close()


class GenericHandlersOnly:
    """A server as the generated ``add_..._to_server`` sees it, taking the service's
    methods as one generic handler only. For each call it admits, grpc.aio waits on one
    pending call per *registered* method plus the generic one: 21 futures for this
    service, whose callbacks are added and removed every time (a sixth of the event
    loop's time under load, profiled here); with the generic handler alone it waits
    on one."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Left out on purpose: see the class's doc."""


class GrpcServer:
    def __init__(self, served: Served, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        servicer = InferenceServicer(served, settings, metrics)
        self.server: GrpcioServers | Http2Server = (
            GrpcioServers(servicer, settings)
            if settings.grpc_server == "grpcio"
            else Http2Server(servicer, settings)
        )
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the port (``GRPC_PORT=0`` picks a free one)."""
        host, port = self.settings.host, self.settings.grpc_port
        if port and self.settings.workers == 1:
            ensure_free(host, port)
        self.port = await self.server.start(host, port)
        log.info(
            "gRPC (Open Inference Protocol) listening on %s:%d (%s server)",
            host,
            self.port,
            self.settings.grpc_server,
        )
        return self.port

    async def stop(self) -> None:
        await self.server.stop()
