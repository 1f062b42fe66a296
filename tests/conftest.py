"""Shared fixtures: the data directory, synthetic datasets, and a client on models/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import synthetic

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
REAL_FILES = ("adult.data", "adult.test", "salary_data_cleaned.csv", "mnist.npz")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# apps built in-process serve gRPC on a free port each, never on the fixed 8001
# (tests/live_server.py gives each subprocess its own free port)
os.environ.setdefault("GRPC_PORT", "0")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets; CI sets REQUIRE_REAL_DATA=1 so that their absence fails."""
    configured = os.environ.get("DATA_DIR")
    path = Path(configured) if configured else None
    missing = [f for f in REAL_FILES if path is None or not (path / f).is_file()]
    if missing:
        message = f"real data not found in DATA_DIR={configured!r}: missing {missing}"
        if os.environ.get("REQUIRE_REAL_DATA") == "1":
            pytest.fail(message + " (REQUIRE_REAL_DATA=1)")
        pytest.skip(message)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny files in the real formats (Adult's quirks included), written by the tests."""
    folder = tmp_path_factory.mktemp("synthetic-data")
    synthetic.write_all(folder)
    return folder


@pytest.fixture(scope="session")
def client() -> Iterator[object]:
    """A TestClient on the committed models, started once (startup loads every model)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(models_dir=MODELS_DIR, runtime="onnx"))
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def live_url() -> Iterator[str]:
    """The service running in a subprocess on the committed models (ONNX Runtime)."""
    from tests.live_server import running_service

    with running_service(MODELS_DIR) as url:
        yield url
