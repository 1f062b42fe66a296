"""The ASGI app: ``app.main:app``. Routes are built from the model cards on disk;
the lifespan loads and warms every version before the service reports ready."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from app import __version__
from app.api import docs, errors, health, native
from app.api.body import BodyLimitMiddleware
from app.api.responses import FastJSONResponse
from app.artifacts import ModelCard, read_card, version_dirs
from app.runtimes import resolve
from app.serving.dataplane import DataPlane
from app.serving.repository import ModelRepository
from app.settings import Settings, get_settings

log = logging.getLogger("app")


def latest_cards(settings: Settings) -> dict[str, ModelCard]:
    """The newest readable card per model: it defines the model's request schema."""
    cards: dict[str, ModelCard] = {}
    for name, version, path in version_dirs(settings.models_dir):
        try:
            cards[name] = read_card(path)
        except (OSError, ValueError) as exc:
            log.warning("model %s v%s: unreadable model card (%s)", name, version, exc)
    return cards


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = resolve(settings.runtime)
        repository = ModelRepository(settings.models_dir, runtime, settings.runtime_threads)
        log.info("loading models from %s with the %s runtime", settings.models_dir, runtime)
        await anyio.to_thread.run_sync(repository.load_all)
        app.state.dataplane = DataPlane(repository, settings)
        log.info("ready: %d model versions serving", sum(1 for s in repository.states() if s.model))
        try:
            yield
        finally:
            app.state.dataplane.close()

    app = FastAPI(
        title="keras-serve",
        version=__version__,
        description="Predictions from four Keras models (income, salary, iris, digits) over a "
        "native REST API, the Open Inference Protocol v2, and the TensorFlow Serving REST API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=FastJSONResponse,
    )
    app.state.settings = settings
    router, schema_models = native.build_router(latest_cards(settings), settings)
    app.include_router(health.router)
    app.include_router(router)
    errors.install(app)
    docs.install(app, schema_models)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    return app


app = create_app()
