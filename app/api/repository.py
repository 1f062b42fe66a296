"""Open Inference Protocol extensions over REST: model repository and statistics.

Paths and bodies follow Triton's extensions, so ``tritonclient.http`` works unchanged
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_model_repository.md,
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_statistics.md).
The index and statistics are read-only and always served. Load and unload change
what serves, so, like ``/admin``, they need the admin bearer token and do not exist
without one. The work is in :mod:`app.serving.control` and
:mod:`app.serving.statistics`, shared with the gRPC adapter.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from app.api.body import parse_json
from app.api.errors import ERROR_BODY, ClientError, error_response
from app.api.examples import MODEL_NAME, VERSION
from app.api.responses import FastJSONResponse
from app.api.v2 import EXTENSIONS, plane, render
from app.api.versions import pinned
from app.serving import control
from app.serving.broadcast import AdminChange
from app.serving.dataplane import DataPlane
from app.serving.errors import ServingError

STATISTICS = "statistics"
MODEL_REPOSITORY = "model_repository"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request, or a version failed to load", **ERROR_BODY},
    404: {"description": "Unknown model or version", **ERROR_BODY},
}
bearer = HTTPBearer(auto_error=False, description="the ADMIN_TOKEN setting")


def extensions(admin_token: str | None) -> list[str]:
    """The OIP extensions this server really serves: the repository extension is
    whole only with load and unload, which exist only with an admin token."""
    served = [*EXTENSIONS, STATISTICS]
    return [*served, MODEL_REPOSITORY] if admin_token else served


def token_matches(authorization: str | None, expected: str) -> bool:
    """``Bearer <token>`` compared in constant time (REST header or gRPC metadata)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


async def optional_body(request: Request) -> dict[str, Any]:
    """An optional JSON object (Triton's clients send ``{}`` or ``parameters``)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    payload = parse_json(raw)
    if not isinstance(payload, dict):
        raise ClientError(400, "body: must be a JSON object")
    return payload


# ------------------------------------------------------------------------ statistics
def statistics(dataplane: DataPlane, name: str | None, version: int | str | None) -> dict[str, Any]:
    """Triton's ``{"model_stats": [...]}``: one entry per serving version asked for."""
    if name is None:
        keys = [(s.name, s.version) for s in dataplane.repository.states() if s.model]
    elif version is not None:
        model = dataplane.model(name, version)  # ModelNotFound unless it serves
        keys = [(model.name, model.version)]
    else:
        serving = [v for v, s in dataplane.repository.versions(name).items() if s.model]
        if not serving:
            dataplane.model(name)  # raises: no version serves
        keys = [(name, v) for v in serving]
    return {"model_stats": [dataplane.statistics.of(n, v).snapshot() for n, v in keys]}


def build_router(admin_token: str | None) -> APIRouter:
    """The extensions' routes; load and unload only when ``admin_token`` is set."""
    router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2 extensions"])

    @router.get("/models/stats", summary="Statistics of every serving version")
    async def all_stats(request: Request) -> Response:
        return FastJSONResponse(statistics(plane(request), None, None))

    @router.get("/models/{name}/stats", summary="Statistics per serving version", responses=ERRORS)
    async def model_stats(request: Request, name: str = MODEL_NAME) -> Response:
        try:
            return FastJSONResponse(statistics(plane(request), name, None))
        except ServingError as exc:
            return render(exc)

    @router.get(
        "/models/{name}/versions/{version}/stats",
        summary="Statistics of one version",
        responses=ERRORS,
    )
    async def version_stats(
        request: Request, name: str = MODEL_NAME, version: str = VERSION
    ) -> Response:
        try:
            return FastJSONResponse(statistics(plane(request), name, pinned(version)))
        except ServingError as exc:
            return render(exc)

    @router.post("/repository/index", summary="Every model version with its state and reason")
    async def repository_index(request: Request) -> Response:
        body = await optional_body(request)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise ClientError(400, "ready: must be true or false")
        entries = control.index(plane(request).repository, ready)
        return FastJSONResponse(
            [
                {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
                for e in entries
            ]
        )

    if admin_token is None:
        return router

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        given = f"Bearer {credentials.credentials}" if credentials else None
        if not token_matches(given, admin_token):
            raise ClientError(401, "authorization: a valid bearer token is required")

    admin = [Depends(require_token)]

    @router.post(
        "/repository/models/{name}/load",
        summary="Load (or reload) every version of a model (admin token)",
        responses={401: {}, **ERRORS},
        dependencies=admin,
    )
    async def load(request: Request, name: str = MODEL_NAME) -> Response:
        await optional_body(request)  # Triton's parameters (config, files) are not supported
        try:
            change = AdminChange("load_model", name)
            states = await plane(request).changes.submit(change)
        except control.LoadFailed as exc:
            return error_response(400, str(exc))
        except ServingError as exc:
            return render(exc)
        return FastJSONResponse({"name": name, "versions": [str(s.version) for s in states]})

    @router.post(
        "/repository/models/{name}/unload",
        summary="Stop serving every version of a model (admin token)",
        responses={401: {}, **ERRORS},
        dependencies=admin,
    )
    async def unload(request: Request, name: str = MODEL_NAME) -> Response:
        await optional_body(request)
        try:
            states = await plane(request).changes.submit(AdminChange("unload_model", name))
        except ServingError as exc:
            return render(exc)
        return FastJSONResponse({"name": name, "versions": [str(s.version) for s in states]})

    return router
