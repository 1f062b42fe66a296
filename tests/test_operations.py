"""Operating the service: request ids, metrics, admin endpoints, hot model updates,
broken artifacts, CORS, timeouts and graceful shutdown."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.artifacts import CARD_FILE, KERAS_FILE, ONNX_FILE, PIPELINE_FILE
from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.live_server import service_process

IRIS_ROW = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def copy_version(models: Path, name: str, version: int, new_version: int | None = None) -> Path:
    """Copy a committed version into ``models``, renumbering it (card included)."""
    number = new_version or version
    target = models / name / str(number)
    shutil.copytree(MODELS_DIR / name / str(version), target)
    card = json.loads((target / CARD_FILE).read_text())
    card["version"] = number
    (target / CARD_FILE).write_text(json.dumps(card))
    return target


@pytest.fixture
def iris_models(tmp_path: Path) -> Path:
    copy_version(tmp_path, "iris", 1)
    copy_version(tmp_path, "iris", 2)
    return tmp_path


def started(models: Path, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(models_dir=models, runtime="onnx", **settings)))


@pytest.fixture
def admin_client(iris_models: Path) -> Iterator[TestClient]:
    with started(iris_models, admin_token=TOKEN, watch_interval_s=0) as client:
        yield client


# ------------------------------------------------------------- request ids, logs
def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    echoed = client.post("/models/iris/predict", json=IRIS_ROW, headers={"X-Request-ID": "abc-1"})
    assert echoed.headers["x-request-id"] == "abc-1"
    generated = client.get("/health/live").headers["x-request-id"]
    assert len(generated) == 32
    assert generated != client.get("/health/live").headers["x-request-id"]
    unsafe = client.get("/health/live", headers={"X-Request-ID": "a b\tc"})
    assert unsafe.headers["x-request-id"] != "a b\tc"  # not echoed into logs verbatim


@pytest.mark.slow
def test_json_logs_carry_the_request_id() -> None:
    """``python -m app`` with LOG_JSON=true: every line is JSON; access lines say who asked."""
    env = {"LOG_JSON": "true", "LOG_LEVEL": "info", "WATCH_INTERVAL_S": "0"}
    with service_process(MODELS_DIR, env) as service:
        httpx.post(
            f"{service.url}/models/iris/predict", json=IRIS_ROW, headers={"X-Request-ID": "log-me"}
        )
        service.process.terminate()
        service.process.wait(timeout=30)
        lines = [json.loads(line) for line in service.output().splitlines() if line.strip()]
    access = [e for e in lines if e["logger"] == "app.access" and e["request_id"] == "log-me"]
    assert len(access) == 1
    assert access[0]["status"] == 200
    assert access[0]["model"] == "iris"
    assert access[0]["path"] == "/models/iris/predict"
    assert any("loaded" in e["message"] and e["logger"] == "app.serving.repository" for e in lines)


# ----------------------------------------------------------------------- metrics
def test_metrics_describe_requests_batches_and_models(client: TestClient) -> None:
    client.post("/models/iris/versions/1/predict", json=IRIS_ROW)
    client.post("/models/iris/versions/1/predict", json={"instances": [IRIS_ROW] * 3})
    client.post("/models/iris/predict", json={"sepal_length": "x"})
    text = client.get("/metrics").text
    assert (
        'keras_serve_requests_total{model="iris",protocol="native",status="200",version="1"}'
        in text
    )
    assert 'protocol="native",status="422"' in text
    for name in (
        "keras_serve_request_duration_seconds_bucket",
        'keras_serve_inference_duration_seconds_count{model="iris",version="1"}',
        'keras_serve_batch_size_bucket{le="4.0",model="iris",version="1"}',
        "keras_serve_queue_depth",
        "keras_serve_requests_in_flight",
        'keras_serve_model_loaded{model="digits",version="2"} 1.0',
        'keras_serve_model_load_seconds{model="income",version="1"}',
    ):
        assert name in text, name


# ------------------------------------------------------------------------- admin
def test_admin_endpoints_are_absent_without_a_token(client: TestClient) -> None:
    assert client.delete("/admin/models/iris/versions/1").status_code == 404
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/admin")]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_admin_refuses_missing_or_wrong_tokens(
    admin_client: TestClient, headers: dict[str, str]
) -> None:
    response = admin_client.delete("/admin/models/iris/versions/2", headers=headers)
    assert response.status_code == 401
    assert "bearer token" in response.json()["error"]
    assert admin_client.post("/models/iris/predict", json=IRIS_ROW).json()["version"] == 2


def test_admin_unloads_and_loads_versions(admin_client: TestClient) -> None:
    gone = admin_client.delete("/admin/models/iris/versions/2", headers=AUTH)
    assert gone.json()["status"] == "UNLOADED"
    assert admin_client.post("/models/iris/predict", json=IRIS_ROW).json()["version"] == 1
    pinned = admin_client.post("/models/iris/versions/2/predict", json=IRIS_ROW)
    assert pinned.status_code == 404
    back = admin_client.post("/admin/models/iris/versions/2/load", headers=AUTH)
    assert back.json()["status"] == "AVAILABLE"
    assert admin_client.post("/models/iris/predict", json=IRIS_ROW).json()["version"] == 2
    missing = admin_client.post("/admin/models/iris/versions/9/load", headers=AUTH)
    assert missing.status_code == 404


# ------------------------------------------------------------- broken artifacts
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


BREAKAGES = {
    "bad onnx": (lambda d: truncate(d / ONNX_FILE), ONNX_FILE),
    "missing pipeline": (lambda d: (d / PIPELINE_FILE).unlink(), "pipeline.json is missing"),
    "card mismatch": (
        lambda d: (d / CARD_FILE).write_text(
            (d / CARD_FILE).read_text().replace('"sepal_width"', '"sepal_breadth"')
        ),
        "do not match",
    ),
    "card of another version": (
        lambda d: (d / CARD_FILE).write_text(
            json.dumps({**json.loads((d / CARD_FILE).read_text()), "version": 7})
        ),
        "model card says iris v7",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_version_at_startup_is_reported_and_others_serve(
    iris_models: Path, breakage: str
) -> None:
    damage, reason = BREAKAGES[breakage]
    damage(iris_models / "iris" / "2")
    with started(iris_models, watch_interval_s=0) as client:
        ready = client.get("/health/ready").json()
        broken = next(m for m in ready["models"] if m["version"] == 2)
        assert broken["status"] == "FAILED"
        assert reason in broken["reason"]
        versions = {v["version"]: v for v in client.get("/models/iris").json()["versions"]}
        assert reason in versions[2]["reason"]
        answer = client.post("/models/iris/predict", json=IRIS_ROW)
        assert answer.status_code == 200
        assert answer.json()["version"] == 1


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_new_version_at_reload_is_rejected_and_old_keeps_serving(
    admin_client: TestClient, iris_models: Path, breakage: str, caplog: pytest.LogCaptureFixture
) -> None:
    damage, reason = BREAKAGES[breakage]
    damage(copy_version(iris_models, "iris", 2, 3))
    answer = admin_client.post("/admin/models/iris/versions/3/load", headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["status"] == "FAILED"
    assert reason in answer.json()["reason"]
    assert any("iris v3 failed to load" in r.getMessage() for r in caplog.records)
    assert admin_client.post("/models/iris/predict", json=IRIS_ROW).json()["version"] == 2


def test_truncated_keras_file_is_caught_by_the_keras_runtime(iris_models: Path) -> None:
    truncate(iris_models / "iris" / "2" / KERAS_FILE)
    settings = Settings(models_dir=iris_models, runtime="keras", watch_interval_s=0)
    with TestClient(create_app(settings)) as client:
        states = {m["version"]: m for m in client.get("/health/ready").json()["models"]}
        assert states[2]["status"] == "FAILED"
        assert KERAS_FILE in states[2]["reason"]
        assert states[1]["status"] == "AVAILABLE"


# ---------------------------------------------------------- watcher, hot reload
def test_watcher_serves_a_version_dropped_into_the_directory(iris_models: Path) -> None:
    with started(iris_models, watch_interval_s=0.1) as client:
        staging = copy_version(iris_models / ".staging", "iris", 2, 3)
        staging.rename(iris_models / "iris" / "3")  # as training does: complete, then renamed
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if client.post("/models/iris/predict", json=IRIS_ROW).json()["version"] == 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the watcher did not pick up version 3")


@pytest.mark.slow
def test_hot_reload_under_load_loses_no_request(iris_models: Path) -> None:
    """Clients keep predicting while versions are added, offered broken, and unloaded."""
    env = {"ADMIN_TOKEN": TOKEN, "WATCH_INTERVAL_S": "0.2"}
    failures: list[str] = []
    versions_seen: set[int] = set()
    stop = threading.Event()

    def client_loop(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set():
                try:
                    response = http.post("/models/iris/predict", json=IRIS_ROW)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    versions_seen.add(response.json()["version"])

    with service_process(iris_models, env) as service:
        threads = [threading.Thread(target=client_loop, args=(service.url,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        with httpx.Client(base_url=service.url, headers=AUTH, timeout=30) as admin:
            time.sleep(0.5)
            staging = copy_version(iris_models / ".staging", "iris", 2, 3)
            staging.rename(iris_models / "iris" / "3")  # picked up by the watcher
            deadline = time.monotonic() + 15
            while 3 not in versions_seen and time.monotonic() < deadline:
                time.sleep(0.1)
            broken = copy_version(iris_models, "iris", 2, 4)
            truncate(broken / ONNX_FILE)
            assert admin.post("/admin/models/iris/versions/4/load").status_code == 422
            time.sleep(0.5)
            assert admin.delete("/admin/models/iris/versions/3").status_code == 200
            time.sleep(0.5)
            seen_before_unload = set(versions_seen)
            versions_seen.clear()
            time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert seen_before_unload >= {2, 3}
    assert versions_seen == {2}  # after the unload, the highest serving version answers


@pytest.mark.slow
def test_sigterm_during_load_answers_every_accepted_request() -> None:
    """Every request that reached the app is answered; the rest were never taken in.

    Connections still in the kernel's accept queue when the listener closes are reset
    without the app seeing them: the client may retry those safely. The access log
    tells which requests the app took in.
    """
    answered: list[int] = []
    never_taken: list[str] = []
    lock = threading.Lock()

    def one_request(url: str) -> None:
        try:
            with httpx.Client(timeout=30) as http:
                response = http.post(
                    f"{url}/models/digits/predict",
                    json={"instances": [{"image": [[0] * 28] * 28}] * 200},
                )
            with lock:
                answered.append(response.status_code)
        except httpx.TransportError as exc:  # refused, reset, or closed before an answer
            with lock:
                never_taken.append(repr(exc))

    # 48 bodies of 300 KB at once: over the default body budget (MAX_IN_FLIGHT_BYTES),
    # which would answer some 503 at once; this test is about draining, so it lifts it
    env = {"BATCHING": "false", "LOG_LEVEL": "info", "MAX_IN_FLIGHT_BYTES": str(64 << 20)}
    with service_process(MODELS_DIR, env) as service:
        threads = [threading.Thread(target=one_request, args=(service.url,)) for _ in range(48)]
        for thread in threads[:24]:
            thread.start()
        deadline = time.monotonic() + 30
        while not answered and time.monotonic() < deadline:  # the load is really running
            time.sleep(0.01)
        for thread in threads[24:]:
            thread.start()
        service.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        code = service.process.wait(timeout=60)
        log = service.output()
        assert code == 0, log[-2000:]
    taken_in = [line for line in log.splitlines() if "POST /models/digits/predict" in line]
    assert answered, "no request was answered before SIGTERM"
    assert set(answered) == {200}
    # nothing the app took in went unanswered: the failures are all requests it never saw
    assert len(taken_in) == len(answered)
    assert all(" 200 " in line for line in taken_in)
    assert len(answered) + len(never_taken) == 48


# --------------------------------------------------------------- limits, CORS
def test_cors_is_off_by_default_and_configurable(iris_models: Path) -> None:
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    with started(iris_models, watch_interval_s=0) as client:
        answer = client.options("/models/iris/predict", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    with started(iris_models, watch_interval_s=0, cors_origins=["https://example.org"]) as client:
        answer = client.options("/models/iris/predict", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://example.org"


def test_slow_requests_time_out_with_504(iris_models: Path) -> None:
    settings = Settings(
        models_dir=iris_models, runtime="keras", request_timeout_s=0.02, watch_interval_s=0
    )
    with TestClient(create_app(settings)) as client:
        # model.predict takes tens of milliseconds per call: past the 20 ms limit
        answer = client.post("/models/iris/predict", json={"instances": [IRIS_ROW] * 500})
        assert answer.status_code == 504
        assert "not finished within" in answer.json()["error"]
        assert client.get("/health/live").status_code == 200
