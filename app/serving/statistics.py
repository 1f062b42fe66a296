"""Per-version inference statistics in the shape of Triton's statistics extension.

The data plane and the batcher update them on every request with a few integer
adds (durations are ``perf_counter_ns`` differences), so collecting them costs
nothing worth measuring; the REST and gRPC adapters only read :meth:`snapshot`.
Field meanings follow Triton
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_statistics.md):

* ``inference_count``: instances inferred (a request of 4 rows counts 4);
* ``execution_count``: runtime calls; fewer than requests when batching merged them;
* ``success`` / ``fail``: requests and their whole time in the data plane;
* ``queue``: time waiting for a runtime call (the batcher's queue, or a free thread);
* ``compute_input`` / ``compute_infer`` / ``compute_output``: validation and encoding,
  the runtime call that served the request, and building the outputs.

Only requests that reached a version are counted: an unknown model has nothing to
count against, and a body that is not a valid request never reaches the plane.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class Timing:
    """When the runtime call that served one request began and ended (filled by the
    batcher, or by the plane when batching is off)."""

    started_ns: int = 0
    finished_ns: int = 0


@dataclass
class VersionStatistics:
    name: str
    version: int
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)

    def succeeded(
        self,
        instances: int,
        started_ns: int,
        encoded_ns: int,
        timing: Timing,
        finished_ns: int,
    ) -> None:
        """One answered request: ``started``, ``encoded`` and ``finished`` are the
        plane's own clock readings, ``timing`` the runtime call's."""
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.inference_count += instances
        self.success.add(finished_ns - started_ns)
        self.compute_input.add(encoded_ns - started_ns)
        self.queue.add(max(0, timing.started_ns - encoded_ns))
        self.compute_infer.add(timing.finished_ns - timing.started_ns)
        self.compute_output.add(max(0, finished_ns - timing.finished_ns))

    def failed(self, started_ns: int, finished_ns: int) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.fail.add(finished_ns - started_ns)

    def executed(self, _rows: int = 0) -> None:
        """One runtime call (called on the event loop, once per batch)."""
        self.execution_count += 1

    def snapshot(self) -> dict[str, Any]:
        """Triton's ``ModelStatistics`` object (durations in nanoseconds)."""
        zero = Duration().as_dict()
        return {
            "name": self.name,
            "version": str(self.version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [],
        }


class Statistics:
    """Every version's statistics; a version keeps its figures across reloads."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], VersionStatistics] = {}
        self._lock = threading.Lock()

    def of(self, name: str, version: int) -> VersionStatistics:
        stats = self._versions.get((name, version))
        if stats is None:
            with self._lock:
                stats = self._versions.setdefault((name, version), VersionStatistics(name, version))
        return stats
