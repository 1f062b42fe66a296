"""Admin endpoints: load and unload versions at run time, behind a bearer token.

They exist only when ``ADMIN_TOKEN`` is set; the token is compared in constant time.
"""

from __future__ import annotations

import hmac

import anyio
from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import ClientError
from app.api.native import plane
from app.api.responses import FastJSONResponse
from app.serving.repository import VersionState

bearer = HTTPBearer(auto_error=False, description="the ADMIN_TOKEN setting")
NAME = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="model name")
VERSION = Path(ge=1, le=2**31 - 1, description="version number")


def build_router(token: str) -> APIRouter:
    expected = token.encode()

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not credentials or not hmac.compare_digest(given, expected):
            raise ClientError(401, "authorization: a valid bearer token is required")

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_token)])

    def answer(state: VersionState, status: int = 200) -> FastJSONResponse:
        return FastJSONResponse(
            {
                "name": state.name,
                "version": state.version,
                "status": state.status.value,
                "reason": state.reason,
            },
            status_code=status,
        )

    @router.post(
        "/models/{name}/versions/{version}/load",
        summary="Load (or reload) a version from the models directory",
        responses={401: {}, 404: {}, 422: {"description": "the version is broken"}},
    )
    async def load(request: Request, name: str = NAME, version: int = VERSION) -> FastJSONResponse:
        repository = plane(request).repository
        path = repository.models_dir / name / str(version)
        if not path.is_dir():
            raise ClientError(
                404, f"version {version} of model {name!r} is not in the models directory"
            )
        state = await anyio.to_thread.run_sync(repository.load_version, name, version, path)
        if state.reason:
            return answer(state, 422)
        return answer(state)

    @router.delete(
        "/models/{name}/versions/{version}",
        summary="Stop serving a version (requests already running finish on it)",
        responses={401: {}, 404: {}},
    )
    async def unload(
        request: Request, name: str = NAME, version: int = VERSION
    ) -> FastJSONResponse:
        return answer(plane(request).repository.unload_version(name, version))

    return router
