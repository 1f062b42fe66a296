"""Version segments of URLs, read with the one grammar of ``app.artifacts.parse_version``."""

from __future__ import annotations

from starlette.requests import Request

from app.api.errors import ClientError
from app.artifacts import MAX_VERSION, parse_version

PROBLEM = f"must be a version number from 1 to {MAX_VERSION}, digits only, no leading zeros"


def pinned(text: str, status: int = 400) -> int:
    """A URL's version segment as a number, or a client error naming it (the native
    API's 422 carries per-field detail; the standard protocols' 400 is the message)."""
    number = parse_version(text)
    if number is None:
        problem = f"{PROBLEM}, got {text!r}"
        detail = [{"field": "path.version", "problem": problem}] if status == 422 else None
        raise ClientError(status, f"path.version: {problem}", detail)
    return number


def path_version(request: Request, status: int = 422) -> int:
    """The ``{version}`` of a hot route, read without FastAPI's per-request solving."""
    return pinned(request.path_params["version"], status)
