"""Several workers behind one socket (``WORKERS=2 python -m app``): metrics summed over
workers, a killed worker replaced while the service keeps answering, and SIGTERM that
answers every connection the kernel accepted."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELS_DIR
from tests.live_server import Service, service_process

pytestmark = pytest.mark.slow

IRIS = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}
TWO = {"WORKERS": "2", "WATCH_INTERVAL_S": "0", "LOG_LEVEL": "info"}


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    found = {int(p) for p in path.read_text().split()}
    # uvicorn's spawn context starts a resource tracker too: keep the serving workers
    return {c for c in found if b"multiprocessing.resource_tracker" not in cmdline(c)}


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def requests_total(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("keras_serve_requests_total{")
    )


def predict_fresh(url: str) -> int:
    """One prediction on a new connection, so that either worker may take it."""
    with httpx.Client(base_url=url, timeout=10) as http:
        return http.post("/models/iris/predict", json=IRIS).status_code


def scrape(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as http:
        return http.get("/metrics").text


def wait_for_workers(service: Service, count: int = 2, timeout: float = 60) -> None:
    """Until the supervisor has ``count`` serving workers (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while len(children(service.process.pid)) < count and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def two_workers() -> Iterator[Service]:
    with service_process(MODELS_DIR, TWO) as service:
        wait_for_workers(service)
        yield service


def test_counters_are_summed_over_workers_and_monotonic(two_workers: Service) -> None:
    url = two_workers.url
    sent = 0
    scrapes: list[float] = []
    for _ in range(20):
        for _ in range(10):
            assert predict_fresh(url) == 200
            sent += 1
        text = scrape(url)  # whichever worker answers, the total is every worker's
        scrapes.append(requests_total(text))
        assert scrapes[-1] == sent, (scrapes, sent)
    assert scrapes == sorted(scrapes)
    text = scrape(url)
    # both workers served (and wrote metrics), plus the supervisor: three pids
    pids = set(re.findall(r'process_resident_memory_bytes\{pid="(\d+)"\}', text))
    assert {int(p) for p in pids} == children(two_workers.process.pid) | {two_workers.process.pid}
    assert re.search(r'keras_serve_model_loaded\{model="iris",version="2"\} 1\.0', text)
    latency = (
        r"keras_serve_request_duration_seconds_count"
        r'\{model="iris",protocol="native",version="2"\} (\S+)'
    )
    match = re.search(latency, text)
    assert match and float(match.group(1)) == sent
    assert 'keras_serve_inference_duration_seconds_bucket{le="2.5e-05"' in text


def test_killed_worker_is_replaced_and_the_service_keeps_answering(two_workers: Service) -> None:
    url = two_workers.url
    for _ in range(20):
        assert predict_fresh(url) == 200
    before = requests_total(scrape(url))
    workers = children(two_workers.process.pid)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    statuses = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses.append(predict_fresh(url))  # the other worker answers meanwhile
        now = children(two_workers.process.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    replacement = children(two_workers.process.pid) - workers
    assert len(replacement) == 1, "no worker replaced the killed one"
    assert set(statuses) == {200}
    while httpx.get(url + "/health/ready").status_code != 200:
        time.sleep(0.2)
    for _ in range(20):
        assert predict_fresh(url) == 200
    after = requests_total(scrape(url))
    # the dead worker's counts are kept: counters never go down
    assert after == before + len(statuses) + 20, (before, after, len(statuses))
    assert "died" in two_workers.output()
    # at exit the supervisor removes the per-start metrics directory
    metrics_dirs = set(Path("/tmp").glob(f"keras-serve-metrics-{two_workers.process.pid}-*"))
    assert len(metrics_dirs) == 1
    two_workers.process.terminate()
    assert two_workers.process.wait(timeout=60) == 0
    assert not any(d.exists() for d in metrics_dirs)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_answers_every_accepted_connection(workers: int) -> None:
    """Clients keep opening connections while SIGTERM arrives. Every connection the
    server's kernel accepted is answered (200); the others are refused, never reset."""
    answered: list[int] = []
    refused: list[str] = []
    unanswered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    body = {"instances": [{"image": [[0] * 28] * 28}] * 50}

    def client(url: str) -> None:
        while not stop.is_set():
            try:
                with httpx.Client(timeout=httpx.Timeout(30, connect=15)) as http:
                    response = http.post(f"{url}/models/digits/predict", json=body)
                with lock:
                    answered.append(response.status_code)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                with lock:
                    refused.append(repr(exc))
                return
            except httpx.TransportError as exc:  # reset or closed after connecting
                with lock:
                    unanswered.append(repr(exc))
                return

    # 32 bodies of about 120 KB at once: over the default body budget (MAX_IN_FLIGHT_BYTES),
    # which would answer some 503 at once; this test is about draining, so it lifts it
    env = {**TWO, "WORKERS": str(workers), "BATCHING": "false"}
    env["MAX_IN_FLIGHT_BYTES"] = str(64 << 20)
    with service_process(MODELS_DIR, env) as service:
        threads = [threading.Thread(target=client, args=(service.url,)) for _ in range(32)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(answered) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        service.process.send_signal(signal.SIGTERM)
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(60)
        code = service.process.wait(timeout=60)
        log = service.output()
    assert code == 0, log[-2000:]
    assert len(answered) >= 50
    assert set(answered) == {200}
    assert unanswered == [], unanswered[:5]
    assert 0 < len(refused) <= 32  # clients kept trying after the signal: refused, not reset
