"""Reading request bodies: a size limit enforced while streaming, and fast JSON.

A large body is parsed on the data plane's preparation pool, so that one client's
8 MB request does not hold the event loop (and every other client) while it parses.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ClientError


class BodyTooLarge(ClientError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body: request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Reject bodies over ``limit`` bytes, by header at once or while they stream in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await _reject(send, self.limit)
                    return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


async def _reject(send: Send, limit: int) -> None:
    body = orjson.dumps({"error": f"body: request body is larger than the limit of {limit} bytes"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# from this size on, parsing is moved off the event loop (a thread hop costs ~50 us)
LARGE_BODY = 64 * 1024  # parsed off the event loop from this size on (~0.5 ms of orjson)


async def read_json(request: Request) -> Any:
    """The request's JSON body; large ones are parsed off the event loop."""
    body = await request.body()
    if len(body) >= LARGE_BODY:
        return await request.app.state.dataplane.offload_serial(parse_json, body)
    return parse_json(body)


def parse_json(body: bytes) -> Any:
    if not body:
        raise ClientError(400, "body: request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    # NaN, Infinity and integers beyond 64 bits are not what orjson takes, but clients
    # send them; the slow parser accepts them so that validation can name the field
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise ClientError(400, f"body: malformed JSON ({error})") from None
    _require_unicode(payload)
    return payload


def _require_unicode(payload: Any) -> None:
    """Refuse strings that are not Unicode text (a lone surrogate such as "\\ud800"):
    they could not even be written back in an error message."""
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ClientError(
                    400, "body: strings must be valid Unicode (a lone surrogate escape is not)"
                ) from None
