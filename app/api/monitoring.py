"""``/metrics`` in the Prometheus text format: this process's, or summed over workers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE)
