"""The OIP model repository and statistics extensions, proven with the unmodified
``tritonclient.http`` and ``tritonclient.grpc`` clients: index, load and unload with the
admin token (and their absence without one), statistics in Triton's shape, and the
batcher's merged calls showing as fewer executions than inferences."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import MODELS_DIR
from tests.live_server import Service, service_process
from tests.test_protocol_v2 import MODELS, instances, triton_inputs

TOKEN = "extension-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALL_VERSIONS = [(name, str(version)) for name, version in MODELS]
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@pytest.fixture(scope="module")
def admin_service() -> Iterator[Service]:
    """A service of its own with ADMIN_TOKEN: load and unload change what it serves."""
    with service_process(MODELS_DIR, env={"ADMIN_TOKEN": TOKEN, "WATCH_INTERVAL_S": "0"}) as s:
        yield s


@pytest.fixture(scope="module")
def triton(admin_service: Service) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=admin_service.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def triton_grpc(admin_service: Service) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(url=admin_service.grpc)
    yield client
    client.close()


def index_of(client: httpclient.InferenceServerClient) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["name"], m["version"]): m for m in client.get_model_repository_index()}


def status_of(call: Any) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value.status())


def infer_iris(client: httpclient.InferenceServerClient, version: str = "2", rows: int = 3) -> None:
    batch = instances("iris", int(version))[:rows]
    inputs = triton_inputs(client.get_model_metadata("iris", version), batch, True)
    client.infer("iris", inputs, model_version=version)


# ------------------------------------------------------------------------ repository
@pytest.mark.slow
def test_index_lists_every_version_ready(triton: httpclient.InferenceServerClient) -> None:
    index = index_of(triton)
    assert sorted(index) == sorted(ALL_VERSIONS)
    assert all(m["state"] == "READY" for m in index.values())
    assert {(m["name"], m["version"]) for m in triton.get_model_repository_index()} == set(index)


@pytest.mark.slow
def test_unload_and_load_with_the_token(triton: httpclient.InferenceServerClient) -> None:
    assert status_of(lambda: triton.unload_model("iris")) == "401"
    assert status_of(lambda: triton.unload_model("iris", headers={"Authorization": "Bearer x"}))
    assert triton.is_model_ready("iris")

    triton.unload_model("iris", headers=AUTH)
    index = index_of(triton)
    assert index[("iris", "1")]["state"] == index[("iris", "2")]["state"] == "UNAVAILABLE"
    assert index[("iris", "2")]["reason"] == "unloaded"
    assert index[("income", "1")]["state"] == "READY"
    assert not triton.is_model_ready("iris")
    assert status_of(lambda: infer_iris(triton)) == "404"

    triton.load_model("iris", headers=AUTH)
    assert all(m["state"] == "READY" for m in index_of(triton).values())
    infer_iris(triton)

    assert status_of(lambda: triton.load_model("no-such-model", headers=AUTH)) == "404"
    assert status_of(lambda: triton.unload_model("no-such-model", headers=AUTH)) == "404"


@pytest.mark.slow
def test_repository_over_grpc_with_token_metadata(
    triton_grpc: grpcclient.InferenceServerClient,
) -> None:
    index = triton_grpc.get_model_repository_index()
    assert sorted((m.name, m.version) for m in index.models) == sorted(ALL_VERSIONS)
    with pytest.raises(InferenceServerException) as caught:
        triton_grpc.unload_model("digits")
    assert caught.value.status() == str(grpc.StatusCode.UNAUTHENTICATED)
    triton_grpc.unload_model("digits", headers={"authorization": f"Bearer {TOKEN}"})
    assert not triton_grpc.is_model_ready("digits", "1")
    models = triton_grpc.get_model_repository_index().models
    states = {m.version: (m.state, m.reason) for m in models if m.name == "digits"}
    assert states == {"1": ("UNAVAILABLE", "unloaded"), "2": ("UNAVAILABLE", "unloaded")}
    triton_grpc.load_model("digits", headers={"authorization": f"Bearer {TOKEN}"})
    assert triton_grpc.is_model_ready("digits", "1") and triton_grpc.is_model_ready("digits", "2")


@pytest.mark.slow
def test_server_metadata_lists_the_served_extensions(
    triton: httpclient.InferenceServerClient, live_url: str
) -> None:
    assert {"statistics", "model_repository"} <= set(triton.get_server_metadata()["extensions"])
    with httpx.Client(base_url=live_url) as http:  # the shared service has no ADMIN_TOKEN
        assert "model_repository" not in http.get("/v2").json()["extensions"]
        assert http.post("/v2/repository/models/iris/load").status_code == 404
        assert http.post("/v2/repository/models/iris/unload").status_code == 404
        assert http.post("/v2/repository/index").status_code == 200  # read-only: served


# ------------------------------------------------------------------------ statistics
def stats_of(client: httpclient.InferenceServerClient, name: str, version: str) -> dict[str, Any]:
    (entry,) = client.get_inference_statistics(name, version)["model_stats"]
    return dict(entry)


@pytest.mark.slow
def test_statistics_count_what_was_served(triton: httpclient.InferenceServerClient) -> None:
    before = stats_of(triton, "iris", "1")
    assert set(before["inference_stats"]) >= set(DURATIONS)
    for _ in range(4):
        infer_iris(triton, "1", rows=3)  # one at a time: no merging
    bad = triton_inputs(triton.get_model_metadata("iris", "1"), instances("iris", 1)[:3], True)
    assert status_of(lambda: triton.infer("iris", bad[:2], model_version="1")) == "400"
    after = stats_of(triton, "iris", "1")
    stats, old = after["inference_stats"], before["inference_stats"]
    assert after["inference_count"] - before["inference_count"] == 12
    assert after["execution_count"] - before["execution_count"] == 4
    assert stats["success"]["count"] - old["success"]["count"] == 4
    assert stats["fail"]["count"] - old["fail"]["count"] == 1
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[key]["count"] - old[key]["count"] == 4
        assert stats[key]["ns"] >= old[key]["ns"]
    assert stats["compute_infer"]["ns"] > old["compute_infer"]["ns"]
    assert stats["success"]["ns"] - old["success"]["ns"] >= (
        stats["compute_infer"]["ns"] - old["compute_infer"]["ns"]
    )
    assert after["last_inference"] > 0
    # every serving version of a model, and of the server; unknown ones are 404
    versions = triton.get_inference_statistics("iris")["model_stats"]
    assert [s["version"] for s in versions] == ["1", "2"]
    everything = triton.get_inference_statistics()["model_stats"]
    assert sorted((s["name"], s["version"]) for s in everything) == sorted(ALL_VERSIONS)
    assert status_of(lambda: triton.get_inference_statistics("iris", "9")) == "404"


@pytest.mark.slow
def test_statistics_over_grpc(
    triton_grpc: grpcclient.InferenceServerClient, triton: httpclient.InferenceServerClient
) -> None:
    infer_iris(triton, "2")
    rest = stats_of(triton, "iris", "2")
    (stats,) = triton_grpc.get_inference_statistics("iris", "2").model_stats
    assert (stats.name, stats.version) == ("iris", "2")
    assert stats.inference_count == rest["inference_count"]
    assert stats.inference_stats.success.count == rest["inference_stats"]["success"]["count"]


def test_merged_requests_show_fewer_executions_than_inferences() -> None:
    """Requests queued together ride in one runtime call: inference_count counts every
    instance, execution_count the calls."""
    from app.serving.dataplane import DataPlane
    from app.serving.inference import Columns, InferenceRequest
    from app.serving.repository import ModelRepository
    from app.settings import Settings

    repository = ModelRepository(MODELS_DIR, "onnx")
    repository.load_version("iris", 1, MODELS_DIR / "iris" / "1")
    plane = DataPlane(repository, Settings(models_dir=MODELS_DIR, runtime="onnx", batching=True))
    names = ("sepal_length", "sepal_width", "petal_length", "petal_width")

    async def burst() -> None:
        requests = [
            InferenceRequest(Columns({n: [5.0 + i / 10] for n in names}, 1)) for i in range(16)
        ]
        answers = await asyncio.gather(*(plane.infer("iris", 1, r) for r in requests))
        assert all(a.outputs["probabilities"].shape == (1, 3) for a in answers)

    try:
        asyncio.run(burst())
        snapshot = plane.statistics.of("iris", 1).snapshot()
        assert snapshot["inference_count"] == 16
        assert snapshot["inference_stats"]["success"]["count"] == 16
        assert 1 <= snapshot["execution_count"] < 16
    finally:
        plane.close()
