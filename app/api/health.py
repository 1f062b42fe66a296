"""Liveness (the process answers) and readiness (models loaded and warmed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.responses import FastJSONResponse

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="Liveness: the process is up")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/health/ready",
    summary="Readiness: startup loading finished and at least one model serves",
    responses={503: {"description": "Still loading, or no model could be loaded"}},
)
async def ready(request: Request) -> FastJSONResponse:
    repository = (
        request.app.state.dataplane.repository if hasattr(request.app.state, "dataplane") else None
    )
    if repository is None:
        return FastJSONResponse({"status": "loading", "models": []}, status_code=503)
    models: list[dict[str, Any]] = [
        {"name": s.name, "version": s.version, "status": s.status.value, "reason": s.reason}
        for s in repository.states()
    ]
    is_ready = repository.is_ready() and not getattr(request.app.state, "draining", False)
    status = (
        "ready" if is_ready else ("loading" if not repository.startup_complete else "unavailable")
    )
    return FastJSONResponse(
        {"status": status, "models": models}, status_code=200 if is_ready else 503
    )
