"""The service as a user starts it (``python -m app``), for the bench scripts that drive
one server themselves (stall, overload, insight): started on a loopback port with the
defaults plus what the caller overrides, ready before use, stopped with its group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running(port: int, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """The server process, once ``/health/ready`` answers 200 (at most 60 s)."""
    environment = {
        **os.environ,
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "GRPC_ENABLED": "false",
        **env,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(240):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
