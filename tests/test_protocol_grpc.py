"""Open Inference Protocol v2 over gRPC, proven with the unmodified ``tritonclient.grpc``
client against the running service (``python -m app``, its own gRPC port): health,
metadata, infer for every model version with raw and typed contents, answers equal to
REST's, status codes for errors, limits, metrics and deadlines."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from tests.live_server import grpc_address, native_answers
from tests.model_rows import card
from tests.test_protocol_v2 import MODELS, TOLERANCE, instances

pytestmark = pytest.mark.slow  # starts the service in a subprocess

# how a typed-contents request carries each datatype the models advertise
CONTENTS = {"BYTES": "bytes_contents", "INT64": "int64_contents", "FP32": "fp32_contents"}
CONTENTS["UINT8"] = "uint_contents"


@pytest.fixture(scope="module")
def triton(live_url: str) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(url=grpc_address(live_url))
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(live_url: str) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """The generated stub itself, for what tritonclient never sends (typed contents)."""
    with grpc.insecure_channel(grpc_address(live_url)) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def http(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=30) as client:
        yield client


def column(rows: list[dict[str, Any]], name: str, datatype: str) -> np.ndarray:
    """One input as a numpy array; a missing category travels as "?"."""
    values = ["?" if row[name] is None else row[name] for row in rows]
    return np.array(values, dtype=triton_to_np_dtype(datatype))


def triton_inputs(metadata: Any, rows: list[dict[str, Any]]) -> list[grpcclient.InferInput]:
    inputs = []
    for tensor in metadata.inputs:
        array = column(rows, tensor.name, tensor.datatype)
        item = grpcclient.InferInput(tensor.name, list(array.shape), tensor.datatype)
        item.set_data_from_numpy(array)  # tritonclient.grpc: raw_input_contents
        inputs.append(item)
    return inputs


def labels_of(result: grpcclient.InferResult) -> list[str]:
    return [v.decode() for v in result.as_numpy("label")]


def assert_refused(call: Any, code: grpc.StatusCode, *words: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == str(code)
    message = caught.value.message()
    assert all(w in message for w in words), message
    return message


# ------------------------------------------------------------------ health, metadata
def test_server_health_and_metadata(triton: grpcclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata.name == "keras-serve"
    assert {"binary_tensor_data", "statistics"} <= set(metadata.extensions)
    # no ADMIN_TOKEN: the repository extension is not whole, so it is not listed
    assert "model_repository" not in metadata.extensions


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_model_readiness(triton: grpcclient.InferenceServerClient, name: str, version: int) -> None:
    assert triton.is_model_ready(name, str(version))
    assert triton.is_model_ready(name)
    assert not triton.is_model_ready(name, "99")
    assert not triton.is_model_ready("no-such-model")


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_model_metadata_equals_rest(
    triton: grpcclient.InferenceServerClient, http: httpx.Client, name: str, version: int
) -> None:
    metadata = triton.get_model_metadata(name, str(version), as_json=True)
    rest = http.get(f"/v2/models/{name}/versions/{version}").json()
    assert metadata["name"] == name
    assert metadata["versions"] == rest["versions"]
    assert metadata["platform"] == rest["platform"]
    for kind in ("inputs", "outputs"):
        got = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in metadata[kind]]
        assert got == [(t["name"], t["datatype"], t["shape"]) for t in rest[kind]]
    assert [t["name"] for t in metadata["inputs"]] == [f.name for f in card(name, version).inputs]


# ------------------------------------------------------------------------- infer
@pytest.mark.parametrize(("name", "version"), MODELS)
def test_infer_with_raw_contents_gives_the_rest_answers(
    triton: grpcclient.InferenceServerClient, http: httpx.Client, name: str, version: int
) -> None:
    rows = instances(name, version)
    metadata = triton.get_model_metadata(name, str(version))
    result = triton.infer(
        name,
        triton_inputs(metadata, rows),
        model_version=str(version),
        outputs=[grpcclient.InferRequestedOutput(n) for n in ("probabilities", "label")],
        request_id=f"req-{name}-{version}",
    )
    labels, probabilities = native_answers(http, name, version, rows)
    response = result.get_response()
    assert response.id == f"req-{name}-{version}"
    assert (response.model_name, response.model_version) == (name, str(version))
    assert len(response.raw_output_contents) == 2  # what tritonclient.grpc reads
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (len(rows), len(card(name, version).classes))
    np.testing.assert_allclose(got, probabilities, rtol=0, atol=TOLERANCE)
    assert labels_of(result) == labels
    # and the OIP REST endpoint gives the same
    rest = http.post(
        f"/v2/models/{name}/versions/{version}/infer",
        json={
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(column(rows, t.name, t.datatype).shape),
                    "data": column(rows, t.name, t.datatype).tolist(),
                }
                for t in metadata.inputs
            ]
        },
    ).json()
    outputs = {o["name"]: o["data"] for o in rest["outputs"]}
    np.testing.assert_allclose(got.ravel(), outputs["probabilities"], rtol=0, atol=TOLERANCE)
    assert labels_of(result) == outputs["label"]


@pytest.mark.parametrize(("name", "version"), MODELS)
def test_infer_with_typed_contents_gives_the_rest_answers(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    http: httpx.Client,
    name: str,
    version: int,
) -> None:
    """Typed ``contents`` in, and typed contents out when no output asks for binary."""
    rows = instances(name, version)
    metadata = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name))
    request = service_pb2.ModelInferRequest(model_name=name, model_version=str(version))
    for tensor in metadata.inputs:
        array = column(rows, tensor.name, tensor.datatype)
        item = request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=array.shape)
        values = array.ravel().tolist()
        if tensor.datatype == "BYTES":
            values = [v.encode() for v in values]
        getattr(item.contents, CONTENTS[tensor.datatype]).extend(values)
    for output in ("probabilities", "label"):
        request.outputs.add(name=output).parameters["binary_data"].bool_param = False
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents
    outputs = {o.name: o for o in response.outputs}
    labels, probabilities = native_answers(http, name, version, rows)
    got = np.array(outputs["probabilities"].contents.fp32_contents, dtype=np.float32)
    assert list(outputs["probabilities"].shape) == [len(rows), probabilities.shape[1]]
    np.testing.assert_allclose(got.reshape(probabilities.shape), probabilities, atol=TOLERANCE)
    assert [v.decode() for v in outputs["label"].contents.bytes_contents] == labels
    assert outputs["probabilities"].parameters["classes"].string_param.startswith("[")


def test_default_request_uses_raw_outputs_and_latest_version(
    triton: grpcclient.InferenceServerClient, http: httpx.Client
) -> None:
    rows = instances("iris", 2)
    result = triton.infer("iris", triton_inputs(triton.get_model_metadata("iris"), rows))
    labels, probabilities = native_answers(http, "iris", 2, rows)
    assert result.get_response().model_version == "2"
    assert result.get_response().id == ""  # no id asked, none echoed
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=TOLERANCE)
    assert labels_of(result) == labels


def test_outputs_list_and_parameters(triton: grpcclient.InferenceServerClient) -> None:
    rows = instances("salary", 1)
    inputs = triton_inputs(triton.get_model_metadata("salary"), rows)
    result = triton.infer(
        "salary",
        inputs,
        outputs=[grpcclient.InferRequestedOutput("label")],
        parameters={"note": "from a test", "retries": 2},  # unknown parameters pass, as in REST
    )
    assert [o.name for o in result.get_response().outputs] == ["label"]
    assert result.as_numpy("probabilities") is None
    assert len(result.as_numpy("label")) == len(rows)


def test_digits_accept_flat_float_pixels(
    triton: grpcclient.InferenceServerClient, http: httpx.Client
) -> None:
    rows = instances("digits", 1)
    pixels = np.array([r["image"] for r in rows], dtype=np.float32).reshape(len(rows), 784)
    item = grpcclient.InferInput("image", list(pixels.shape), "FP32")
    item.set_data_from_numpy(pixels)
    result = triton.infer("digits", [item], model_version="1")
    labels, probabilities = native_answers(http, "digits", 1, rows)
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=TOLERANCE)
    assert labels_of(result) == labels


# ------------------------------------------------------------------------ errors
def income_inputs(triton: grpcclient.InferenceServerClient) -> list[grpcclient.InferInput]:
    return triton_inputs(triton.get_model_metadata("income"), instances("income", 1))


def test_bad_inputs_are_invalid_argument_naming_the_field(
    triton: grpcclient.InferenceServerClient,
) -> None:
    code = grpc.StatusCode.INVALID_ARGUMENT
    inputs = income_inputs(triton)
    wrong = grpcclient.InferInput("workclass", [12], "FP32")
    wrong.set_data_from_numpy(np.zeros(12, np.float32))
    swapped = [wrong if i.name() == "workclass" else i for i in inputs]
    assert_refused(lambda: triton.infer("income", swapped), code, "workclass", "datatype FP32")
    missing = [i for i in inputs if i.name() != "age"]
    assert_refused(lambda: triton.infer("income", missing), code, "'age'", "missing")
    image = grpcclient.InferInput("image", [1, 28, 27], "UINT8")
    image.set_data_from_numpy(np.zeros((1, 28, 27), np.uint8))
    assert_refused(lambda: triton.infer("digits", [image]), code, "'image'", "shape [1, 28, 27]")
    label = [grpcclient.InferRequestedOutput("labels")]
    assert_refused(
        lambda: triton.infer("income", inputs, outputs=label), code, "outputs", "'labels'"
    )
    assert_refused(
        lambda: triton.infer("income", inputs, model_version="V1"), code, "model_version"
    )


def test_instances_limit_applies(triton: grpcclient.InferenceServerClient) -> None:
    pixels = np.zeros((1001, 784), np.uint8)
    item = grpcclient.InferInput("image", list(pixels.shape), "UINT8")
    item.set_data_from_numpy(pixels)
    assert_refused(
        lambda: triton.infer("digits", [item]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 1000 instances",
    )


def test_typed_contents_errors_name_the_tensor(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    def refused(request: service_pb2.ModelInferRequest) -> str:
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        return str(caught.value.details())

    request = service_pb2.ModelInferRequest(model_name="digits")
    item = request.inputs.add(name="image", datatype="UINT8", shape=[1, 784])
    item.contents.uint_contents.extend([300] * 784)
    assert "'image'" in refused(request) and "0 to 255" in refused(request)
    del item.contents.uint_contents[:]
    item.contents.fp32_contents.extend([0.0] * 784)
    assert "contents.uint_contents" in refused(request)
    del item.contents.fp32_contents[:]
    item.contents.uint_contents.extend([0] * 700)
    assert "784 values" in refused(request)
    request.raw_input_contents.append(bytes(784))
    assert "both contents and raw_input_contents" in refused(request)
    request.inputs.add(name="other", datatype="UINT8", shape=[1])
    assert "raw_input_contents" in refused(request)


def test_unknown_model_or_version_is_not_found(triton: grpcclient.InferenceServerClient) -> None:
    code = grpc.StatusCode.NOT_FOUND
    inputs = income_inputs(triton)
    assert_refused(lambda: triton.infer("no-such-model", inputs), code, "no-such-model")
    assert_refused(lambda: triton.infer("income", inputs, model_version="7"), code, "version 7")
    assert_refused(lambda: triton.get_model_metadata("iris", "99"), code, "version 99")


def test_message_over_the_body_limit_is_resource_exhausted(
    triton: grpcclient.InferenceServerClient,
) -> None:
    """MAX_BODY_BYTES (8 MiB by default) bounds gRPC messages too."""
    pixels = np.zeros((11_000, 784), np.uint8)  # 8.6 MB
    item = grpcclient.InferInput("image", list(pixels.shape), "UINT8")
    item.set_data_from_numpy(pixels)
    assert_refused(lambda: triton.infer("digits", [item]), grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_expired_deadline_is_deadline_exceeded(triton: grpcclient.InferenceServerClient) -> None:
    inputs = income_inputs(triton)
    assert_refused(
        lambda: triton.infer("income", inputs, client_timeout=1e-6),
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def test_grpc_requests_are_counted_with_protocol_grpc(
    triton: grpcclient.InferenceServerClient, http: httpx.Client
) -> None:
    def count(status: str) -> float:
        text = http.get("/metrics").text
        pattern = (
            r'keras_serve_requests_total\{model="iris",protocol="grpc",'
            rf'status="{status}",version="1"\}} ([0-9.e+]+)'
        )
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0

    rows = instances("iris", 1)
    inputs = triton_inputs(triton.get_model_metadata("iris", "1"), rows)
    before_ok, before_bad = count("OK"), count("INVALID_ARGUMENT")
    for _ in range(3):
        triton.infer("iris", inputs, model_version="1")
    with pytest.raises(InferenceServerException):
        triton.infer("iris", inputs[:2], model_version="1")
    assert count("OK") == before_ok + 3
    assert count("INVALID_ARGUMENT") == before_bad + 1
    latency = 'keras_serve_request_duration_seconds_count{model="iris",protocol="grpc",version="1"}'
    assert latency in http.get("/metrics").text


# --------------------------------------------------------------- in-process checks
def test_no_inference_starts_after_the_deadline() -> None:
    """The servicer refuses before inference when the call's deadline has passed, so the
    version's statistics show no inference at all."""
    from app.grpc.servicer import InferenceServicer, Served
    from app.observability.metrics import Metrics
    from app.serving.dataplane import DataPlane
    from app.serving.repository import ModelRepository
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    class Expired:
        def time_remaining(self) -> float:
            return -0.5

        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise RuntimeError(code, details)

    settings = Settings(models_dir=MODELS_DIR, runtime="onnx")
    repository = ModelRepository(MODELS_DIR, "onnx")
    repository.load_version("iris", 1, MODELS_DIR / "iris" / "1")
    repository.startup_complete = True
    plane = DataPlane(repository, settings)
    servicer = InferenceServicer(Served(plane, lambda: False, []), settings, Metrics())
    request = service_pb2.ModelInferRequest(model_name="iris", model_version="1")
    for name in ("sepal_length", "sepal_width", "petal_length", "petal_width"):
        request.inputs.add(name=name, datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    try:
        with pytest.raises(RuntimeError) as caught:
            asyncio.run(servicer.ModelInfer(request, Expired()))  # type: ignore[arg-type]
        assert caught.value.args[0] is grpc.StatusCode.DEADLINE_EXCEEDED
        stats = plane.statistics.of("iris", 1)
        assert (stats.inference_count, stats.execution_count, stats.fail.count) == (0, 0, 0)
    finally:
        plane.close()


@pytest.mark.parametrize("server", ["asyncio", "grpcio"])
def test_draining_server_is_unavailable_and_stops_with_the_app(server: str) -> None:
    """In the app's own lifespan, with either GRPC_SERVER: ready while serving; once
    draining, not ready and UNAVAILABLE for inference; closed when the app stops.
    GRPC_ENABLED=false: no port."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    settings = Settings(models_dir=MODELS_DIR, runtime="onnx", grpc_port=0, grpc_server=server)
    app = create_app(settings)
    with TestClient(app):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        assert client.is_server_ready()
        rows = instances("iris", 2)
        inputs = triton_inputs(client.get_model_metadata("iris"), rows)
        assert len(client.infer("iris", inputs).as_numpy("label")) == len(rows)
        app.state.draining = True
        assert not client.is_server_ready()
        assert_refused(lambda: client.infer("iris", inputs), grpc.StatusCode.UNAVAILABLE, "shut")
    with pytest.raises(InferenceServerException) as caught:
        client.is_server_live()
    assert caught.value.status() == str(grpc.StatusCode.UNAVAILABLE)
    client.close()

    off = create_app(
        Settings(models_dir=MODELS_DIR, runtime="onnx", grpc_port=0, grpc_enabled=False)
    )
    with TestClient(off):
        assert not hasattr(off.state, "grpc_port")


def test_every_acceptor_answers_and_a_taken_port_is_refused() -> None:
    """GRPC_SERVER=grpcio: GRPC_ACCEPTORS servers share the port: calls on many separate
    connections (which the kernel spreads over the servers) all answer, so every server
    runs; with one worker, a port another socket listens on is an error at startup, not a
    silent share."""
    import socket

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    settings = Settings(
        models_dir=MODELS_DIR, runtime="onnx", grpc_port=0, grpc_server="grpcio", grpc_acceptors=4
    )
    app = create_app(settings)
    with TestClient(app):
        port = app.state.grpc_port
        # 24 connections: a server that did not start would miss all of them with
        # probability (3/4)**24, about 0.1%
        for _ in range(24):
            options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                live = stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
                assert live.live

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        clash = create_app(Settings(models_dir=MODELS_DIR, runtime="onnx", grpc_port=port))
        refused = pytest.raises(RuntimeError, match=f"gRPC cannot listen on 127.0.0.1:{port}")
        with refused, TestClient(clash):
            pass


def test_api_keys_apply_over_grpc() -> None:
    """With API_KEYS set, inference needs a key in metadata (x-api-key or authorization:
    Bearer), as over HTTP; the health RPCs stay open."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    settings = Settings(models_dir=MODELS_DIR, runtime="onnx", grpc_port=0, api_keys=["k-123"])
    app = create_app(settings)
    with TestClient(app):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{app.state.grpc_port}")
        assert client.is_server_live() and client.is_server_ready()
        code = grpc.StatusCode.UNAUTHENTICATED
        assert_refused(lambda: client.get_model_metadata("iris"), code, "API key is required")
        metadata = client.get_model_metadata("iris", headers={"x-api-key": "k-123"})
        rows = instances("iris", 2)
        inputs = triton_inputs(metadata, rows)
        assert_refused(
            lambda: client.infer("iris", inputs, headers={"x-api-key": "wrong"}), code, "not valid"
        )
        bearer = {"authorization": "Bearer k-123"}
        assert len(client.infer("iris", inputs, headers=bearer).as_numpy("label")) == len(rows)
        client.close()


def test_oip_timeout_parameter_is_checked(
    triton: grpcclient.InferenceServerClient, stub: service_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    """tritonclient's ``timeout`` (microseconds) is taken as a deadline, and checked
    (tritonclient itself refuses to send anything but an integer, so the stub does)."""
    rows = instances("iris", 2)
    inputs = triton_inputs(triton.get_model_metadata("iris"), rows)
    assert len(triton.infer("iris", inputs, timeout=5_000_000).as_numpy("label")) == len(rows)
    request = service_pb2.ModelInferRequest(model_name="iris")
    for name in ("sepal_length", "sepal_width", "petal_length", "petal_width"):
        request.inputs.add(name=name, datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    request.parameters["timeout"].string_param = "soon"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters.timeout" in str(caught.value.details())


def test_grpc_explanations_come_back_in_the_response_parameters(
    triton: grpcclient.InferenceServerClient,
) -> None:
    import json

    rows = instances("income", 1)[:2]
    inputs = triton_inputs(triton.get_model_metadata("income", "1"), rows)
    result = triton.infer("income", inputs, model_version="1", parameters={"explain": True})
    explained = json.loads(result.get_response().parameters["explanations"].string_param)
    probabilities = result.as_numpy("probabilities")
    assert len(explained) == 2
    for explanation, p in zip(explained, probabilities, strict=True):
        assert explanation["method"] == "shapley" and explanation["attributions"]["fnlwgt"] == 0
        assert explanation["value"] == pytest.approx(float(p.max()), abs=1e-6)
        total = sum(explanation["attributions"].values())
        assert total == pytest.approx(explanation["value"] - explanation["base"], abs=1e-5)
    plain = triton.infer("income", inputs, model_version="1")
    assert "explanations" not in plain.get_response().parameters


# ------------------------------------------------------------------ categories
def test_categories_forgive_case_suggest_fixes_and_obey_strict(
    triton: grpcclient.InferenceServerClient,
) -> None:
    """The data plane's category rules reach gRPC unchanged: a normalised match answers
    as the canonical value, a near miss is INVALID_ARGUMENT with the fix, and the strict
    parameter refuses a value training never saw."""
    metadata = triton.get_model_metadata("income", "1")
    row = dict(card("income", 1).example)
    exact = triton.infer("income", triton_inputs(metadata, [row]), model_version="1")
    lower = triton.infer(
        "income", triton_inputs(metadata, [{**row, "sex": "male"}]), model_version="1"
    )
    np.testing.assert_array_equal(exact.as_numpy("probabilities"), lower.as_numpy("probabilities"))
    near = triton_inputs(metadata, [{**row, "workclass": "Privat"}])
    assert_refused(
        lambda: triton.infer("income", near, model_version="1"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "workclass",
        "did you mean 'Private'?",
    )
    unseen = triton_inputs(metadata, [{**row, "native_country": "Atlantis"}])
    assert labels_of(triton.infer("income", unseen, model_version="1"))
    assert_refused(
        lambda: triton.infer("income", unseen, model_version="1", parameters={"strict": True}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "native_country",
        "allowed",
    )


# ------------------------------------------------------------- the two servers
def test_both_grpc_servers_give_the_same_answers_and_statuses() -> None:
    """GRPC_SERVER=asyncio (keras-serve's own HTTP/2) and GRPC_SERVER=grpcio (grpc.aio)
    carry one servicer: the same calls give equal messages and equal status codes,
    through gRPC core's client."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings
    from tests.conftest import MODELS_DIR

    rows = instances("income", 1)[:3]
    pixels = np.array([r["image"] for r in instances("digits", 2)], dtype=np.uint8)

    def calls(port: int) -> list[Any]:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        income = triton_inputs(client.get_model_metadata("income", "1"), rows)
        image = grpcclient.InferInput("image", list(pixels.shape), "UINT8")
        image.set_data_from_numpy(pixels)
        big = grpcclient.InferInput("image", [2000, 784], "UINT8")
        big.set_data_from_numpy(np.zeros((2000, 784), np.uint8))
        attempts: list[Callable[[], Any]] = [
            lambda: client.get_server_metadata(),
            lambda: client.get_model_metadata("digits", "2"),
            lambda: client.is_model_ready("iris", "9"),
            lambda: client.infer("income", income, model_version="1", request_id="r-1"),
            lambda: client.infer("digits", [image], model_version="2"),
            lambda: client.infer("digits", [image], compression_algorithm="gzip"),
            lambda: client.infer("nope", income),
            lambda: client.infer("income", income[1:], model_version="1"),
            lambda: client.infer("digits", [big]),  # over the limit of 1 MiB set below
            lambda: client.get_model_repository_index(),
        ]
        answers = []
        for attempt in attempts:
            try:
                answer = attempt()
                answers.append(getattr(answer, "get_response", lambda a=answer: a)())
            except InferenceServerException as exc:
                answers.append((exc.status(), exc.message()))
        client.close()
        return answers

    got = {}
    for server in ("asyncio", "grpcio"):
        settings = Settings(
            models_dir=MODELS_DIR,
            runtime="onnx",
            grpc_port=0,
            grpc_server=server,
            max_body_bytes=1 << 20,
        )
        app = create_app(settings)
        with TestClient(app):
            got[server] = calls(app.state.grpc_port)
    statuses = [a[0] if isinstance(a, tuple) else "OK" for a in got["asyncio"]]
    assert statuses == ["OK"] * 6 + [
        "StatusCode.NOT_FOUND",
        "StatusCode.INVALID_ARGUMENT",
        "StatusCode.RESOURCE_EXHAUSTED",
        "OK",
    ]
    for ours, theirs in zip(got["asyncio"], got["grpcio"], strict=True):
        if isinstance(ours, tuple):  # the limit's wording is each server's own
            assert ours[0] == theirs[0]
            if ours[0] != "StatusCode.RESOURCE_EXHAUSTED":
                assert ours[1] == theirs[1]
        else:
            assert ours == theirs
