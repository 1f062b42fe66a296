"""The TensorFlow Serving REST API against the running service: requests built as
https://www.tensorflow.org/tfx/serving/api_rest shows them (a JSON body POSTed to
``/v1/models/NAME[/versions/N]:predict``), in row and columnar format, answer as the
native API does; status and metadata have TF Serving's shape; errors are 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.live_server import native_answers
from tests.model_rows import card, synthetic_rows

pytestmark = pytest.mark.slow  # starts the service in a subprocess

MODELS = [("income", 1), ("salary", 1), ("iris", 1), ("iris", 2), ("digits", 1), ("digits", 2)]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def http(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=30) as client:
        yield client


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    """As ``curl -d '<json>' -X POST`` does in the TF Serving docs."""
    return http.post(path, content=json.dumps(body))


def instances(name: str, version: int) -> list[dict[str, Any]]:
    """Rows over the card's domain (missing values as null, unseen categories)."""
    model = card(name, version)
    rows = synthetic_rows(model, 10, seed=version + 7)
    if name == "digits":
        rows[0] = {"image": model.example["image"]}
    nullable = [f.name for f in model.inputs if f.nullable]
    for i, field in enumerate(nullable):
        rows[1 + i][field] = None
    return rows


def row_request(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Objects keyed by input name; for the one-input digits model, bare 28x28 arrays."""
    if name == "digits":
        return {"instances": [r["image"] for r in rows]}
    return {"instances": rows}


def column_request(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if name == "digits":
        return {"inputs": [r["image"] for r in rows]}
    return {"inputs": {key: [r[key] for r in rows] for key in rows[0]}}


def path(name: str, version: int | None) -> str:
    pinned = "" if version is None else f"/versions/{version}"
    return f"/v1/models/{name}{pinned}:predict"


def test_model_status_lists_every_version(http: httpx.Client) -> None:
    response = http.get("/v1/models/iris")
    assert response.status_code == 200
    assert response.json() == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("1", "2")
        ]
    }
    one = http.get("/v1/models/digits/versions/2").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in one] == [("2", "AVAILABLE")]


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_metadata_has_the_signature(http: httpx.Client, name: str, version: int) -> None:
    model = card(name, version)
    response = http.get(f"/v1/models/{name}/versions/{version}/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": name, "signature_name": "", "version": str(version)}
    definition = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(definition["inputs"]) == [f.name for f in model.inputs]
    probabilities = definition["outputs"]["probabilities"]
    assert probabilities["dtype"] == "DT_FLOAT"
    sizes = [d["size"] for d in probabilities["tensor_shape"]["dim"]]
    assert sizes == ["-1", str(len(model.classes))]
    assert definition["outputs"]["label"]["dtype"] == "DT_STRING"
    assert body["metadata"]["classes"] == model.classes


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_row_format_gives_the_native_answers(http: httpx.Client, name: str, version: int) -> None:
    rows = instances(name, version)
    response = post(http, path(name, version), row_request(name, rows))
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    labels, probabilities = native_answers(http, name, version, rows)
    assert [set(p) for p in predictions] == [{"probabilities", "label"}] * len(rows)
    assert [p["label"] for p in predictions] == labels
    got = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(got, probabilities, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_columnar_format_gives_the_native_answers(
    http: httpx.Client, name: str, version: int
) -> None:
    rows = instances(name, version)
    response = post(http, path(name, version), column_request(name, rows))
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    labels, probabilities = native_answers(http, name, version, rows)
    assert outputs["label"] == labels
    np.testing.assert_allclose(outputs["probabilities"], probabilities, rtol=0, atol=TOLERANCE)


def test_latest_version_serves_without_a_pin(http: httpx.Client) -> None:
    rows = instances("digits", 2)
    latest = post(http, path("digits", None), row_request("digits", rows)).json()
    pinned = post(http, path("digits", 2), row_request("digits", rows)).json()
    assert latest == pinned


def test_named_instances_shape_n_by_1_and_signature_name(http: httpx.Client) -> None:
    """Per-instance values may be one-element lists, and the digits' single input may
    be named; ``signature_name`` may say the default signature."""
    rows = instances("iris", 1)
    wrapped = [{k: [v] for k, v in r.items()} for r in rows]
    body = {"signature_name": "serving_default", "instances": wrapped}
    response = post(http, path("iris", 1), body)
    assert response.status_code == 200, response.text
    labels, _ = native_answers(http, "iris", 1, rows)
    assert [p["label"] for p in response.json()["predictions"]] == labels
    digits = instances("digits", 1)
    named = post(http, path("digits", 1), {"instances": digits}).json()
    assert named == post(http, path("digits", 1), row_request("digits", digits)).json()


# ------------------------------------------------------------------------ errors
def income_row() -> dict[str, Any]:
    return dict(card("income", 1).example)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"instances": [income_row()], "inputs": {}}, ["not both"]),
        ({}, ["instances", "inputs"]),
        ({"instances": [income_row() | {"age": "old"}]}, ["instances[0].age", "number"]),
        ({"instances": [income_row() | {"workclass": 3}]}, ["workclass", "string"]),
        ({"inputs": {k: [v] for k, v in income_row().items()} | {"age": [30, 40]}}, ["age: 2"]),
        (
            {"instances": [{k: v for k, v in income_row().items() if k != "age"}]},
            ["instances[0].age", "required"],
        ),
        ({"instances": [income_row() | {"colour": "red"}]}, ["instances[0].colour", "unexpected"]),
        ({"inputs": {k: [v] for k, v in income_row().items()} | {"colour": ["red"]}}, ["colour"]),
        ({"instances": [income_row()], "signature_name": "classify"}, ["signature_name"]),
    ],
)
def test_bad_requests_are_400(http: httpx.Client, body: dict[str, Any], words: list[str]) -> None:
    response = post(http, path("income", 1), body)
    assert response.status_code == 400
    assert list(response.json()) == ["error"]
    assert all(w in response.json()["error"] for w in words), response.json()


def test_image_of_the_wrong_size_is_400(http: httpx.Client) -> None:
    response = post(http, path("digits", 1), {"instances": [[[0] * 28] * 27]})
    assert response.status_code == 400
    assert all(w in response.json()["error"] for w in ("instances[0].image", "[27, 28]"))
    ragged = post(http, path("digits", 1), {"inputs": [[0] * 784, [0] * 783]})
    assert ragged.status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "/v1/models/nope",
        "/v1/models/iris/versions/9",
        "/v1/models/nope/metadata",
        "/v1/models/iris/versions/9/metadata",
    ],
)
def test_unknown_model_or_version_status_is_404(http: httpx.Client, url: str) -> None:
    response = http.get(url)
    assert response.status_code == 404
    assert list(response.json()) == ["error"]


@pytest.mark.parametrize(("name", "version"), [("nope", None), ("iris", 9)])
def test_unknown_model_or_version_predict_is_404(
    http: httpx.Client, name: str, version: int | None
) -> None:
    response = post(http, path(name, version), {"instances": [[1.0, 2.0]]})
    assert response.status_code == 404
    assert list(response.json()) == ["error"]
