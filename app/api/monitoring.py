"""``/metrics`` in the Prometheus text format: this process's, or summed over workers."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request, Response

from app.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    # on a thread: the insight collector measures drift and reads the prediction store
    body = await anyio.to_thread.run_sync(request.app.state.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE)
