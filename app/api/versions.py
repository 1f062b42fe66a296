"""Version segments of URLs, read with the one grammar of ``app.artifacts``: a version
number (``parse_version``) or a label (``parse_label``) such as ``stable``."""

from __future__ import annotations

from starlette.requests import Request

from app.api.errors import ClientError
from app.artifacts import LABEL_PATTERN, MAX_VERSION, parse_label, parse_version_ref

PROBLEM = (
    f"must be a version number from 1 to {MAX_VERSION} (digits only, no leading zeros) "
    f"or a label matching {LABEL_PATTERN}"
)
LABEL_PROBLEM = f"must be a label matching {LABEL_PATTERN}"


def pinned(text: str, status: int = 400) -> int | str:
    """A URL's version segment as a number or a label, or a client error naming it (the
    native API's 422 carries per-field detail; the standard protocols' 400 is the message)."""
    ref = parse_version_ref(text)
    if ref is None:
        problem = f"{PROBLEM}, got {text!r}"
        detail = [{"field": "path.version", "problem": problem}] if status == 422 else None
        raise ClientError(status, f"path.version: {problem}", detail)
    return ref


def labelled(text: str, status: int = 400) -> str:
    """A ``/labels/{label}`` segment (TF Serving), or a client error naming it."""
    label = parse_label(text)
    if label is None:
        raise ClientError(status, f"path.label: {LABEL_PROBLEM}, got {text!r}")
    return label


def path_version(request: Request, status: int = 422) -> int | str:
    """The ``{version}`` of a hot route, read without FastAPI's per-request solving."""
    return pinned(request.path_params["version"], status)
