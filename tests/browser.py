"""Debian's chromium for the real-browser tests: where it is, how it starts offline,
and the skip-or-fail rule (CI sets REQUIRE_BROWSER=1 so that a missing browser fails)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    """Skip with a reason where no browser is installed; fail under REQUIRE_BROWSER=1."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright for Python is not installed (pip install -e '.[test]')"
    if missing is None:
        return
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"{missing}, but REQUIRE_BROWSER=1")
    pytest.skip(missing)
