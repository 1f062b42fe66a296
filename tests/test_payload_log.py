"""Payload logs: sampled exchanges as JSON lines or KServe-shaped CloudEvents, written
off the request path, redacted where asked, images as a hash, a slow sink dropping
records (counted) rather than slowing requests."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import card

INCOME = dict(card("income", 1).example)
DIGIT = dict(card("digits", 1).example)


def app_with(**settings: Any) -> TestClient:
    return TestClient(
        create_app(Settings(models_dir=MODELS_DIR, runtime="onnx", watch_interval_s=0, **settings))
    )


def test_sampled_exchanges_are_written_as_json_lines(tmp_path: Path) -> None:
    sink = tmp_path / "payloads.jsonl"
    with app_with(
        payload_log_rate=1.0, payload_log_sink=str(sink), payload_log_redact=["age"]
    ) as client:
        assert client.post("/models/income/predict", json=INCOME).status_code == 200
        v2 = {
            "id": "v2-call",
            "inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP32", "data": [5.0]}],
        }
        assert client.post("/v2/models/iris/infer", json=v2).status_code == 400
        assert client.post("/models/digits/versions/1/predict", json=DIGIT).status_code == 200
    records = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [r["protocol"] for r in records] == ["native", "v2", "native"]
    income, refused, digit = records
    assert (income["model"], income["version"], income["status"]) == ("income", 1, "ok")
    assert income["inputs"][0]["workclass"] == INCOME["workclass"]
    expected_age = "sha256:" + hashlib.sha256(json.dumps(INCOME["age"]).encode()).hexdigest()
    assert income["inputs"][0]["age"] == expected_age  # redacted
    assert set(income["outputs"]) == {"probabilities", "label"} and income["latency_ms"] > 0
    assert (refused["id"], refused["status"]) == ("v2-call", "InvalidInput")
    assert "missing" in refused["error"]
    image = digit["inputs"][0]["image"]
    assert image["shape"] == [28, 28] and image["hash"].startswith("sha256:")
    assert "outputs" in digit and len(json.dumps(digit)) < 2000  # no pixels in the log


def test_sampling_rate_zero_writes_nothing(tmp_path: Path) -> None:
    sink = tmp_path / "none.jsonl"
    with app_with(payload_log_rate=0.0, payload_log_sink=str(sink)) as client:
        client.post("/models/income/predict", json=INCOME)
    assert not sink.exists()


class Collector(http.server.BaseHTTPRequestHandler):
    events: list[tuple[dict[str, str], Any]] = []  # noqa: RUF012
    delay = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        time.sleep(self.delay)
        headers = {k.lower(): v for k, v in self.headers.items()}
        Collector.events.append((headers, json.loads(body)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def collector() -> Iterator[str]:
    Collector.events = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events"
    server.shutdown()


def test_cloudevents_in_kserve_shape(collector: str) -> None:
    with app_with(payload_log_rate=1.0, payload_log_sink=collector) as client:
        answer = client.post("/models/income/predict", json=INCOME, headers={"x-request-id": "r-1"})
        assert answer.status_code == 200
    kinds = [h["ce-type"] for h, _ in Collector.events]
    assert kinds == [
        "org.kubeflow.serving.inference.request",
        "org.kubeflow.serving.inference.response",
    ]
    headers, request = Collector.events[0]
    assert headers["ce-specversion"] == "1.0" and headers["ce-inferenceservicename"] == "income"
    assert request["inputs"][0]["age"] == INCOME["age"]
    assert Collector.events[1][1]["outputs"]["label"]


def test_a_slow_sink_drops_records_and_never_slows_requests(collector: str) -> None:
    Collector.delay = 0.5
    try:
        with app_with(
            payload_log_rate=1.0, payload_log_sink=collector, payload_log_buffer=2
        ) as client:
            started = time.perf_counter()
            for _ in range(20):
                assert client.post("/models/income/predict", json=INCOME).status_code == 200
            elapsed = time.perf_counter() - started
            metrics = client.get("/metrics").text
        dropped = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("keras_serve_payload_log_dropped_total")
        )
        assert dropped >= 15
        assert elapsed < 5  # 20 requests would take 20 s if each waited for the sink
    finally:
        Collector.delay = 0.0
