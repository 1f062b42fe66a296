"""Prometheus metrics, one registry per app so tests can build many apps side by side."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "keras_serve_requests",
            "HTTP requests by model, version, protocol and status code",
            ["model", "version", "protocol", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "keras_serve_request_duration_seconds",
            "Time from request to response, by protocol",
            ["protocol"],
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
        self.payload_log_dropped = Counter(
            "keras_serve_payload_log_dropped",
            "Payload log records dropped because the sink fell behind",
            registry=r,
        )
        self.queue_depth = Gauge(
            "keras_serve_queue_depth", "Requests waiting for a runtime call", registry=r
        )
        self.in_flight = Gauge(
            "keras_serve_requests_in_flight", "Requests being processed", registry=r
        )
        self.model_loaded = Gauge(
            "keras_serve_model_loaded",
            "1 when the version serves, 0 when it failed or was unloaded",
            ["model", "version"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "keras_serve_model_load_seconds",
            "Time to load and warm up the version",
            ["model", "version"],
            registry=r,
        )

    def track_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)


def protocol_of(path: str) -> str:
    if path.startswith("/v2"):
        return "v2"
    if path.startswith("/v1/"):
        return "tfserving"
    if path.startswith("/models"):
        return "native"
    return "other"
