"""Reading request bodies: a size limit enforced while streaming, and fast JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson
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


def parse_json(body: bytes) -> Any:
    if not body:
        raise ClientError(400, "body: request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    # NaN and Infinity are not JSON, but clients send them; the slow parser accepts them
    # so that validation can name the field that holds one
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ClientError(400, f"body: malformed JSON ({error})") from None
