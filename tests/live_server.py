"""The service really running: uvicorn in a subprocess on a free loopback port, and
the native API's answers that the standard protocols must reproduce.

Protocol clients (tritonclient, plain HTTP as the TF Serving docs show) must talk
to a real socket, not to an in-process test transport, to prove they work unchanged.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np

from app.artifacts import read_card

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once /health/ready answers 200, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"the service exited with code {process.returncode}"
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return f"the service was not ready within {timeout:.0f} s"


# the gRPC address ("127.0.0.1:port") of each running service, by its HTTP base URL
GRPC_ADDRESSES: dict[str, str] = {}


def grpc_address(url: str) -> str:
    """Where the service at ``url`` serves gRPC (its own free port)."""
    return GRPC_ADDRESSES[url]


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    grpc: str = ""

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@contextlib.contextmanager
def service_process(
    models_dir: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> Iterator[Service]:
    """``python -m app`` (the real entry point) on free HTTP and gRPC ports; stopped
    with SIGTERM."""
    port, grpc_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {"MODELS_DIR": str(models_dir), "RUNTIME": "onnx", "LOG_LEVEL": "warning"}
    ports = {"HOST": "127.0.0.1", "PORT": str(port), "GRPC_PORT": str(grpc_port)}
    full_env = {**os.environ, **settings, **ports, **(env or {})}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=full_env, stdout=log, stderr=log
        )
        service = Service(url, process, log, f"127.0.0.1:{full_env['GRPC_PORT']}")
        GRPC_ADDRESSES[url] = service.grpc
        try:
            problem = _wait_ready(url, process, timeout)
            if problem:
                raise RuntimeError(f"{problem}; its log:\n{service.output()[-3000:]}")
            yield service
        finally:
            GRPC_ADDRESSES.pop(url, None)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextlib.contextmanager
def running_service(models_dir: Path, timeout: float = 180) -> Iterator[str]:
    """Yield the base URL of the service on ``models_dir`` with ONNX Runtime."""
    with service_process(models_dir, timeout=timeout) as service:
        yield service.url


def native_answers(
    http: httpx.Client, name: str, version: int, instances: list[dict[str, Any]]
) -> tuple[list[str], np.ndarray]:
    """Labels and probabilities (in the card's class order) from the native API."""
    response = http.post(
        f"/models/{name}/versions/{version}/predict", json={"instances": instances}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    classes = read_card(ROOT / "models" / name / str(version)).classes
    probabilities = [[p["probabilities"][c] for c in classes] for p in predictions]
    return [p["label"] for p in predictions], np.array(probabilities)
