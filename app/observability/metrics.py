"""Prometheus metrics, one registry per app so tests can build many apps side by side.

With several workers (``WORKERS`` > 1) ``python -m app`` points
``PROMETHEUS_MULTIPROC_DIR`` at a directory made for this start, and every worker
writes its values there; ``/metrics`` (:func:`exposition`) then reports the sum over
workers for counters and histograms, whichever worker answers the scrape. Each gauge
says how workers combine (``multiprocess_mode``). ``process_*`` metrics describe every
live worker and the supervisor, told apart by a ``pid`` label.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISOR_ENV = "KERAS_SERVE_SUPERVISOR_PID"  # set by python -m app for its workers
# ONNX Runtime answers these networks in 20-30 us, HTTP round trips take ~100 us, a
# TensorFlow call ~0.3 ms, a big digits batch tens of ms: buckets from 10 us to 30 s
LATENCY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_dir() -> Path | None:
    """The shared metrics directory when several workers write metrics, else None."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class Metrics:
    """The service's metrics. The data plane records into these attributes:

    - ``inference`` / ``batch_size``: ``.labels(model, version).observe(...)`` per runtime call;
    - ``queue_depth``: ``.inc(n)`` when requests enter a batcher queue, ``.dec(n)`` when
      they leave it (run, expired or dropped); summed over live workers;
    - ``rejected``: ``.labels(model, version, protocol, reason).inc()`` for admission refusals;
    - ``model_loaded`` / ``model_load_seconds``: ``.labels(model, version).set(...)``.

    The access middleware records ``requests``, ``latency`` and ``in_flight``.
    """

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        r = self.registry = CollectorRegistry()
        self._extra: list[Collector] = []
        self.requests = Counter(
            "keras_serve_requests",
            "HTTP requests by model, version, protocol and status code",
            ["model", "version", "protocol", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "keras_serve_request_duration_seconds",
            "Time from request to response, by model, version and protocol",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "keras_serve_inference_duration_seconds",
            "Time of one runtime call (one batch)",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "keras_serve_batch_size",
            "Rows per runtime call",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "keras_serve_rejected",
            "Requests refused or dropped before the runtime: queue_full, in_flight (answered "
            "503), deadline (its deadline passed while queued), cancelled, disconnected",
            ["model", "version", "reason"],
            registry=r,
        )
        self.unseen = Counter(
            "keras_serve_unseen_categories",
            "Category values training never saw, by model, version and field",
            ["model", "version", "field"],
            registry=r,
        )
        self.payload_log_dropped = Counter(
            "keras_serve_payload_log_dropped",
            "Payload log records dropped because the sink fell behind",
            registry=r,
        )
        self.queue_depth = Gauge(
            "keras_serve_queue_depth",
            "Requests waiting for a runtime call (sum over live workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "keras_serve_requests_in_flight",
            "Requests being processed (sum over live workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.model_loaded = Gauge(
            "keras_serve_model_loaded",
            "1 when the version serves (on every live worker), 0 when it failed or was unloaded",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemin",
        )
        self.model_load_seconds = Gauge(
            "keras_serve_model_load_seconds",
            "Time to load and warm up the version (the slowest live worker)",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        # labelled children of requests and latency: ``labels()`` checks and locks on
        # every call, and every request (HTTP and gRPC) records into both
        self._counters: dict[tuple[str, ...], Any] = {}
        self._histograms: dict[tuple[str, ...], Any] = {}
        self._samplers: list[threading.Event] = []
        if not self.multiprocess:  # several workers: WorkerProcesses, at scrape time
            ProcessCollector(registry=r)

    def record_request(
        self, model: str, version: str, protocol: str, status: str, elapsed: float
    ) -> None:
        """One answered request in ``requests`` and ``latency``."""
        key = (model, version, protocol, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._child(self.requests, key)
        counter.inc()
        where = key[:3]
        histogram = self._histograms.get(where)
        if histogram is None:
            histogram = self._histograms[where] = self._child(self.latency, where)
        histogram.observe(elapsed)

    def _child(self, family: Counter | Histogram, key: tuple[str, ...]) -> Any:
        if len(self._counters) + len(self._histograms) > 10_000:  # labels from the repository
            self._counters.clear()  # only, but versions come and go: stay bounded
            self._histograms.clear()
        return family.labels(*key)

    def track_queue(self, depth: Callable[[], int], interval: float = 1.0) -> None:
        """Report ``depth()`` as the queue depth.

        One process: read at each scrape. Several workers: a callback cannot be read
        from another process, so a daemon thread samples it every ``interval`` seconds;
        prefer ``queue_depth.inc``/``dec`` there.
        """
        if not self.multiprocess:
            self.queue_depth.set_function(depth)
            return
        stop = threading.Event()
        self._samplers.append(stop)

        def sample() -> None:
            while not stop.wait(interval):
                self.queue_depth.set(depth())

        threading.Thread(target=sample, name="queue-depth", daemon=True).start()

    def close(self) -> None:
        for stop in self._samplers:
            stop.set()

    def add_collector(self, collector: Collector) -> None:
        """A collector computed at scrape time in this process (model insight): with
        several workers it reports what the worker answering the scrape holds."""
        self.registry.register(collector)
        self._extra.append(collector)

    def exposition(self) -> bytes:
        """The text format: this process's registry, or the sum over workers."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=str(directory))  # type: ignore[no-untyped-call]
        combined.register(WorkerProcesses(directory))
        for extra in self._extra:
            combined.register(extra)
        return generate_latest(combined)


class WorkerProcesses:
    """``process_*`` metrics of every live worker and of their supervisor.

    A worker writes ``*_<pid>.db`` files into the shared directory; the pids with a
    live process are the workers. Each is read from ``/proc`` by the prometheus client's
    own collector, and its samples get a ``pid`` label.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def pids(self) -> list[int]:
        supervisor = os.environ.get(SUPERVISOR_ENV, "")
        found = {int(supervisor)} if supervisor.isdigit() else set()
        for path in self.directory.glob("*.db"):
            tail = path.stem.rsplit("_", 1)[-1]
            if tail.isdigit():
                found.add(int(tail))
        return sorted(pid for pid in found if Path(f"/proc/{pid}").exists())

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.pids():
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            for metric in collector.collect():
                family = families.get(metric.name)
                if family is None:
                    family = families[metric.name] = GaugeMetricFamily(
                        metric.name, metric.documentation, labels=["pid"]
                    )
                    family.type = metric.type
                for sample in metric.samples:
                    family.add_sample(sample.name, {"pid": str(pid)}, sample.value)
        yield from families.values()


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


def protocol_of(path: str) -> str:
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/v1/"):
        return "tfserving"
    if path.startswith("/models"):
        return "native"
    return "other"
