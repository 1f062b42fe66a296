"""API keys on the prediction routes: off by default, one check for every protocol,
keys or their SHA-256, health and docs left open, the admin token kept separate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import card

IRIS = dict(card("iris", 2).example)
V2 = {
    "inputs": [{"name": k, "shape": [1], "datatype": "FP32", "data": [v]} for k, v in IRIS.items()]
}
PREDICTIONS: list[tuple[str, Any]] = [
    ("/models/iris/predict", IRIS),
    ("/models/iris/versions/2/predict", IRIS),
    ("/v2/models/iris/infer", V2),
    ("/v1/models/iris:predict", {"instances": [IRIS]}),
]
HASHED = "sha256:" + hashlib.sha256(b"second-key").hexdigest()


@pytest.fixture(scope="module")
def guarded() -> Iterator[TestClient]:
    settings = Settings(
        models_dir=MODELS_DIR,
        runtime="onnx",
        api_keys=["first-key", HASHED],  # type: ignore[list-item]
        admin_token="admin-secret",  # type: ignore[arg-type]
        watch_interval_s=0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("path", "body"), PREDICTIONS)
def test_predictions_need_a_valid_key(guarded: TestClient, path: str, body: Any) -> None:
    missing = guarded.post(path, json=body)
    assert missing.status_code == 401
    assert missing.json() == {
        "error": "authorization: an API key is required; send X-API-Key or Authorization: Bearer"
    }
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = guarded.post(path, json=body, headers={"X-API-Key": "first-kez"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
    assert guarded.post(path, json=body, headers={"X-API-Key": "first-key"}).status_code == 200
    bearer = {"Authorization": "Bearer second-key"}  # configured only as its SHA-256
    assert guarded.post(path, json=body, headers=bearer).status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/health/live", "/health/ready", "/v2/health/live", "/metrics", "/docs", "/openapi.json", "/"],
)
def test_health_metrics_and_docs_stay_open(guarded: TestClient, path: str) -> None:
    assert guarded.get(path).status_code == 200


def test_metadata_needs_a_key_too(guarded: TestClient) -> None:
    assert guarded.get("/models").status_code == 401
    assert guarded.get("/models", headers={"X-API-Key": "first-key"}).status_code == 200


def test_the_admin_token_stays_separate(guarded: TestClient) -> None:
    path = "/admin/models/iris/versions/2/load"
    as_key = guarded.post(path, headers={"Authorization": "Bearer first-key"})
    assert as_key.status_code == 401  # an API key is no admin token
    assert guarded.post(path, headers={"Authorization": "Bearer admin-secret"}).status_code == 200


def test_keys_are_off_by_default(client: TestClient) -> None:
    assert client.post("/models/iris/predict", json=IRIS).status_code == 200
