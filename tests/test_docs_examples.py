"""The OpenAPI document against the live service: every example it shows, sent to its
route, gets the documented status, and the answer shown is the answer given; every
response is documented with a schema, and errors only where a route can give them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

Operation = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def document(live_url: str) -> dict[str, Any]:
    response = httpx.get(f"{live_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


@pytest.fixture(scope="module")
def http(live_url: str) -> Any:
    with httpx.Client(base_url=live_url, timeout=30) as client:
        yield client


def operations(document: dict[str, Any]) -> list[Operation]:
    return [
        (method.upper(), path, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]


def path_example(parameter: dict[str, Any]) -> Any:
    example = parameter.get("examples", parameter.get("schema", {}).get("examples"))
    assert example, f"path parameter {parameter['name']} shows no example"
    if isinstance(example, list):  # JSON Schema examples
        return example[0]
    return next(iter(example.values()))["value"]  # OpenAPI Example objects


def fill_path(path: str, operation: dict[str, Any], example: dict[str, Any] | None = None) -> str:
    """The path with its parameters' examples, or the model and version a named
    example says it is for (``x-model``, ``x-version``)."""
    chosen = {
        "name": (example or {}).get("x-model"),
        "version": (example or {}).get("x-version"),
    }
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            value = chosen.get(parameter["name"]) or path_example(parameter)
            path = path.replace("{" + parameter["name"] + "}", str(value))
    return path


def request_examples(operation: dict[str, Any]) -> list[dict[str, Any]]:
    """Every request example, as ``{"value", "x-model"?, "x-version"?}``."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    examples = list(content.get("examples", {}).values())
    if "example" in content:
        examples.append({"value": content["example"]})
    return examples


def shown_answer(operation: dict[str, Any], example: dict[str, Any] | None) -> Any:
    """The 200 answer the document shows for this request (by model for named ones)."""
    content = operation["responses"]["200"].get("content", {}).get("application/json", {})
    if "example" in content:
        return content["example"]
    named = content.get("examples", {})
    if example is not None and example.get("x-model") in named:
        return named[example["x-model"]]["value"]
    return None


def assert_same_answer(shown: Any, got: Any, where: str) -> None:
    """Labels, ids and shapes equal; probabilities equal to float32 rounding."""
    if isinstance(shown, float) and isinstance(got, float):
        assert got == pytest.approx(shown, abs=1e-5), where
    elif isinstance(shown, dict) and isinstance(got, dict):
        assert shown.keys() == got.keys(), where
        for key in shown:
            assert_same_answer(shown[key], got[key], f"{where}.{key}")
    elif isinstance(shown, list) and isinstance(got, list):
        assert len(shown) == len(got), where
        for i, (a, b) in enumerate(zip(shown, got, strict=True)):
            assert_same_answer(a, b, f"{where}[{i}]")
    else:
        assert shown == got, where


PREDICTIONS = ("/predict", "/infer", ":predict")


