"""The data plane: the one path from encoded inputs to predictions, for every protocol.

Protocol endpoints (native, Open Inference v2, TF Serving) call :meth:`infer`;
it runs the runtime on a worker thread, through the model's batcher when
batching is on, so inference never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from app.serving.batching import Batcher
from app.serving.model import ServedModel
from app.serving.repository import ModelRepository, VersionState
from app.settings import Settings


class DataPlane:
    def __init__(self, repository: ModelRepository, settings: Settings) -> None:
        self.repository = repository
        self.settings = settings
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="inference"
        )
        self._batchers: dict[tuple[str, int], tuple[ServedModel, Batcher]] = {}
        self.on_batch: Callable[[str, int, int], None] | None = None
        repository.listeners.append(self._forget_batcher)

    def model(self, name: str, version: int | None = None) -> ServedModel:
        return self.repository.get(name, version)

    async def infer(self, model: ServedModel, x: np.ndarray) -> np.ndarray:
        """Class probabilities for encoded rows ``x`` of ``model``."""
        if not self.settings.batching:
            return await asyncio.get_running_loop().run_in_executor(self.executor, model.predict, x)
        return await self._batcher(model).submit(x)

    def _batcher(self, model: ServedModel) -> Batcher:
        key = (model.name, model.version)
        entry = self._batchers.get(key)
        if entry is not None and entry[0] is model:
            return entry[1]
        batcher = Batcher(
            model.predict,
            self.executor,
            self.settings.max_batch_size,
            self.settings.max_batch_wait_ms / 1000,
            on_batch=self._batch_hook(model),
        )
        self._batchers[key] = (model, batcher)
        return batcher

    def _batch_hook(self, model: ServedModel) -> Callable[[int], None]:
        def hook(size: int) -> None:
            if self.on_batch is not None:
                self.on_batch(model.name, model.version, size)

        return hook

    def queue_depth(self) -> int:
        return sum(b.queue_depth for _, b in self._batchers.values())

    def _forget_batcher(self, state: VersionState) -> None:
        self._batchers.pop((state.name, state.version), None)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=False)
