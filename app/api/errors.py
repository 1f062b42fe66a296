"""Client errors as JSON that names the field and the problem; never a 500 for bad input.

Every protocol answers ``{"error": "..."}`` (the shape KServe v2 and TF Serving
use); the native API adds ``detail``, one entry per problem.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.responses import FastJSONResponse
from app.encoding import EncodingError
from app.serving.repository import ModelNotFound

log = logging.getLogger(__name__)
MAX_DETAIL = 20  # one bad image must not produce a 784-entry answer


class ClientError(Exception):
    """A 4xx answer with a message and, optionally, one entry per bad field."""

    def __init__(
        self, status: int, message: str, detail: Sequence[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = list(detail or [])


def error_response(
    status: int, message: str, detail: Sequence[dict[str, Any]] = ()
) -> FastJSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail:
        body["detail"] = list(detail)
    return FastJSONResponse(body, status_code=status)


def location(loc: Sequence[str | int], prefix: str = "") -> str:
    """``("instances", 0, "age")`` -> ``instances[0].age``."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def validation_detail(
    exc: ValidationError | RequestValidationError, prefix: str = "", skip: int = 0
) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"field", "problem"}``; ``skip`` drops leading loc parts."""
    detail = []
    for err in exc.errors()[:MAX_DETAIL]:
        loc = [p for p in err["loc"] if p not in ("body",)][skip:]
        # union branches add their type name to the location; it tells a client nothing
        loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p[:1].isupper()))]
        problem = err["msg"]
        if err.get("type") == "literal_error":
            problem = f"{problem}, got {err.get('input')!r}"
        detail.append({"field": location(loc, prefix), "problem": problem})
    return detail


def summarise(detail: Sequence[dict[str, Any]]) -> str:
    first = "; ".join(f"{d['field']}: {d['problem']}" for d in detail[:3])
    more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
    return first + more


def install(app: FastAPI) -> None:
    @app.exception_handler(ClientError)
    async def client_error(_: Request, exc: ClientError) -> FastJSONResponse:
        return error_response(exc.status, exc.message, exc.detail)

    @app.exception_handler(EncodingError)
    async def encoding_error(_: Request, exc: EncodingError) -> FastJSONResponse:
        field = str(exc).split(": ", 1)[0]
        return error_response(422, str(exc), [{"field": field, "problem": exc.problem}])

    @app.exception_handler(ModelNotFound)
    async def not_found(_: Request, exc: ModelNotFound) -> FastJSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> FastJSONResponse:
        detail = validation_detail(exc)
        return error_response(422, summarise(detail), detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> FastJSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        response = error_response(exc.status_code, message)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

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
