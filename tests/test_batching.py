"""Adaptive batching: merged runtime calls, each caller gets its own rows, failures
stay inside their batch, and a lone request runs at once."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from app.serving.batching import Batcher, CallCost
from tests.conftest import MODELS_DIR
from tests.live_server import service_process


class SlowDouble:
    """A fake runtime: doubles its input, takes a while, records every batch."""

    def __init__(self, delay: float = 0.02, fail_on: float | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.batches: list[list[float]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(x[:, 0].tolist())
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in x[:, 0]:
            raise RuntimeError("runtime failed")
        return x * 2


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    fn = SlowDouble()

    async def scenario() -> list[np.ndarray]:
        batcher = Batcher(fn, ThreadPoolExecutor(2), max_batch=64, max_wait=0.005)
        inputs = [np.full((1 + i % 3, 1), float(i)) for i in range(30)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        for x, y in zip(inputs, outputs, strict=True):
            np.testing.assert_array_equal(y, x * 2)
        return outputs

    run(scenario())
    assert len(fn.batches) < 30  # requests were merged
    assert max(len(b) for b in fn.batches) > 1
    assert sum(len(b) for b in fn.batches) == sum(1 + i % 3 for i in range(30))


def test_batches_respect_the_maximum_size() -> None:
    fn = SlowDouble()

    async def scenario() -> None:
        batcher = Batcher(fn, ThreadPoolExecutor(2), max_batch=8, max_wait=0.005)
        await asyncio.gather(*(batcher.submit(np.ones((3, 1))) for _ in range(20)))

    run(scenario())
    assert max(len(b) for b in fn.batches) <= 8


def test_a_failed_call_fails_only_its_own_batch() -> None:
    fn = SlowDouble(fail_on=13.0)

    async def scenario() -> list[Any]:
        batcher = Batcher(fn, ThreadPoolExecutor(2), max_batch=4, max_wait=0.0)
        inputs = [np.full((1, 1), float(i)) for i in range(16)]
        return await asyncio.gather(*(batcher.submit(x) for x in inputs), return_exceptions=True)

    results = run(scenario())
    failed = {i for i, r in enumerate(results) if isinstance(r, Exception)}
    failing_batch = next(b for b in fn.batches if 13.0 in b)
    assert failed == {int(v) for v in failing_batch}
    assert all(float(r[0, 0]) == 2 * i for i, r in enumerate(results) if i not in failed)


def test_a_lone_request_does_not_wait_for_batch_mates() -> None:
    fn = SlowDouble(delay=0.0)

    async def scenario() -> float:
        batcher = Batcher(fn, ThreadPoolExecutor(1), max_batch=64, max_wait=5.0)
        started = time.perf_counter()
        await batcher.submit(np.ones((1, 1)))
        return time.perf_counter() - started

    assert run(scenario()) < 2.5  # far below the 5 s it would wait if it waited at all


@pytest.mark.slow
def test_invalid_requests_never_fail_their_batch_mates() -> None:
    """Over HTTP, valid and invalid requests interleaved at concurrency 16."""
    good = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}
    bad = {**good, "petal_width": -1}
    outcomes: list[tuple[bool, int, Any]] = []
    lock = threading.Lock()

    with service_process(MODELS_DIR, {"MAX_BATCH_WAIT_MS": "5"}) as service:
        expected = httpx.post(f"{service.url}/models/iris/predict", json=good).json()

        def client(k: int) -> None:
            with httpx.Client(base_url=service.url, timeout=30) as http:
                for i in range(20):
                    valid = (i + k) % 3 != 0
                    answer = http.post("/models/iris/predict", json=good if valid else bad)
                    with lock:
                        outcomes.append((valid, answer.status_code, answer.json()))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = httpx.get(f"{service.url}/metrics").text

    assert len(outcomes) == 320
    for valid, status, body in outcomes:
        if valid:
            assert status == 200
            assert body == expected
        else:
            assert status == 422
            assert "petal_width" in body["error"]
    merged = [
        line
        for line in metrics.splitlines()
        if line.startswith('keras_serve_batch_size_bucket{le="1.0",model="iris"')
    ]
    total = [
        line
        for line in metrics.splitlines()
        if line.startswith('keras_serve_batch_size_count{model="iris"')
    ]
    assert merged and total
    # fewer runtime calls than valid requests: some calls carried several requests
    assert float(total[0].split()[-1]) < sum(1 for v, _, _ in outcomes if v) + 1


@pytest.mark.parametrize(
    ("delay", "budget", "inline"),
    [(0.0, 1e-3, True), (0.005, 1e-3, False), (0.0, 0.0, False)],
)
def test_small_fast_calls_run_on_the_event_loop(delay: float, budget: float, inline: bool) -> None:
    """A batch of a few rows runs on the loop's own thread once such calls are measured
    to fit the budget (the thread hop would cost more); a slow model, or a budget of 0,
    always runs on a worker thread. The first call is timed by the wall clock on a worker
    thread, where waiting for the GIL counts: the budget leaves room for that on a busy
    machine, and the slow call lies beyond the range in which a call is probed on the
    loop (``CallCost.PROBE_RANGE`` times the budget)."""
    threads: list[str] = []

    def fn(x: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        time.sleep(delay)
        return x

    async def main() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
            batcher = Batcher(fn, pool, 64, 0.0, inline_budget=budget)
            for i in range(5):
                out = await batcher.submit(np.full((1, 2), float(i)))
                assert out.tolist() == [[float(i)] * 2]

    run(main())
    assert threads[0].startswith("worker")  # not measured yet: a worker thread
    on_loop = [name == threading.main_thread().name for name in threads[1:]]
    assert on_loop == [inline] * 4, threads


@pytest.mark.parametrize(
    ("cpu_timed", "busy", "inline"),
    [(True, False, True), (False, False, False), (True, True, False)],
)
def test_a_call_costs_its_cpu_time_when_the_runtime_computes_on_its_caller(
    cpu_timed: bool, busy: bool, inline: bool
) -> None:
    """Time a call spends waiting (for the GIL, here a sleep) is no cost of the call when
    the runtime computes on its caller's thread: such a call still runs on the loop.
    Measured by the wall clock it stays on a worker thread; so does a call that does
    take the CPU for longer than the budget."""
    threads: list[str] = []

    def fn(x: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        if busy:
            end = time.thread_time() + 0.002
            while time.thread_time() < end:
                pass
        else:
            time.sleep(0.002)
        return x

    async def main() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="worker") as pool:
            batcher = Batcher(fn, pool, 64, 0.0, inline_budget=500e-6, cpu_timed=cpu_timed)
            for i in range(4):
                await batcher.submit(np.full((1, 2), float(i)))

    run(main())
    assert threads[0].startswith("worker")  # not measured yet
    on_loop = [name == threading.main_thread().name for name in threads[1:]]
    assert on_loop == [inline] * 3, threads


def test_a_call_is_expected_to_cost_what_calls_of_its_size_cost() -> None:
    """Per size class, not per row over all sizes: a small model's 1-row call costs
    almost what its 64-row call does."""
    cost = CallCost()
    assert cost.expected(1) is None  # nothing measured yet
    cost.observe(1, 50e-6)
    cost.observe(64, 60e-6)
    assert cost.expected(1) == pytest.approx(50e-6)
    assert cost.expected(64) == pytest.approx(60e-6)  # not 64 x 50 us
    # a size not measured yet: the per-row cost of the nearest smaller size (high side)
    assert cost.expected(8) == pytest.approx(8 * 50e-6)
    assert CallCost().expected(3) is None


def test_an_inflated_measurement_moves_the_estimate_a_little() -> None:
    """A decaying minimum: a call slowed by other threads raises the estimate by at most
    RISE; the next measurement at the call's own cost brings it back."""
    cost = CallCost()
    cost.observe(1, 20e-6)
    cost.observe(1, 400e-6)
    assert cost.expected(1) == pytest.approx(20e-6 * CallCost.RISE)
    cost.observe(1, 20e-6)
    assert cost.expected(1) == pytest.approx(20e-6)
    for _ in range(100):  # a model that really became slower is followed, step by step
        cost.observe(1, 400e-6)
    assert cost.expected(1) == pytest.approx(400e-6)


@pytest.mark.parametrize(("measured", "tried"), [(200e-6, 3), (500e-6, 0)])
def test_a_call_near_the_budget_is_tried_on_the_loop_now_and_then(
    measured: float, tried: int
) -> None:
    """Measured on a worker thread a small call looks dearer than it is on the loop; one
    within PROBE_RANGE of the budget runs on the loop once in PROBE_EVERY calls, to be
    measured there. A slow one never does."""
    cost = CallCost()
    cost.observe(4, measured)
    calls = 3 * CallCost.PROBE_EVERY
    inline = sum(cost.runs_inline(4, 100e-6) for _ in range(calls))
    assert inline == tried
    assert cost.runs_inline(4, 300e-6) is (measured <= 300e-6)
