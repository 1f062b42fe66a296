"""Start and stop the gRPC server inside the app's lifespan, on the HTTP server's loop.

One process and one event loop serve both protocols, so gRPC requests share the
data plane's batchers with REST requests (a REST and a gRPC request for one version
can ride in one runtime call). With several uvicorn workers, each worker binds the
same port with ``SO_REUSEPORT`` and the kernel spreads connections, as it does for
HTTP; with one worker a port already taken is an error at startup.
"""

from __future__ import annotations

import logging

import grpc
from tritonclient.grpc import service_pb2_grpc

from app.grpc.servicer import InferenceServicer, Served
from app.observability.metrics import Metrics
from app.settings import Settings

log = logging.getLogger(__name__)


class GrpcServer:
    def __init__(self, served: Served, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        options = [
            # a message over the limit is refused by gRPC with RESOURCE_EXHAUSTED
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
        self.server = grpc.aio.server(options=options)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(served, settings, metrics), self.server
        )
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the port (``GRPC_PORT=0`` picks a free one)."""
        host = self.settings.host
        address = (
            f"[{host}]:{self.settings.grpc_port}"
            if ":" in host
            else f"{host}:{self.settings.grpc_port}"
        )
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address}: {exc}") from None
        if not self.port:
            raise RuntimeError(f"gRPC cannot listen on {address}")
        await self.server.start()
        log.info("gRPC (Open Inference Protocol) listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        """Refuse new calls (UNAVAILABLE) and let running ones finish, up to DRAIN_SECONDS."""
        await self.server.stop(self.settings.drain_seconds)