def card_example_png(http: httpx.Client, model: str) -> bytes:
    """The model card's example image (from the live metadata) as a PNG file."""
    import io

    import numpy as np
    from PIL import Image

    meta = http.get(f"/models/{model}").json()
    field = meta["inputs"][0]
    height, width = field["shape"] or [28, 28]
    pixels = np.asarray(meta["card"]["example"][field["name"]], dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(height, width)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_example_gets_the_documented_status_and_answer(
    document: dict[str, Any], http: httpx.Client
) -> None:
    tried = mistakes = 0
    for method, path, operation in operations(document):
        if method == "GET":
            response = http.get(fill_path(path, operation))
            assert response.status_code == 200, (path, response.text)
            shown = shown_answer(operation, None)
            if "json" in response.headers["content-type"] and shown is not None:
                got = response.json()
                # what a GET shows is a real answer: the same structure as now
                assert type(got) is type(shown), path
                if isinstance(got, dict):
                    assert got.keys() == shown.keys(), path
            tried += 1
            continue
        content = operation.get("requestBody", {}).get("content", {})
        if "multipart/form-data" in content:
            # the answer shown is the card's example image uploaded as a PNG: upload it
            model = path.split("/")[2]
            png = card_example_png(http, model)
            url = fill_path(path, operation)
            response = http.post(url, files={"file": ("digit.png", png, "image/png")})
            assert response.status_code == 200, (url, response.text)
            assert_same_answer(shown_answer(operation, None), response.json(), f"POST {url}")
            tried += 1
            continue
        examples = request_examples(operation)
        if path == "/v2/repository/index":
            examples = examples or [{"value": {}}]
        assert examples, f"{method} {path} shows no request example"
        for example in examples:
            url = fill_path(path, operation, example)
            response = http.request(method, url, json=example["value"])
            status = example.get("x-status", 200)  # an example of a mistake says its status
            assert response.status_code == status, (url, example, response.text)
            tried += 1
            if status != 200:
                error = operation["responses"][str(status)]["content"]["application/json"]
                assert error.get("example") == response.json(), url  # the very error body
                mistakes += 1
                continue
            if path.endswith(PREDICTIONS):
                shown = shown_answer(operation, example)
                assert shown is not None, f"{method} {path} shows no answer"
                got = response.json()
                if isinstance(example["value"], dict) and "instances" in example["value"]:
                    continue  # the batch example: the answer shown is the single one's
                assert_same_answer(shown, got, f"{method} {url}")
    assert tried > 30
    assert mistakes >= 4  # a misspelt-field example on each model's predict routes


def test_v2_infer_shows_one_real_example_per_model(document: dict[str, Any]) -> None:
    operation = document["paths"]["/v2/models/{name}/infer"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/InferenceRequest"}
    names = {e["x-model"] for e in body["examples"].values()}
    native = {p.split("/")[2] for p in document["paths"] if p.endswith("/predict")}
    assert names == native
    for example in body["examples"].values():
        for tensor in example["value"]["inputs"]:
            assert {"name", "shape", "datatype", "data"} <= tensor.keys()
    answer = operation["responses"]["200"]["content"]["application/json"]
    assert answer["schema"] == {"$ref": "#/components/schemas/InferenceResponse"}
    assert set(answer["examples"]) == names
    request_schema = document["components"]["schemas"]["InferenceRequest"]
    assert request_schema["required"] == ["inputs"]


def test_every_response_has_a_schema_and_errors_have_the_error_body(
    document: dict[str, Any],
) -> None:
    for method, path, operation in operations(document):
        for code, response in operation["responses"].items():
            where = f"{method} {path} {code}"
            assert response.get("description"), where
            content = response.get("content")
            assert content, f"{where}: no content"
            for media, shown in content.items():
                if media == "image/png":
                    continue
                assert shown.get("schema"), f"{where}: no schema"
                if code.startswith("2"):
                    assert "example" in shown or "examples" in shown, f"{where}: no example"
                elif path not in ("/health/ready", "/v2/health/ready"):
                    assert shown["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, where


def test_only_the_errors_a_route_can_give(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    assert "HTTPValidationError" not in text  # FastAPI's generic 422 body is never sent
    for method, path, operation in operations(document):
        codes = set(operation["responses"])
        if method == "GET":
            assert "413" not in codes, path
            assert "503" not in codes or path == "/health/ready", path
        if path.endswith("/predict/image"):
            assert "Malformed JSON" not in json.dumps(operation["responses"]), path
        if path.endswith(("/infer", ":predict")):
            assert "422" not in codes, path  # the standard protocols answer 400
    health = document["paths"]["/v2/health/ready"]["get"]["responses"]
    assert set(health) == {"200", "400"}


def test_placeholder_free_examples(document: dict[str, Any]) -> None:
    """Every shown 200 example comes from the service: no "string" or additionalProp."""
    for method, path, operation in operations(document):
        content = operation["responses"]["200"].get("content", {})
        text = json.dumps(content.get("application/json", {}).get("example", ""))
        text += json.dumps(content.get("application/json", {}).get("examples", ""))
        assert '"string"' not in text and "additionalProp" not in text, f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/models/iris/predict", b"{bad", 400),
        ("/models/iris/predict", b'{"sepal_length": "x"}', 422),
        ("/models/nope/predict", b"{}", 404),
        ("/v2/models/iris/infer", b'{"inputs": []}', 400),
        ("/v1/models/iris:predict", b'{"instances": [{"sepal": 1}]}', 400),
    ],
)
def test_documented_error_statuses_are_given(
    document: dict[str, Any], http: httpx.Client, path: str, body: bytes, status: int
) -> None:
    """Errors the live service gives are in the document, with the error body."""
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert "error" in response.json()
    generic = path.replace("/nope/", "/iris/")
    for documented, methods in document["paths"].items():
        if documented in (generic, generic.replace("iris", "{name}")):
            assert str(status) in methods["post"]["responses"], (documented, status)
            break
    else:
        pytest.fail(f"{path} is not documented")


def test_with_api_keys_the_guarded_routes_document_401() -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    settings = Settings(
        models_dir=MODELS_DIR, runtime="onnx", watch_interval_s=0, api_keys=["docs-key"]
    )
    with TestClient(create_app(settings)) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert "401" in paths["/models/iris/predict"]["post"]["responses"]
        assert "401" in paths["/v2/models/{name}/infer"]["post"]["responses"]
        assert "401" not in paths["/health/ready"]["get"]["responses"]
        assert client.post("/models/iris/predict", json={}).status_code == 401
