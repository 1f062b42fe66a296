"""Admin endpoints: load and unload versions, set labels, promote and split traffic
at run time, behind a bearer token.

They exist only when ``ADMIN_TOKEN`` is set; the token is compared in constant time.
Label, promotion and canary changes are written to ``models/<name>/config.json``
(the file the watcher reads), so they survive a restart and the file stays the truth.
Every change goes through :class:`app.serving.broadcast.Broadcast`, so with several
workers each applies it (within 0.5 s), not only the one that answered.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from app.api.errors import ClientError
from app.api.native import plane
from app.api.responses import FastJSONResponse
from app.artifacts import CANARY, LABEL_PATTERN, STABLE, ModelConfig
from app.serving.broadcast import AdminChange
from app.serving.dataplane import DataPlane
from app.serving.repository import ConfigError, ModelRepository, VersionState

bearer = HTTPBearer(auto_error=False, description="the ADMIN_TOKEN setting")
NAME = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="model name")
VERSION = Path(ge=1, le=2**31 - 1, description="version number")
LABEL = Path(pattern=f"^{LABEL_PATTERN}$", description="version label, e.g. stable, canary")


class LabelTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=2**31 - 1, description="the version the label names")


class Promotion(BaseModel):
    """What becomes ``stable``: a version number, or the version a label names."""

    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, le=2**31 - 1)
    label: str | None = Field(None, pattern=f"^{LABEL_PATTERN}$")


class Canary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, le=2**31 - 1, description="the version labelled canary")
    percent: float = Field(ge=0, le=100, description="share of default traffic it gets")


def config_answer(repository: ModelRepository, name: str, written: bool) -> FastJSONResponse:
    return FastJSONResponse(
        {
            "name": name,
            "default_version": repository.default_version(name),
            "config": repository.config(name).model_dump(),
            "written": written,  # false: the models directory is read-only, held in memory
        }
    )


async def apply(dataplane: DataPlane, name: str, config: ModelConfig) -> FastJSONResponse:
    """Put a config in force on every worker, then load or unload what its policy
    changed at once."""
    repository = dataplane.repository
    repository.versions(name)  # 404 for an unknown model
    change = AdminChange("config", name, config=config.model_dump(mode="json"))
    try:
        written = await dataplane.changes.submit(change)
    except ConfigError as exc:
        raise ClientError(409, str(exc)) from None
    return config_answer(repository, name, written)


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
        dataplane = plane(request)
        path = dataplane.repository.models_dir / name / str(version)
        if not path.is_dir():
            raise ClientError(
                404, f"version {version} of model {name!r} is not in the models directory"
            )
        state = await dataplane.changes.submit(AdminChange("load", name, version))
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
        return answer(await plane(request).changes.submit(AdminChange("unload", name, version)))

    @router.get("/models/{name}/config", summary="The model's version policy, labels, canary")
    async def get_config(request: Request, name: str = NAME) -> FastJSONResponse:
        repository = plane(request).repository
        repository.versions(name)
        return config_answer(repository, name, True)

    @router.put(
        "/models/{name}/config",
        summary="Replace the model's config (written to models/<name>/config.json)",
        responses={401: {}, 404: {}, 409: {"description": "a label names a version not serving"}},
    )
    async def put_config(
        request: Request, config: ModelConfig, name: str = NAME
    ) -> FastJSONResponse:
        return await apply(plane(request), name, config)

    @router.put(
        "/models/{name}/labels/{label}",
        summary="Point a label at a serving version",
        responses={401: {}, 404: {}, 409: {}},
    )
    async def put_label(
        request: Request, target: LabelTarget, name: str = NAME, label: str = LABEL
    ) -> FastJSONResponse:
        dataplane = plane(request)
        config = dataplane.repository.config(name).model_copy(deep=True)
        config.labels[label] = target.version
        return await apply(dataplane, name, config)

    @router.delete(
        "/models/{name}/labels/{label}",
        summary="Remove a label (removing 'stable' makes the highest version the default)",
        responses={401: {}, 404: {}},
    )
    async def delete_label(
        request: Request, name: str = NAME, label: str = LABEL
    ) -> FastJSONResponse:
        dataplane = plane(request)
        config = dataplane.repository.config(name).model_copy(deep=True)
        if config.labels.pop(label, None) is None:
            raise ClientError(404, f"model {name!r} has no label {label!r}")
        return await apply(dataplane, name, config)

    @router.post(
        "/models/{name}/promote",
        summary="Make a version (or the version a label names) the stable, default one",
        responses={401: {}, 404: {}, 409: {}},
    )
    async def promote(request: Request, promotion: Promotion, name: str = NAME) -> FastJSONResponse:
        dataplane = plane(request)
        config = dataplane.repository.config(name).model_copy(deep=True)
        if (promotion.version is None) == (promotion.label is None):
            raise ClientError(422, "body: give either version or label")
        version = promotion.version
        if promotion.label is not None:
            version = config.labels.get(promotion.label)
            if version is None:
                raise ClientError(404, f"model {name!r} has no label {promotion.label!r}")
        assert version is not None
        config.labels[STABLE] = version
        if config.labels.get(CANARY) == version:  # a promoted canary's trial is over
            del config.labels[CANARY]
            config.canary_percent = 0
        return await apply(dataplane, name, config)

    @router.put(
        "/models/{name}/canary",
        summary="Send a share of the default traffic to a version (labelled canary)",
        responses={401: {}, 404: {}, 409: {}},
    )
    async def put_canary(request: Request, canary: Canary, name: str = NAME) -> FastJSONResponse:
        dataplane = plane(request)
        config = dataplane.repository.config(name).model_copy(deep=True)
        config.labels[CANARY] = canary.version
        config.canary_percent = canary.percent
        return await apply(dataplane, name, config)

    return router
