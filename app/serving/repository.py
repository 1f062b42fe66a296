"""The model repository: which versions exist, which are loaded, and their state.

It owns every loaded :class:`ServedModel`. Swapping a version in or out replaces
one dict entry, so a request that already holds a model finishes on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from app.artifacts import version_dirs
from app.serving.errors import ModelNotFound
from app.serving.model import ArtifactError, ServedModel

log = logging.getLogger(__name__)


class VersionStatus(StrEnum):
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


@dataclass
class VersionState:
    name: str
    version: int
    path: Path
    status: VersionStatus
    reason: str = ""
    model: ServedModel | None = None
    load_seconds: float = 0.0


class ModelRepository:
    def __init__(
        self,
        models_dir: Path,
        runtime: Literal["onnx", "tensorflow", "keras"],
        threads: int = 1,
        max_instances: int = 1000,
        max_image_pixels: int = 16_000_000,
    ) -> None:
        self.models_dir = models_dir
        self.runtime = runtime
        self.threads = threads
        self.max_instances = max_instances
        self.max_image_pixels = max_image_pixels
        self._states: dict[str, dict[int, VersionState]] = {}
        self._lock = threading.Lock()
        self.startup_complete = False
        self.listeners: list[Callable[[VersionState], None]] = []

    # ---------------------------------------------------------------- loading
    def load_all(self) -> None:
        """Load every version on disk (blocking); failures are recorded, not raised."""
        for name, version, path in version_dirs(self.models_dir):
            self.load_version(name, version, path)
        self.startup_complete = True

    def load_version(self, name: str, version: int, path: Path) -> VersionState:
        state = VersionState(name, version, path, VersionStatus.LOADING)
        self._states.setdefault(name, {}).setdefault(version, state)
        try:
            model = ServedModel.load(
                path, self.runtime, self.threads, self.max_instances, self.max_image_pixels
            )
        except ArtifactError as exc:
            state = VersionState(name, version, path, VersionStatus.FAILED, str(exc))
            log.error("model %s v%s failed to load: %s", name, version, exc)
        except Exception as exc:  # an unexpected fault in one artifact must not stop the rest
            state = VersionState(name, version, path, VersionStatus.FAILED, repr(exc))
            log.exception("model %s v%s failed to load", name, version)
        else:
            state = VersionState(
                name, version, path, VersionStatus.AVAILABLE, "", model, model.load_seconds
            )
            log.info(
                "model %s v%s loaded in %.2f s on %s (%s)",
                name,
                version,
                model.load_seconds,
                model.runtime.name,
                model.runtime.device,
            )
        with self._lock:
            previous = self._states.setdefault(name, {}).get(version)
            if state.status is VersionStatus.FAILED and previous and previous.model:
                state.model = previous.model  # a broken replacement leaves the old one serving
            self._states[name][version] = state
        for listener in self.listeners:
            listener(state)
        return state

    def unload_version(self, name: str, version: int) -> VersionState:
        with self._lock:
            state = self._states.get(name, {}).get(version)
            if state is None:
                raise ModelNotFound(
                    name, version, known=[str(v) for v in self._states.get(name, {})]
                )
            unloaded = VersionState(name, version, state.path, VersionStatus.UNLOADED)
            self._states[name][version] = unloaded
        for listener in self.listeners:
            listener(unloaded)
        return unloaded

    # ---------------------------------------------------------------- queries
    def names(self) -> list[str]:
        return sorted(self._states)

    def versions(self, name: str) -> dict[int, VersionState]:
        if name not in self._states:
            raise ModelNotFound(name, known=self._states)
        return dict(sorted(self._states[name].items()))

    def states(self) -> list[VersionState]:
        return [s for name in self.names() for s in self.versions(name).values()]

    def get(self, name: str, version: int | None = None) -> ServedModel:
        """The pinned version, or the highest one that is serving."""
        versions = self.versions(name)
        if version is None:
            serving = [s.model for s in versions.values() if s.model is not None]
            if not serving:
                raise ModelNotFound(name, None, "has no version that is serving")
            return serving[-1]
        state = versions.get(version)
        if state is None:
            raise ModelNotFound(name, version, known=[str(v) for v in versions])
        if state.model is None:
            raise ModelNotFound(name, version, f"is not serving ({state.status})")
        return state.model

    def is_ready(self) -> bool:
        return self.startup_complete and any(s.model for s in self.states())
