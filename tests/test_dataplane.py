"""One data plane under every protocol: each version is validated against its own
schema, a model added while the server runs is served and documented everywhere,
and every class of bad input is a 4xx in each protocol's own shape, never a 5xx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.model_rows import card
from tests.repository_copies import copy_version

IRIS = dict(card("iris", 1).example)
RENAMED = {"sepal_length": "sepal_len", "sepal_width": "sepal_wid"}
IRIS_V2 = {RENAMED.get(k, k): v for k, v in IRIS.items()}


def v2_body(row: dict[str, Any], **extra: Any) -> dict[str, Any]:
    inputs = [{"name": k, "shape": [1], "datatype": "FP32", "data": [v]} for k, v in row.items()]
    return {"inputs": inputs, **extra}


@pytest.fixture(scope="module")
def two_schemas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """iris v1 with the committed fields, v2 with two of them renamed."""
    models = tmp_path_factory.mktemp("two-schemas")
    copy_version(models, ("iris", 1), "iris", 1)
    copy_version(models, ("iris", 1), "iris", 2, RENAMED)
    settings = Settings(models_dir=models, runtime="onnx", watch_interval_s=0)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("version", "good", "bad"), [(1, IRIS, IRIS_V2), (2, IRIS_V2, IRIS)])
def test_each_pinned_version_checks_its_own_schema(
    two_schemas: TestClient, version: int, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    wrong = next(k for k in bad if k not in good)
    native = f"/models/iris/versions/{version}/predict"
    assert two_schemas.post(native, json=good).json()["version"] == version
    refused = two_schemas.post(native, json=bad)
    assert refused.status_code == 422 and wrong in refused.json()["error"], refused.text

    v2 = f"/v2/models/iris/versions/{version}/infer"
    assert two_schemas.post(v2, json=v2_body(good)).json()["model_version"] == str(version)
    refused = two_schemas.post(v2, json=v2_body(bad))
    assert refused.status_code == 400 and wrong in refused.json()["error"], refused.text

    tf = f"/v1/models/iris/versions/{version}:predict"
    assert two_schemas.post(tf, json={"instances": [good]}).status_code == 200
    refused = two_schemas.post(tf, json={"instances": [bad]})
    assert refused.status_code == 400 and wrong in refused.json()["error"], refused.text


def test_the_documented_schema_is_the_default_versions(two_schemas: TestClient) -> None:
    schemas = two_schemas.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["IrisInstance"]["properties"]) == set(IRIS_V2)


def test_a_model_added_at_run_time_is_served_and_documented(tmp_path: Path) -> None:
    copy_version(tmp_path, ("iris", 1), "iris", 1)
    settings = Settings(models_dir=tmp_path, runtime="onnx", watch_interval_s=0.1)
    with TestClient(create_app(settings)) as client:
        assert "/models/flowers/predict" not in client.get("/openapi.json").json()["paths"]
        copy_version(tmp_path, ("iris", 2), "flowers", 3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            names = [m["name"] for m in client.get("/models").json()]
            if "flowers" in names:
                break
            time.sleep(0.1)
        assert names == ["flowers", "iris"]
        native = client.post("/models/flowers/predict", json=IRIS)
        assert (native.status_code, native.json()["version"]) == (200, 3)
        assert client.post("/v2/models/flowers/infer", json=v2_body(IRIS)).status_code == 200
        assert (
            client.post("/v1/models/flowers:predict", json={"instances": [IRIS]}).status_code == 200
        )
        paths = client.get("/openapi.json").json()["paths"]
        assert (
            "/models/flowers/predict" in paths
            and "/models/flowers/versions/{version}/predict" in paths
        )


# ---------------------------------------------------------------- every error class
HUGE = "1" + "0" * 400
ROW = json.dumps(IRIS)


def hostile_requests() -> list[tuple[str, str, str | bytes, dict[str, str], str]]:
    """(method, path, body, headers, a word the error must name)."""
    native, tf, v2 = "/models/iris/predict", "/v1/models/iris:predict", "/v2/models/iris/infer"
    huge_row = ROW.replace("6.1", HUGE)
    surrogate_key = ROW[:-1] + ', "\\ud800": 1}'
    surrogate_value = ROW.replace('"sepal_length": 6.1', '"sepal_length": "\\udfff"')
    v2_huge = json.dumps(v2_body(IRIS)).replace("6.1", HUGE)
    int64 = json.dumps(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [int(HUGE)]}]}
    )
    cases: list[tuple[str, str, str | bytes, dict[str, str], str]] = [
        ("POST", native, huge_row, {}, "sepal_length"),
        ("POST", native, '{"instances": [' + huge_row + "]}", {}, "instances[0].sepal_length"),
        ("POST", tf, '{"instances": [' + huge_row + "]}", {}, "sepal_length"),
        (
            "POST",
            tf,
            json.dumps({"inputs": {k: [v] for k, v in IRIS.items()}}).replace("6.1", HUGE),
            {},
            "inputs.sepal_length",
        ),
        ("POST", v2, v2_huge, {}, "sepal_length"),
        ("POST", v2, int64, {}, "'x'"),
        ("POST", native, surrogate_key, {}, "Unicode"),
        ("POST", native, surrogate_value, {}, "Unicode"),
        ("POST", tf, '{"instances": [' + surrogate_key + "]}", {}, "Unicode"),
        ("POST", v2, json.dumps(v2_body(IRIS))[:-1] + ', "id": "\\ud800"}', {}, "Unicode"),
        (
            "POST",
            v2,
            json.dumps(v2_body(IRIS, outputs=[{"name": "label"}, {"name": "label"}])),
            {},
            "more than once",
        ),
        (
            "POST",
            v2,
            json.dumps(v2_body(IRIS)),
            {"Inference-Header-Content-Length": "11_2"},
            "Inference-Header-Content-Length",
        ),
    ]
    for odd in ("01", "+1", " 1", "1.0", "0", "X", "-x", "99999999999", "１"):
        quoted = odd.replace(" ", "%20")
        cases += [
            ("POST", f"/models/iris/versions/{quoted}/predict", ROW, {}, "version"),
            ("GET", f"/models/iris/versions/{quoted}", "", {}, "version"),
            ("GET", f"/models/iris/versions/{quoted}/history.png", "", {}, "version"),
            (
                "POST",
                f"/v2/models/iris/versions/{quoted}/infer",
                json.dumps(v2_body(IRIS)),
                {},
                "version",
            ),
            ("GET", f"/v2/models/iris/versions/{quoted}", "", {}, "version"),
            ("POST", f"/v1/models/iris/versions/{quoted}:predict", "[]", {}, "version"),
            ("GET", f"/v1/models/iris/versions/{quoted}/metadata", "", {}, "version"),
        ]
    return cases


@pytest.mark.parametrize(("method", "path", "body", "headers", "word"), hostile_requests())
def test_every_error_class_is_a_4xx_in_the_protocols_shape(
    client: TestClient, method: str, path: str, body: str, headers: dict[str, str], word: str
) -> None:
    response = client.request(
        method,
        path,
        content=body.encode("utf-8", "surrogatepass") if body else None,
        headers={"content-type": "application/json", **headers},
    )
    assert 400 <= response.status_code < 500, response.text
    payload = response.json()
    assert word in payload["error"], payload
    if path.startswith(("/v2", "/v1")):
        assert list(payload) == ["error"]  # OIP and TF Serving: the message alone
    else:
        assert all(set(d) == {"field", "problem"} for d in payload.get("detail", []))
