"""Every operation in the OpenAPI document succeeds when called with the example it
shows: what "Try it out" in /docs sends (the browser test walks one of them)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    app = create_app(Settings(models_dir=MODELS_DIR, runtime="onnx", watch_interval_s=0))
    document = app.openapi()
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def shown_examples(operation: dict[str, Any]) -> list[Any]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    examples = [e["value"] for e in content.get("examples", {}).values()]
    if "example" in content:
        examples.append(content["example"])
    return examples


def fill_path(path: str, operation: dict[str, Any]) -> str:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            example = parameter.get("examples", parameter.get("schema", {}).get("examples"))
            assert example, f"{path}: path parameter {parameter['name']} shows no example"
            if isinstance(example, list):  # JSON Schema examples
                value = example[0]
            else:  # OpenAPI Example objects
                value = next(iter(example.values()))["value"]
            path = path.replace("{" + parameter["name"] + "}", str(value))
    return path


OPERATIONS = operations()


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_the_shown_example_succeeds(
    client: TestClient, method: str, path: str, operation: dict[str, Any]
) -> None:
    url = fill_path(path, operation)
    if method == "GET":
        response = client.get(url)
        assert response.status_code == 200, response.text
        return
    content = operation.get("requestBody", {}).get("content", {})
    if "multipart/form-data" in content:
        pytest.skip("file uploads show no example; tests/test_images.py uploads real images")
    examples = shown_examples(operation)
    assert examples, f"{method} {path} shows no request example"
    for example in examples:
        response = client.request(method, url, json=example)
        assert response.status_code == 200, (example, response.text)
