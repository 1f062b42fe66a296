"""The ASGI app: ``app.main:app``. Routes are the same for every model; the lifespan
loads and warms every version before the service reports ready, and the repository
watcher keeps adding, reloading and removing versions while it runs."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__, playground
from app.api import (
    admin,
    docs,
    errors,
    formats,
    health,
    insight,
    monitoring,
    native,
    tfserving,
    v2,
)
from app.api import repository as oip_repository
from app.api.admission import AdmissionMiddleware
from app.api.body import BodyLimitMiddleware
from app.api.fastpath import FastPathMiddleware, hot_routes
from app.api.keys import ApiKeyMiddleware
from app.api.responses import FastJSONResponse
from app.api.timeout import TimeoutMiddleware
from app.auth import KeyRing
from app.devices import log_devices
from app.observability import tracing
from app.observability.metrics import Metrics
from app.observability.middleware import ObservabilityMiddleware
from app.runtimes import resolve
from app.serving.admission import Admission
from app.serving.dataplane import DataPlane
from app.serving.repository import ModelRepository
from app.serving.watcher import watch
from app.settings import Settings, get_settings

log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    gate = Admission(settings.max_in_flight, settings.max_in_flight_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = resolve(settings.runtime)
        repository = ModelRepository(
            settings.models_dir,
            runtime,
            settings.runtime_threads,
            settings.max_instances,
            settings.max_image_pixels,
        )
        dataplane = DataPlane(repository, settings, metrics, gate)
        log.info("loading models from %s with the %s runtime", settings.models_dir, runtime)
        log_devices(runtime)  # what TF/ONNX Runtime see; each model logs its own device
        await anyio.to_thread.run_sync(repository.load_all)
        await dataplane.changes.catch_up(replay=True)  # admin changes made before this start
        app.state.dataplane = dataplane
        # what startup built lives as long as the process: keep it out of every GC pass,
        # which shortens the pauses that show up in tail latency
        gc.collect()
        gc.freeze()
        grpc_server = None
        if settings.grpc_enabled:  # the same plane over gRPC, on this event loop
            from app.grpc.server import GrpcServer
            from app.grpc.servicer import Served

            app.state.draining = False  # set: a missing attribute costs an exception per call
            draining = lambda: app.state.draining  # noqa: E731
            served = Served(dataplane, draining, app.state.extensions)
            grpc_server = GrpcServer(served, settings, metrics)
            app.state.grpc_port = await grpc_server.start()
        log.info("ready: %d model versions serving", sum(1 for s in repository.states() if s.model))
        async with anyio.create_task_group() as background:
            if settings.watch_interval_s > 0:
                background.start_soon(watch, repository, settings.watch_interval_s)
            if dataplane.changes.journal is not None:  # the other workers' admin changes
                background.start_soon(dataplane.changes.follow)
            try:
                yield
            finally:
                app.state.draining = True
                background.cancel_scope.cancel()
        if grpc_server is not None:  # after HTTP drained: refuse new calls, finish running ones
            await grpc_server.stop()
        dataplane.close()

    app = FastAPI(
        title="keras-serve",
        version=__version__,
        description="Predictions from four Keras models (income, salary, iris, digits) over a "
        "native REST API, the Open Inference Protocol v2, and the TensorFlow Serving REST API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=FastJSONResponse,
        # traces, metrics and logs are the service's own (app/observability); FastAPI's
        # built-in OpenTelemetry hook would ask its providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    app.state.extensions = oip_repository.extensions(token)
    # routing tries every route in order until one matches: the two health probes, then
    # the prediction routes, then everything else
    app.include_router(health.router)
    app.include_router(v2.infer_router)
    app.include_router(tfserving.predict_router)
    app.include_router(native.router)
    app.include_router(insight.router)
    app.include_router(oip_repository.build_router(token))  # before v2: /v2/models/stats
    app.include_router(v2.router)
    app.include_router(tfserving.router)
    app.include_router(monitoring.router)
    app.include_router(formats.router)
    playground.install(app)  # the page at /, calling only the public API
    if settings.admin_token is not None:
        app.include_router(admin.build_router(settings.admin_token.get_secret_value()))
    errors.install(app)
    docs.install(app)
    # the last added middleware runs first: ids and metrics wrap everything else
    if settings.fast_path:  # the routes marked HotRoute, served without FastAPI's routing
        app.add_middleware(
            FastPathMiddleware, routes=hot_routes(app.routes), on_error=errors.respond_to
        )
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout_s)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["*"],
        )
    # inference requests beyond the limit are refused before their body is read
    refused = metrics.rejected.labels("", "", "in_flight").inc
    app.add_middleware(AdmissionMiddleware, gate=gate, on_refuse=refused)
    if settings.api_keys:  # checked before anything reads the body
        keys = KeyRing(key.get_secret_value() for key in settings.api_keys)
        app.add_middleware(ApiKeyMiddleware, keys=keys, exempt=tuple(settings.api_key_exempt))
    # outermost: the trace context and request id are open while everything inside
    # runs and logs, and every answer is counted
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=settings.access_log)
    tracing.exporter.configure(settings.otel_exporter_otlp_endpoint)
    return app


app = create_app()
