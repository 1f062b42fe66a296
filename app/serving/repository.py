"""The model repository: which versions exist, which are loaded, and their state.

It owns every loaded :class:`ServedModel`. Swapping a version in or out replaces
one dict entry, so a request that already holds a model finishes on it.

Each model may have a config (``models/<name>/config.json``, see
:class:`app.artifacts.ModelConfig`): a version policy deciding which versions load,
labels naming versions (``stable`` is the default one), and a canary share of the
default traffic. Requests name a version by number or by label; ``resolve`` turns
either into the number that answers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from app.artifacts import (
    CANARY,
    CONFIG_FILE,
    STABLE,
    ModelConfig,
    read_config,
    version_dirs,
    write_config,
)
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
    fingerprint: tuple[object, ...] = ()  # of the directory as it was loaded


OUTSIDE_POLICY = "outside the version policy"
REMOVED = "removed from the models directory"
VersionRef = int | str | None  # a number, a label, or None for the default version

# a model without config.json; shared and never changed (the admin API edits copies)
DEFAULT_CONFIG = ModelConfig()


class ConfigError(ValueError):
    """A config the repository refuses (a label naming a version that is not serving)."""


def fingerprint(path: Path) -> tuple[object, ...]:
    """What changes when a version directory is rewritten in place or replaced: the
    directory's inode and every file's path, size and modification time."""
    try:
        entries: list[object] = [path.stat().st_ino]
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for file in sorted(files):
                info = os.stat(os.path.join(root, file))
                rel = os.path.relpath(os.path.join(root, file), path)
                entries.append((rel, info.st_size, info.st_mtime_ns))
    except OSError:
        return ()
    return tuple(entries)


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
        self._configs: dict[str, ModelConfig] = {}
        self._config_stamps: dict[str, tuple[int, int] | None] = {}
        self._canary_credit: dict[str, float] = {}
        # what ``get`` answered per (name, reference): every request asks twice (the room
        # check before its body is read, then the call), and each answer costs a
        # resolve; any change to states or configs empties it (see ``_changed``)
        self._answers: dict[tuple[str, VersionRef], ServedModel] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self.startup_complete = False
        self.listeners: list[Callable[[VersionState], None]] = []

    def _changed(self) -> None:
        """Forget cached answers after a change (called holding ``_lock``). The
        generation lets a lookup that ran across the change (another thread loads and
        unloads) decline to store its answer."""
        self._generation += 1
        self._answers.clear()

    # ---------------------------------------------------------------- loading
    def load_all(self) -> None:
        """Load every wanted version on disk (blocking); failures are recorded, not raised."""
        on_disk = version_dirs(self.models_dir)
        for name in sorted({name for name, _, _ in on_disk}):
            self.refresh_config(name)
        for name, version, path in on_disk:
            if version in self.wanted(name):
                self.load_version(name, version, path)
            else:
                self.skip_version(name, version, path)
        self.startup_complete = True

    # ----------------------------------------------------------------- config
    def config(self, name: str) -> ModelConfig:
        return self._configs.get(name) or DEFAULT_CONFIG

    def _config_stamp(self, name: str) -> tuple[int, int] | None:
        try:
            info = (self.models_dir / name / CONFIG_FILE).stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def refresh_config(self, name: str) -> bool:
        """Re-read ``<name>/config.json`` when it changed; True when it did. A broken
        file is logged and the config in force stays (as a broken version does)."""
        stamp = self._config_stamp(name)
        if name in self._config_stamps and self._config_stamps[name] == stamp:
            return False
        self._config_stamps[name] = stamp
        try:
            config = read_config(self.models_dir / name)
        except (ValueError, OSError) as exc:
            log.error(
                "model %s: %s is invalid, keeping the config in force: %s", name, CONFIG_FILE, exc
            )
            return False
        if config == self.config(name):
            return False
        with self._lock:
            self._configs[name] = config
            self._changed()
        log.info("model %s: config %s", name, config.model_dump_json(exclude_defaults=True))
        return True

    def set_config(self, name: str, config: ModelConfig, persist: bool = True) -> bool:
        """Put a config in force (the admin API); labels must name serving versions.
        Returns whether it was written to the models directory too."""
        states = self._states.get(name, {})
        for label, version in config.labels.items():
            state = states.get(version)
            if state is None or state.model is None:
                raise ConfigError(
                    f"labels.{label}: version {version} of model {name!r} is not serving"
                )
        with self._lock:
            self._configs[name] = config
            self._changed()
        written = False
        if persist:
            try:
                write_config(config, self.models_dir / name)
                written = True
            except OSError as exc:  # a read-only models directory: in force until restart
                log.warning("model %s: config not written (%s); in force in memory", name, exc)
        self._config_stamps[name] = self._config_stamp(name)
        return written

    def wanted(self, name: str, on_disk: list[int] | None = None) -> set[int]:
        """The versions the policy selects, plus every labelled one."""
        if on_disk is None:
            on_disk = [v for n, v, _ in version_dirs(self.models_dir) if n == name]
        config = self.config(name)
        return config.version_policy.selects(on_disk) | (set(config.labels.values()) & set(on_disk))

    def skip_version(self, name: str, version: int, path: Path) -> VersionState:
        """Record a version on disk that the policy leaves unloaded (unloading it if it
        was serving), so that status pages show it and why."""
        state = VersionState(name, version, path, VersionStatus.UNLOADED, OUTSIDE_POLICY)
        with self._lock:
            self._states.setdefault(name, {})[version] = state
            self._changed()
        for listener in self.listeners:
            listener(state)
        return state

    def load_version(self, name: str, version: int, path: Path) -> VersionState:
        state = VersionState(name, version, path, VersionStatus.LOADING)
        with self._lock:
            self._states.setdefault(name, {}).setdefault(version, state)
            self._changed()
        stamp = fingerprint(path)  # before loading: a change while loading shows next pass
        try:
            model = ServedModel.load(
                path, self.runtime, self.threads, self.max_instances, self.max_image_pixels
            )
        except ArtifactError as exc:
            state = VersionState(
                name, version, path, VersionStatus.FAILED, str(exc), None, 0.0, stamp
            )
            log.error("model %s v%s failed to load: %s", name, version, exc)
        except Exception as exc:  # an unexpected fault in one artifact must not stop the rest
            state = VersionState(
                name, version, path, VersionStatus.FAILED, repr(exc), None, 0.0, stamp
            )
            log.exception("model %s v%s failed to load", name, version)
        else:
            state = VersionState(
                name, version, path, VersionStatus.AVAILABLE, "", model, model.load_seconds, stamp
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
                state.load_seconds = previous.load_seconds
            self._states[name][version] = state
            self._changed()
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
            self._changed()
        for listener in self.listeners:
            listener(unloaded)
        return unloaded

    def remove_version(self, name: str, version: int) -> VersionState:
        """A version whose directory is gone stops serving (requests holding it finish);
        it stays listed, UNLOADED with the reason, until its directory comes back."""
        with self._lock:
            previous = self._states.get(name, {}).get(version)
            path = previous.path if previous else self.models_dir / name / str(version)
            removed = VersionState(name, version, path, VersionStatus.UNLOADED, REMOVED)
            self._states.setdefault(name, {})[version] = removed
            self._changed()
        for listener in self.listeners:
            listener(removed)
        return removed

    def forget_model(self, name: str) -> None:
        """A model with no version directory left leaves the listings: its name is then
        as unknown as one that never existed."""
        with self._lock:
            states = self._states.pop(name, {})
            self._configs.pop(name, None)
            self._config_stamps.pop(name, None)
            self._canary_credit.pop(name, None)
            self._changed()
        for state in states.values():
            gone = VersionState(name, state.version, state.path, VersionStatus.UNLOADED, REMOVED)
            for listener in self.listeners:
                listener(gone)

    # ---------------------------------------------------------------- queries
    def names(self) -> list[str]:
        return sorted(self._states)

    def versions(self, name: str) -> dict[int, VersionState]:
        if name not in self._states:
            raise ModelNotFound(name, known=self._states)
        return dict(sorted(self._states[name].items()))

    def states(self) -> list[VersionState]:
        return [s for name in self.names() for s in self.versions(name).values()]

    def labels(self, name: str) -> dict[str, int]:
        return dict(self.config(name).labels)

    def serving(self, name: str) -> list[int]:
        return [v for v, s in self.versions(name).items() if s.model is not None]

    def default_version(self, name: str) -> int | None:
        """``stable`` when it is set and serving, otherwise the highest serving version
        (on every default request: no sorting or copying here)."""
        states = self._states.get(name, {})
        stable = self.config(name).labels.get(STABLE)
        if stable is not None and (state := states.get(stable)) and state.model is not None:
            return stable
        return max((v for v, s in states.items() if s.model is not None), default=None)

    def resolve(self, name: str, ref: VersionRef) -> int:
        """The version number a reference names: a number is itself (known or not yet
        checked: ``get`` says why it cannot serve), a label is looked up, None is the
        default. Raises ModelNotFound naming what exists."""
        versions = self._states.get(name)
        if versions is None:
            raise ModelNotFound(name, known=self._states)
        if isinstance(ref, int):
            if ref not in versions:
                raise ModelNotFound(name, ref, known=[str(v) for v in sorted(versions)])
            return ref
        if ref is None:
            default = self.default_version(name)
            if default is None:
                raise ModelNotFound(name, None, "has no version that is serving")
            return default
        labels = self.config(name).labels
        if ref == STABLE and STABLE not in labels:  # "stable" always names the default
            return self.resolve(name, None)
        if ref not in labels:
            known = [*labels, *(str(v) for v in sorted(versions))]
            raise ModelNotFound(name, ref, "is not a label of this model", known=known)
        return labels[ref]

    def get(self, name: str, version: VersionRef = None) -> ServedModel:
        """The version a reference names (a number, a label, or None: the default)."""
        answer = self._answers.get((name, version))
        if answer is not None:
            return answer
        generation = self._generation
        number = self.resolve(name, version)
        state = self._states[name].get(number)
        if state is None:
            raise ModelNotFound(name, version, f"names version {number}, which is not on disk")
        if state.model is None:
            what = f"is not serving ({state.status}{': ' + state.reason if state.reason else ''})"
            if not isinstance(version, int):
                what = f"names version {number}, which " + what
            raise ModelNotFound(name, version, what)
        with self._lock:  # a change between the check and the store would leave it stale
            if generation == self._generation:
                self._answers[name, version] = state.model
        return state.model

    def route(self, name: str, version: VersionRef = None) -> ServedModel:
        """As ``get``, but default traffic is split: ``canary_percent`` of it goes to the
        ``canary`` version when one serves. The split is exact, not random: a running
        credit sends every (100 / percent)-th default request to the canary."""
        if version is not None:
            return self.get(name, version)
        config = self.config(name)
        canary = config.labels.get(CANARY)
        if config.canary_percent > 0 and canary is not None:
            with self._lock:
                credit = self._canary_credit.get(name, 0.0) + config.canary_percent
                go = credit >= 100
                self._canary_credit[name] = credit - 100 if go else credit
            if go:
                state = self._states.get(name, {}).get(canary)
                if state is not None and state.model is not None:
                    return state.model
        return self.get(name, None)

    def is_ready(self) -> bool:
        return self.startup_complete and any(s.model for s in self.states())
