"""The data plane: the one path from encoded inputs to predictions, for every protocol.

Protocol endpoints (native, Open Inference v2, TF Serving) resolve a model with
:meth:`model` and call :meth:`infer`; it runs the runtime on a worker thread,
through the model's batcher when batching is on, so inference never blocks the
event loop. It also records inference time and batch sizes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app.observability.context import note_model
from app.observability.metrics import Metrics
from app.serving.batching import Batcher
from app.serving.model import ServedModel
from app.serving.repository import ModelRepository, VersionState
from app.settings import Settings

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Lane:
    """What the data plane keeps per served model object: a timed runner and its batcher."""

    model: ServedModel
    run: Runner
    batcher: Batcher | None


class DataPlane:
    def __init__(
        self, repository: ModelRepository, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="inference"
        )
        self._lanes: dict[tuple[str, int], Lane] = {}
        repository.listeners.append(self._forget)
        self.metrics.track_queue(self.queue_depth)

    def model(self, name: str, version: int | None = None) -> ServedModel:
        """The model a request will use; raises ModelNotFound (a 404 in every protocol)."""
        model = self.repository.get(name, version)
        note_model(model.name, model.version)
        return model

    async def infer(self, model: ServedModel, x: np.ndarray) -> np.ndarray:
        """Class probabilities for encoded rows ``x`` of ``model``."""
        lane = self._lane(model)
        if lane.batcher is not None:
            return await lane.batcher.submit(x)
        self.metrics.batch_size.labels(model.name, str(model.version)).observe(len(x))
        return await asyncio.get_running_loop().run_in_executor(self.executor, lane.run, x)

    def _lane(self, model: ServedModel) -> Lane:
        """The lane of this exact model object; a reloaded version gets a fresh one."""
        key = (model.name, model.version)
        lane = self._lanes.get(key)
        if lane is None or lane.model is not model:
            lane = self._lanes[key] = self._open_lane(model)
        return lane

    def _open_lane(self, model: ServedModel) -> Lane:
        labels = (model.name, str(model.version))
        histogram = self.metrics.inference.labels(*labels)

        def timed(x: np.ndarray) -> np.ndarray:  # runs on a worker thread
            started = time.perf_counter()
            try:
                return model.predict(x)
            finally:
                histogram.observe(time.perf_counter() - started)

        batcher = None
        if self.settings.batching:
            batcher = Batcher(
                timed,
                self.executor,
                self.settings.max_batch_size,
                self.settings.max_batch_wait_ms / 1000,
                on_batch=self.metrics.batch_size.labels(*labels).observe,
            )
        return Lane(model, timed, batcher)

    def queue_depth(self) -> int:
        return sum(lane.batcher.queue_depth for lane in self._lanes.values() if lane.batcher)

    def _forget(self, state: VersionState) -> None:
        self._lanes.pop((state.name, state.version), None)
        self.metrics.model_loaded.labels(state.name, str(state.version)).set(
            1 if state.model is not None else 0
        )
        if state.model is not None:
            self.metrics.model_load_seconds.labels(state.name, str(state.version)).set(
                state.load_seconds
            )

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=False)
