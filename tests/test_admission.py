"""Overload is answered, not absorbed: bounded queues and in-flight limits refuse at
once with 503 and Retry-After in each protocol's shape, and queued work nobody waits
for (deadline passed, caller cancelled, client gone) never reaches the runtime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from app.main import create_app
from app.serving.batching import Batcher
from app.serving.errors import DeadlineExceeded, Overloaded
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import card

IRIS = dict(card("iris", 2).example)


class Recorder:
    """A fake runtime that takes ``delay`` seconds and records the rows it saw."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.rows: list[float] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.rows.extend(x[:, 0].tolist())
        time.sleep(self.delay)
        return x


def test_a_full_queue_refuses_at_once() -> None:
    fn = Recorder(0.05)

    async def scenario() -> list[Any]:
        batcher = Batcher(fn, ThreadPoolExecutor(1), max_batch=1, max_wait=0, max_queued=3)
        calls = [batcher.submit(np.full((1, 1), float(i))) for i in range(8)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert len(served) == 3 and len(refused) == 5  # at most three rows wait at a time
    assert "full" in str(refused[0])
    assert sorted(fn.rows) == sorted(float(r[0, 0]) for r in served)


def test_expired_and_cancelled_work_is_dropped_before_the_runtime() -> None:
    fn = Recorder(0.1)
    drops: list[str] = []

    async def scenario() -> list[Any]:
        batcher = Batcher(fn, ThreadPoolExecutor(1), max_batch=1, max_wait=0, on_drop=drops.append)
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(batcher.submit(np.full((1, 1), 0.0)))
        await asyncio.sleep(0.01)
        expired = asyncio.ensure_future(batcher.submit(np.full((1, 1), 1.0), loop.time() + 0.02))
        cancelled = asyncio.ensure_future(batcher.submit(np.full((1, 1), 2.0)))

        async def gone() -> bool:
            return True

        left = asyncio.ensure_future(batcher.submit(np.full((1, 1), 3.0), None, gone))
        kept = asyncio.ensure_future(batcher.submit(np.full((1, 1), 4.0), loop.time() + 10))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        return await asyncio.gather(first, expired, cancelled, left, kept, return_exceptions=True)

    results = asyncio.run(scenario())
    assert isinstance(results[1], DeadlineExceeded)
    assert isinstance(results[2], asyncio.CancelledError)
    assert isinstance(results[3], asyncio.CancelledError)
    assert fn.rows == [0.0, 4.0]  # only the requests still wanted reached the runtime
    assert sorted(drops) == ["cancelled", "deadline", "disconnected"]


@pytest.fixture
async def slow_app() -> AsyncIterator[httpx.AsyncClient]:
    """The real app with small limits and a slowed iris v2, driven in-process."""
    async with slowed(max_in_flight=4, max_queued_rows=2) as client:
        yield client


@contextlib.asynccontextmanager
async def slowed(**limits: int) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(models_dir=MODELS_DIR, runtime="onnx", watch_interval_s=0, **limits)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        model = app.state.dataplane.model("iris", 2)
        predict = model.predict

        def slow(x: np.ndarray) -> np.ndarray:
            time.sleep(0.2)
            return predict(x)

        model.predict = slow
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


V2 = {
    "inputs": [{"name": k, "shape": [1], "datatype": "FP32", "data": [v]} for k, v in IRIS.items()]
}
ROUTES = [
    ("/models/iris/predict", IRIS),
    ("/v2/models/iris/infer", V2),
    ("/v1/models/iris:predict", {"instances": [IRIS]}),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_overload_is_a_503_with_retry_after(
    slow_app: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    answers = await asyncio.gather(*(slow_app.post(path, json=body) for _ in range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    assert set(statuses) <= {200, 503}
    for answer in answers:
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) >= 1
            assert "error" in answer.json() and "retry" in answer.json()["error"]
    metrics = (await slow_app.get("/metrics")).text
    assert 'keras_serve_rejected_total{model="iris"' in metrics


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_a_deadline_that_passes_in_the_queue_is_a_504(
    slow_app: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    first = asyncio.ensure_future(slow_app.post(path, json=body))
    await asyncio.sleep(0.05)
    late = await slow_app.post(path, json=body, headers={"X-Request-Timeout": "0.05"})
    assert late.status_code == 504, late.text
    assert "deadline" in late.json()["error"]
    assert (await first).status_code == 200


@pytest.mark.anyio
async def test_bad_deadlines_are_a_400(slow_app: httpx.AsyncClient) -> None:
    for value in ("soon", "-1", "nan", "inf", "0"):
        answer = await slow_app.post(
            "/models/iris/predict", json=IRIS, headers={"X-Request-Timeout": value}
        )
        assert answer.status_code == 400 and "X-Request-Timeout" in answer.json()["error"]
    answer = await slow_app.post(
        "/v2/models/iris/infer", json={**V2, "parameters": {"timeout": "x"}}
    )
    assert answer.status_code == 400 and "timeout" in answer.json()["error"]


@pytest.mark.anyio
async def test_the_in_flight_limit_bounds_the_process() -> None:
    async with slowed(max_in_flight=2, max_queued_rows=100) as client:
        answers = await asyncio.gather(
            *(client.post("/models/iris/predict", json=IRIS) for _ in range(6))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 503, 503, 503, 503]
    refused = next(a for a in answers if a.status_code == 503)
    assert "in flight" in refused.json()["error"]


@pytest.mark.anyio
async def test_large_bodies_are_bounded_by_their_total_size() -> None:
    """Bodies count against MAX_IN_FLIGHT_BYTES by Content-Length: one large body is
    always taken, a second one that would pass the budget is refused at once."""
    padded = (b'{"instances": [' + json.dumps(IRIS).encode() + b"]}").ljust(900)
    async with slowed(max_in_flight=10, max_in_flight_bytes=1024) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/models/iris/predict",
                    content=padded,
                    headers={"content-type": "application/json"},
                )
                for _ in range(3)
            )
        )
        small = await client.post("/models/iris/predict", json=IRIS)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 503, 503], statuses
    refused = next(a for a in answers if a.status_code == 503)
    assert "bytes" in refused.json()["error"] and refused.headers["retry-after"] == "1"
    assert small.status_code == 200  # the budget is back once the large body is done


@pytest.mark.anyio
@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_a_full_queue_refuses_before_the_body_is_read(
    path: str, body: dict[str, Any]
) -> None:
    """With the version's queue full, a request is a 503 whatever its body holds: even
    malformed JSON is not read, let alone parsed."""
    async with slowed(max_in_flight=10, max_queued_rows=1) as client:
        running = asyncio.ensure_future(client.post(path, json=body))
        await asyncio.sleep(0.05)  # it runs (0.2 s); the next one waits in the queue
        queued = asyncio.ensure_future(client.post(path, json=body))
        await asyncio.sleep(0.05)
        refused = await client.post(
            path, content=b"{not json", headers={"content-type": "application/json"}
        )
        assert refused.status_code == 503, refused.text
        assert "queue" in refused.json()["error"] and refused.headers["retry-after"] == "1"
        assert (await running).status_code == 200
        assert (await queued).status_code == 200


def test_the_body_buffer_bounds_what_waits_for_admission() -> None:
    """Declared bodies fit while their total stays within the limit (a lone one always
    does); a place given back twice is given back once."""
    from app.serving.admission import BodyBuffer

    bodies = BodyBuffer(100)
    first = bodies.reserve(60)
    assert first is not None and bodies.reserve(50) is None  # 110 would exceed 100
    second = bodies.reserve(40)
    assert second is not None and bodies.held == 100
    first()
    first()
    assert bodies.held == 40
    second()
    lone = bodies.reserve(1000)  # nothing else held: a lone body always fits
    assert lone is not None and bodies.held == 1000
