"""Start and stop the gRPC server inside the app's lifespan, on the HTTP server's loop.

One process and one event loop serve both protocols, so gRPC requests share the
data plane's batchers with REST requests (a REST and a gRPC request for one version
can ride in one runtime call).

Several ``grpc.aio`` servers (``GRPC_ACCEPTORS``) share the port through
``SO_REUSEPORT``. A grpc.aio server asks gRPC core for its next call only after the
previous one reached Python, which takes a few turns of a busy event loop, so one
server admits calls one at a time: measured here with 64 connections, 1,450 ModelInfer
calls/s and 4,600 ServerLive calls/s from one server, against 2,900 and 6,700 from 16.
The kernel spreads connections (not calls) over the servers, so the gain is for
clients with several connections; calls multiplexed on one connection reach one
server. All servers share one servicer, so metrics, limits and draining are unchanged.

With several uvicorn workers, each worker's servers join the same port and the kernel
spreads connections over all of them, as it does for HTTP. With one worker a port
another process listens on is still an error at startup, checked before binding.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

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
        options = [
            # a message over the limit is refused by gRPC with RESOURCE_EXHAUSTED
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 1),
        ]
        servicer = InferenceServicer(served, settings, metrics)
        self.servers: list[grpc.aio.Server] = []
        for _ in range(settings.grpc_acceptors):
            server = grpc.aio.server(options=options)
            service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                servicer, GenericHandlersOnly(server)
            )
            self.servers.append(server)
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the port (``GRPC_PORT=0`` picks a free one,
        which the first server gets and the others share)."""
        host, port = self.settings.host, self.settings.grpc_port
        if port and self.settings.workers == 1:
            ensure_free(host, port)
        for server in self.servers:
            try:
                bound = server.add_insecure_port(address(host, port))
            except RuntimeError as exc:
                raise RuntimeError(f"gRPC cannot listen on {address(host, port)}: {exc}") from None
            if not bound:
                raise RuntimeError(f"gRPC cannot listen on {address(host, port)}")
            port = bound
        self.port = port
        await asyncio.gather(*(server.start() for server in self.servers))
        log.info(
            "gRPC (Open Inference Protocol) listening on %s:%d (%d acceptors)",
            host,
            self.port,
            len(self.servers),
        )
        return self.port

    async def stop(self) -> None:
        """Refuse new calls (UNAVAILABLE) and let running ones finish, up to DRAIN_SECONDS."""
        await asyncio.gather(*(server.stop(self.settings.drain_seconds) for server in self.servers))
