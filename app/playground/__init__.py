"""The playground: a page at ``/`` to draw a digit, fill a form and read each model's card.

Plain HTML, CSS and JavaScript shipped in the package (``static/``), so the page
works offline. It calls only the public API; nothing here exists for it alone
beyond serving its own files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=FileResponse)
async def playground() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


def install(app: FastAPI) -> None:
    """The page at ``/`` and its files under ``/playground/`` (mounted on the app itself:
    a mount inside an included router is not carried over by every FastAPI release)."""
    app.include_router(router)
    app.mount("/playground", StaticFiles(directory=STATIC), name="playground")
