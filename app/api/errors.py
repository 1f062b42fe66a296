"""Client errors as JSON that names the field and the problem; never a 500 for bad input.

Every protocol answers ``{"error": "..."}`` (the shape KServe v2 and TF Serving
use); the native API adds ``detail``, one entry per problem. Errors of the serving
layer (:mod:`app.serving.errors`) carry data; each protocol adapter renders them in
its own shape, and the handlers here give the native shape to any that reach them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.responses import FastJSONResponse
from app.serving.errors import DeadlineExceeded, ModelNotFound, Overloaded, ServingError

log = logging.getLogger(__name__)
MAX_DETAIL = 20  # one bad image must not produce a 784-entry answer

ERROR_BODY: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string", "description": "what is wrong, naming the field"},
                    "detail": {
                        "type": "array",
                        "description": "native API: one entry per problem",
                        "items": {
                            "type": "object",
                            "properties": {
                                "field": {"type": "string"},
                                "problem": {"type": "string"},
                            },
                        },
                    },
                },
            }
        }
    }
}


class ClientError(Exception):
    """A 4xx answer about the wire format, with a message and optional per-field detail."""

    def __init__(
        self, status: int, message: str, detail: Sequence[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = list(detail or [])


def error_response(
    status: int,
    message: str,
    detail: Sequence[dict[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> FastJSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail:
        body["detail"] = list(detail)
    return FastJSONResponse(body, status_code=status, headers=headers)


def failure(exc: ServingError, invalid_status: int, message: str) -> FastJSONResponse:
    """A serving error other than invalid input, as ``{"error"}`` with its HTTP status:
    404 unknown model or version, 503 with Retry-After when overloaded, 504 when the
    request's own deadline passed first."""
    if isinstance(exc, ModelNotFound):
        return error_response(404, message)
    if isinstance(exc, Overloaded):
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return error_response(503, message, headers={"retry-after": retry})
    if isinstance(exc, DeadlineExceeded):
        return error_response(504, message)
    return error_response(invalid_status, message)


def location(loc: Sequence[str | int], prefix: str = "") -> str:
    """``("instances", 0, "age")`` -> ``instances[0].age``."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def summarise(detail: Sequence[dict[str, Any]]) -> str:
    first = "; ".join(f"{d['field']}: {d['problem']}" for d in detail[:3])
    more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
    return first + more


def install(app: FastAPI) -> None:
    from app.api.native import render

    @app.exception_handler(ClientError)
    async def client_error(_: Request, exc: ClientError) -> FastJSONResponse:
        return error_response(exc.status, exc.message, exc.detail)

    @app.exception_handler(ServingError)
    async def serving_error(_: Request, exc: ServingError) -> FastJSONResponse:
        return render(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> FastJSONResponse:
        detail = []
        for err in exc.errors()[:MAX_DETAIL]:
            loc = [p for p in err["loc"] if p != "body"]
            detail.append({"field": location(loc), "problem": err["msg"]})
        return error_response(422, summarise(detail), detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> FastJSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return error_response(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> FastJSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the request was not processed")


async def respond_to(request: Request, exc: Exception) -> Response:
    """The answer the app's registered handlers give for ``exc`` (most specific first)."""
    handlers = request.app.exception_handlers if "app" in request.scope else {}
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(request, exc)
            return response
    raise exc
