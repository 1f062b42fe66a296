"""Trace context: a caller's ``traceparent`` is joined and answered; with an exporter
configured, the request's span and its stages (receive, validate/encode, queue,
inference, respond) are exported under it; without one, nothing is created."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.observability import tracing
from app.observability.tracing import parse_traceparent
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import card

IRIS = dict(card("iris", 2).example)
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_callers_trace_is_joined(client: TestClient) -> None:
    answer = client.post("/models/iris/predict", json=IRIS, headers={"traceparent": CALLER})
    version, trace_id, span_id, flags = answer.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    assert span_id != "00f067aa0ba902b7" and len(span_id) == 16


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(client: TestClient, header: str) -> None:
    assert parse_traceparent(header) is None
    answer = client.post("/models/iris/predict", json=IRIS, headers={"traceparent": header})
    assert answer.status_code == 200
    assert parse_traceparent(answer.headers["traceparent"]) is not None
    assert "4bf92f3577b34da6a3ce929d0e0e4736" not in answer.headers["traceparent"]


@pytest.fixture
def exported() -> Iterator[object]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(id_generator=tracing.preset_id_generator())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    assert tracing.exporter.configure(tracer_provider=provider)
    try:
        yield memory
    finally:
        tracing.exporter.disable()


def test_spans_for_each_stage_under_the_request(exported: object) -> None:
    settings = Settings(models_dir=MODELS_DIR, runtime="onnx", watch_interval_s=0)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/models/iris/predict", json=IRIS, headers={"traceparent": CALLER})
    assert answer.status_code == 200
    spans = {s.name: s for s in exported.get_finished_spans()}  # type: ignore[attr-defined]
    server = spans["POST /models/iris/predict"]
    answered_span = answer.headers["traceparent"].split("-")[2]
    assert f"{server.context.span_id:016x}" == answered_span
    assert f"{server.context.trace_id:032x}" == CALLER.split("-")[1]
    assert f"{server.parent.span_id:016x}" == CALLER.split("-")[2]
    for stage in ("receive", "validate_encode", "queue", "inference", "respond"):
        assert spans[stage].parent.span_id == server.context.span_id, stage
        assert spans[stage].attributes["model"] == "iris"
        assert spans[stage].start_time <= spans[stage].end_time


def test_nothing_is_exported_without_an_exporter(client: TestClient) -> None:
    assert not tracing.exporter.enabled
    assert client.post("/models/iris/predict", json=IRIS).status_code == 200


def test_log_lines_carry_the_trace_id() -> None:
    import json

    import httpx

    from tests.live_server import service_process

    env = {"LOG_LEVEL": "info", "LOG_JSON": "true", "WATCH_INTERVAL_S": "0"}
    with service_process(MODELS_DIR, env) as service:
        httpx.post(f"{service.url}/models/iris/predict", json=IRIS, headers={"traceparent": CALLER})
        service.process.terminate()
        assert service.process.wait(timeout=30) == 0
        entries = [json.loads(line) for line in service.output().splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "app.access" and "iris" in e["path"]]
    assert [e["trace_id"] for e in access] == [CALLER.split("-")[1]]
