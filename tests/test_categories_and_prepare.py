"""Categories that forgive case and separators, near misses that suggest the fix, a
strict mode, unseen values counted; and one image preparation, in the service, for
uploads and for raw pixels sent with ``prepare`` — on every protocol."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.main import create_app
from app.serving.inference import Rows
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import card

INCOME = dict(card("income", 1).example)
FIELDS = card("income", 1).inputs


def v2_body(row: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    inputs = []
    for field in FIELDS:
        value = row.get(field.name)
        kind = {"category": "BYTES", "ordinal": "BYTES", "integer": "INT64"}.get(field.type, "FP32")
        inputs.append({"name": field.name, "shape": [1], "datatype": kind, "data": [value]})
    body: dict[str, Any] = {"inputs": inputs}
    if parameters:
        body["parameters"] = parameters
    return body


def probabilities(client: TestClient, protocol: str, row: dict[str, Any], **options: Any) -> Any:
    if protocol == "native":
        answer = client.post("/models/income/predict", json={"instances": [row], **options})
        return answer.status_code, answer.json()
    if protocol == "v2":
        answer = client.post("/v2/models/income/infer", json=v2_body(row, **options))
        return answer.status_code, answer.json()
    answer = client.post("/v1/models/income:predict", json={"instances": [row]})
    return answer.status_code, answer.json()


@pytest.mark.parametrize("protocol", ["native", "v2", "tfserving"])
@pytest.mark.parametrize(
    ("field", "typed"),
    [
        ("sex", "male"),
        ("sex", "MALE "),
        ("workclass", "private"),
        ("native_country", "United States"),
    ],
)
def test_case_and_separators_are_forgiven(
    client: TestClient, protocol: str, field: str, typed: str
) -> None:
    exact = probabilities(client, protocol, INCOME)
    forgiven = probabilities(client, protocol, {**INCOME, field: typed})
    assert exact[0] == forgiven[0] == 200
    if protocol == "native":
        assert (
            forgiven[1]["predictions"][0]["probabilities"]
            == exact[1]["predictions"][0]["probabilities"]
        )
        assert forgiven[1]["predictions"][0]["canonical"] == {field: INCOME[field]}
        assert forgiven[1]["predictions"][0]["unknown_categories"] == []
    else:
        assert json.dumps(forgiven[1]) == json.dumps(exact[1])


@pytest.mark.parametrize("protocol", ["native", "v2", "tfserving"])
def test_a_near_miss_is_refused_with_the_fix(client: TestClient, protocol: str) -> None:
    status, body = probabilities(client, protocol, {**INCOME, "workclass": "Privat"})
    assert status == (422 if protocol == "native" else 400)
    assert "workclass" in body["error"] and "did you mean 'Private'?" in body["error"]
    assert body["error"].count("did you mean") == 1


@pytest.mark.parametrize("protocol", ["native", "v2"])
def test_strict_mode_refuses_unseen_values_per_request(client: TestClient, protocol: str) -> None:
    row = {**INCOME, "native_country": "Atlantis"}
    status, body = probabilities(client, protocol, row)
    assert status == 200  # the trained "other" path, flagged
    if protocol == "native":
        assert body["predictions"][0]["unknown_categories"] == ["native_country"]
    status, body = probabilities(client, protocol, row, strict=True)
    assert status == (422 if protocol == "native" else 400)
    assert "native_country" in body["error"] and "allowed" in body["error"]
    status, body = probabilities(client, protocol, INCOME, strict="yes")
    assert status in (400, 422) and "strict" in body["error"]


@pytest.fixture(scope="module")
def strict_server() -> Iterator[TestClient]:
    settings = Settings(
        models_dir=MODELS_DIR, runtime="onnx", strict_categories=True, watch_interval_s=0
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("protocol", ["native", "v2", "tfserving"])
def test_strict_mode_per_server(strict_server: TestClient, protocol: str) -> None:
    status, body = probabilities(strict_server, protocol, {**INCOME, "native_country": "Atlantis"})
    assert status in (400, 422) and "native_country" in body["error"]
    assert probabilities(strict_server, protocol, {**INCOME, "sex": "female"})[0] == 200


def test_unseen_values_are_counted_per_model_field_and_version(client: TestClient) -> None:
    def count() -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(
                'keras_serve_unseen_categories_total{field="occupation",model="income"'
            ):
                return float(line.split()[-1])
        return 0.0

    before = count()
    for _ in range(3):
        client.post("/models/income/predict", json={**INCOME, "occupation": "Astronaut-pilot"})
    assert count() == before + 3


# -------------------------------------------------------------------- prepare
def drawing(size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """A small "7" in the top-left corner, white on black, as the canvas draws it."""
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.line(
        [(w * 0.05, h * 0.05), (w * 0.3, h * 0.05), (w * 0.12, h * 0.38)],
        fill=255,
        width=max(1, w // 28 * 2),
    )
    return np.asarray(image)


def png_of(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(28, 28), (280, 200)])
def test_pixels_with_prepare_are_the_upload(client: TestClient, size: tuple[int, int]) -> None:
    pixels = drawing(size)
    model = client.app.state.dataplane.model("digits", 2)  # type: ignore[attr-defined]
    from_pixels = model.encode(Rows([{"image": pixels.tolist()}]), prepare=True).matrix
    from app.serving.inference import ImageFile

    from_upload = model.encode(ImageFile(png_of(pixels))).matrix
    np.testing.assert_array_equal(from_pixels, from_upload)  # the same 28x28 input

    files = {"file": ("seven.png", png_of(pixels), "image/png")}
    uploaded = client.post("/models/digits/versions/2/predict/image", files=files).json()
    native = client.post(
        "/models/digits/versions/2/predict",
        json={"instances": [{"image": pixels.tolist()}], "prepare": True},
    ).json()
    query = client.post(
        "/models/digits/versions/2/predict?prepare=true", json={"image": pixels.tolist()}
    ).json()
    v2 = client.post(
        "/v2/models/digits/versions/2/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, *pixels.shape],
                    "datatype": "UINT8",
                    "data": pixels.tolist(),
                }
            ],
            "parameters": {"prepare": True},
        },
    ).json()
    label = uploaded["predictions"][0]["label"]
    assert label == "7"
    native_prediction = {k: v for k, v in native["predictions"][0].items() if k != "prepared"}
    assert native_prediction == uploaded["predictions"][0]
    assert native["predictions"][0] == query["predictions"][0]
    # the answer shows the 28x28 input the pixels became: the upload's
    np.testing.assert_array_equal(
        native["predictions"][0]["prepared"], np.rint(from_upload.reshape(28, 28) * 255)
    )
    v2_probabilities = next(o["data"] for o in v2["outputs"] if o["name"] == "probabilities")
    expected = [uploaded["predictions"][0]["probabilities"][c] for c in model.classes]
    np.testing.assert_allclose(v2_probabilities, expected, atol=1e-6)


def test_mnist_style_input_keeps_working_without_prepare(client: TestClient) -> None:
    example = dict(card("digits", 2).example)
    assert client.post("/models/digits/versions/2/predict", json=example).status_code == 200
    odd = drawing((280, 200)).tolist()
    refused = client.post("/models/digits/versions/2/predict", json={"image": odd})
    assert refused.status_code == 422 and "28x28" in refused.json()["error"]


def test_prepare_applies_to_image_models_only(client: TestClient) -> None:
    answer = client.post("/models/income/predict", json={"instances": [INCOME], "prepare": True})
    assert answer.status_code == 422 and "prepare" in answer.json()["error"]
