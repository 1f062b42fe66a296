"""Open Inference Protocol v2, proven with the unmodified ``tritonclient.http`` client
against the running service: health, metadata, infer for every model version (JSON
and binary tensor data), answers equal to the native API's, and 4xx errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from tests.live_server import native_answers
from tests.model_rows import card, synthetic_rows

pytestmark = pytest.mark.slow  # starts the service in a subprocess

MODELS = [("income", 1), ("salary", 1), ("iris", 1), ("iris", 2), ("digits", 1), ("digits", 2)]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def triton(live_url: str) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=live_url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=30) as client:
        yield client


def instances(name: str, version: int) -> list[dict[str, Any]]:
    """Rows over the card's domain, every nullable field missing in some (null for the
    native API, "?" in v2) and unseen categories; for digits, the card's example digit
    among noise images."""
    model = card(name, version)
    rows = synthetic_rows(model, 12, seed=version)
    if name == "digits":
        rows[0] = {"image": model.example["image"]}
    nullable = [f.name for f in model.inputs if f.nullable]
    for i, field in enumerate(nullable):
        rows[1 + i][field] = None
        rows[1 + len(nullable) + i][field] = "?"
    return rows


def triton_inputs(
    metadata: dict[str, Any], rows: list[dict[str, Any]], binary: bool
) -> list[httpclient.InferInput]:
    """One numpy tensor per input the metadata lists, with its datatype; a missing
    category travels as "?" in a BYTES tensor."""
    inputs = []
    for tensor in metadata["inputs"]:
        name, datatype = tensor["name"], tensor["datatype"]
        values = ["?" if row[name] is None else row[name] for row in rows]
        array = np.array(values, dtype=triton_to_np_dtype(datatype))
        assert len(tensor["shape"]) == array.ndim and tensor["shape"][0] == -1
        item = httpclient.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array, binary_data=binary)
        inputs.append(item)
    return inputs


def labels_of(result: httpclient.InferResult) -> list[str]:
    """BYTES outputs come back as bytes from binary data, as str from JSON."""
    return [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]


def test_server_health_and_metadata(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "keras-serve"
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_model_readiness(triton: httpclient.InferenceServerClient, name: str, version: int) -> None:
    assert triton.is_model_ready(name, str(version))
    assert triton.is_model_ready(name)
    assert not triton.is_model_ready(name, "99")
    assert not triton.is_model_ready("no-such-model")


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_model_metadata_comes_from_the_card(
    triton: httpclient.InferenceServerClient, name: str, version: int
) -> None:
    model = card(name, version)
    metadata = triton.get_model_metadata(name, str(version))
    assert metadata["name"] == name
    assert str(version) in metadata["versions"]
    assert [t["name"] for t in metadata["inputs"]] == [f.name for f in model.inputs]
    expected = {"category": "BYTES", "ordinal": "BYTES", "integer": "INT64", "number": "FP32"}
    for tensor, field in zip(metadata["inputs"], model.inputs, strict=True):
        if field.type == "image":
            assert (tensor["datatype"], tensor["shape"]) == ("UINT8", [-1, 28, 28])
        else:
            assert (tensor["datatype"], tensor["shape"]) == (expected[field.type], [-1])
    probabilities, label = metadata["outputs"]
    assert (probabilities["name"], probabilities["datatype"]) == ("probabilities", "FP32")
    assert probabilities["shape"] == [-1, len(model.classes)]
    assert json.loads(probabilities["parameters"]["classes"]) == model.classes
    assert (label["name"], label["datatype"], label["shape"]) == ("label", "BYTES", [-1])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(("name", "version"), MODELS)
def test_infer_gives_the_native_answers(
    triton: httpclient.InferenceServerClient,
    http: httpx.Client,
    name: str,
    version: int,
    binary: bool,
) -> None:
    rows = instances(name, version)
    metadata = triton.get_model_metadata(name, str(version))
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("label", binary_data=binary),
    ]
    result = triton.infer(
        name,
        triton_inputs(metadata, rows, binary),
        model_version=str(version),
        outputs=outputs,
        request_id=f"req-{name}-{version}",
    )
    labels, probabilities = native_answers(http, name, version, rows)
    response = result.get_response()
    assert response["id"] == f"req-{name}-{version}"
    assert (response["model_name"], response["model_version"]) == (name, str(version))
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (len(rows), len(card(name, version).classes))
    np.testing.assert_allclose(got, probabilities, rtol=0, atol=TOLERANCE)
    assert labels_of(result) == labels


def test_default_request_uses_binary_outputs_and_latest_version(
    triton: httpclient.InferenceServerClient, http: httpx.Client
) -> None:
    """No outputs listed: tritonclient asks for every output as binary data."""
    rows = instances("iris", 2)
    result = triton.infer("iris", triton_inputs(triton.get_model_metadata("iris"), rows, True))
    labels, probabilities = native_answers(http, "iris", 2, rows)
    assert result.get_response()["model_version"] == "2"
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=TOLERANCE)
    assert labels_of(result) == labels


def test_digits_accept_flat_float_pixels(
    triton: httpclient.InferenceServerClient, http: httpx.Client
) -> None:
    rows = instances("digits", 1)
    pixels = np.array([r["image"] for r in rows], dtype=np.float32).reshape(len(rows), 784)
    item = httpclient.InferInput("image", list(pixels.shape), "FP32")
    item.set_data_from_numpy(pixels)
    result = triton.infer("digits", [item], model_version="1")
    labels, probabilities = native_answers(http, "digits", 1, rows)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=TOLERANCE)
    assert labels_of(result) == labels


def test_outputs_list_selects_the_outputs(triton: httpclient.InferenceServerClient) -> None:
    rows = instances("salary", 1)
    inputs = triton_inputs(triton.get_model_metadata("salary"), rows, False)
    only_label = [httpclient.InferRequestedOutput("label", binary_data=False)]
    result = triton.infer("salary", inputs, outputs=only_label)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None
    assert len(result.as_numpy("label")) == len(rows)


def test_json_data_may_be_nested_with_shape_n_by_1(http: httpx.Client) -> None:
    rows = instances("iris", 1)
    names = [f.name for f in card("iris", 1).inputs]
    inputs = [
        {"name": n, "shape": [len(rows), 1], "datatype": "FP64", "data": [[r[n]] for r in rows]}
        for n in names
    ]
    response = http.post("/v2/models/iris/versions/1/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert "id" not in response.json()
    labels, probabilities = native_answers(http, "iris", 1, rows)
    assert outputs["probabilities"]["shape"] == [len(rows), 3]
    got = np.array(outputs["probabilities"]["data"]).reshape(len(rows), 3)
    np.testing.assert_allclose(got, probabilities, atol=TOLERANCE)
    assert outputs["label"]["data"] == labels


# ------------------------------------------------------------------------ errors
def income_inputs(triton: httpclient.InferenceServerClient) -> list[httpclient.InferInput]:
    return triton_inputs(triton.get_model_metadata("income"), instances("income", 1), False)


def replaced(
    inputs: list[httpclient.InferInput], name: str, array: np.ndarray, datatype: str
) -> list[httpclient.InferInput]:
    item = httpclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=False)
    return [item if i.name() == name else i for i in inputs]


def assert_refused(call: Any, status: str, *words: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == status
    message = caught.value.message()
    assert all(w in message for w in words), message


def test_wrong_datatype_is_refused(triton: httpclient.InferenceServerClient) -> None:
    inputs = replaced(income_inputs(triton), "workclass", np.zeros(12, np.float32), "FP32")
    assert_refused(lambda: triton.infer("income", inputs), "400", "workclass", "datatype FP32")


def test_shape_not_matching_the_data_is_refused(triton: httpclient.InferenceServerClient) -> None:
    inputs = income_inputs(triton)
    inputs[0].set_shape([13])
    assert_refused(lambda: triton.infer("income", inputs), "400", "age", "13 values", "has 12")


def test_missing_and_unknown_inputs_are_refused(triton: httpclient.InferenceServerClient) -> None:
    inputs = income_inputs(triton)
    missing = [i for i in inputs if i.name() != "age"]
    assert_refused(lambda: triton.infer("income", missing), "400", "'age'", "missing")
    extra = httpclient.InferInput("colour", [12], "BYTES")
    extra.set_data_from_numpy(np.array(["red"] * 12, dtype=object))
    assert_refused(
        lambda: triton.infer("income", [*inputs, extra]), "400", "'colour'", "unexpected"
    )


def test_nan_where_training_saw_no_missing_value_is_refused(
    triton: httpclient.InferenceServerClient,
) -> None:
    ages = np.full(12, np.nan)
    inputs = replaced(income_inputs(triton), "age", ages, "FP64")
    assert_refused(lambda: triton.infer("income", inputs), "400", "age", "missing")


def test_unknown_model_or_version_is_404(triton: httpclient.InferenceServerClient) -> None:
    inputs = income_inputs(triton)
    assert_refused(lambda: triton.infer("no-such-model", inputs), "404", "no-such-model")
    assert_refused(lambda: triton.infer("income", inputs, model_version="7"), "404", "version 7")
    assert_refused(lambda: triton.get_model_metadata("iris", "99"), "404", "version 99")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/models/iris/infer", {"inputs": "nope"}, 400),
        ("/v2/models/iris/infer", {"inputs": [{"name": "sepal_length", "shape": [1]}]}, 400),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
            400,
        ),
        ("/v2/models/iris/versions/X/infer", {"inputs": []}, 400),
        ("/v2/models/nope/infer", {"inputs": []}, 404),
    ],
)
def test_errors_have_the_protocol_shape(
    http: httpx.Client, path: str, body: dict[str, Any], status: int
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == status
    assert list(response.json()) == ["error"]
    assert isinstance(response.json()["error"], str)


def test_binary_data_larger_than_sent_is_refused(http: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": [1, 784], "datatype": "UINT8"}
                | {"parameters": {"binary_data_size": 784}}
            ]
        }
    ).encode()
    response = http.post(
        "/v2/models/digits/infer",
        content=header + bytes(700),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "binary_data_size" in response.json()["error"]


def test_server_not_ready_before_models_load() -> None:
    """Without the startup lifespan nothing is loaded: live, but not ready (4xx)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    client = TestClient(create_app(Settings(models_dir=MODELS_DIR, runtime="onnx")))
    assert client.get("/v2/health/live").status_code == 200
    response = client.get("/v2/health/ready")
    assert response.status_code == 400
    assert response.json()["ready"] is False
