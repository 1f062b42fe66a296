"""Keep the repository in step with the models directory while serving.

Each pass (every ``WATCH_INTERVAL_S``):

- a model's ``config.json`` that changed is re-read; versions its policy now wants
  are loaded, versions it no longer wants are unloaded;
- a new version directory with a model card is loaded, when the policy wants it;
- a loaded version whose directory changed (retrained with ``--overwrite``, or
  replaced) is reloaded with the same checks and atomic switch as the admin reload:
  a broken replacement leaves the old one serving;
- a version whose directory is gone is unloaded (requests holding it finish) and
  listed as removed; a model with no version directory left is forgotten;
- a version that failed to load is tried again: when its files change, and otherwise
  after 1, 2, 4, ... seconds, doubling up to 5 minutes (:func:`retry_delay`).

A change is seen through a fingerprint of the directory (inode, and every file's
path, size and modification time), taken before each load. Training writes a
version beside its destination and renames it into place, but a copy made file by
file (``cp -r``, card first) shows up half written: a new or changed directory is
loaded only once it has settled, that is, its newest file is ``SETTLE_S`` old or its
fingerprint is the same as on the previous pass. A load that still came too early
fails, and is retried when the files change. Loading runs on a worker thread; the
repository switches a version in only once it is loaded and warmed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from app.artifacts import CARD_FILE, version_dirs
from app.serving.repository import (
    OUTSIDE_POLICY,
    REMOVED,
    ModelRepository,
    VersionStatus,
    fingerprint,
)

log = logging.getLogger(__name__)

SETTLE_S = 1.0
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0
clock = time.monotonic  # the retry schedule's clock (tests move it)
Key = tuple[str, int]


def retry_delay(failures: int) -> float:
    """Seconds before an unchanged version that failed ``failures`` times is retried."""
    return float(min(RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S))


@dataclass(frozen=True)
class Change:
    # "new", "changed", "retry", "wanted" (policy now selects it), "unwanted",
    # "removed" (its directory is gone), "gone" (the model has no version directory left)
    kind: str
    name: str
    version: int
    path: Path


@dataclass
class Memory:
    """What the watcher keeps between passes of one repository."""

    unsettled: dict[Key, tuple[object, ...]] = field(default_factory=dict)  # last fingerprint
    failures: dict[Key, tuple[int, float]] = field(default_factory=dict)  # count, retry at

    def settled(self, key: Key, stamp: tuple[object, ...]) -> bool:
        """Whether a directory is done being written: its newest file is ``SETTLE_S``
        old, or nothing in it changed since the previous pass."""
        mtimes = [entry[2] for entry in stamp[1:] if isinstance(entry, tuple)]
        newest = max(mtimes, default=0)
        if not isinstance(newest, int) or time.time_ns() - newest >= SETTLE_S * 1e9:
            self.unsettled.pop(key, None)
            return True
        if self.unsettled.get(key) == stamp:
            del self.unsettled[key]
            return True
        self.unsettled[key] = stamp
        return False

    def retry_due(self, key: Key) -> bool:
        return clock() >= self.failures.get(key, (0, 0.0))[1]

    def loaded(self, key: Key, failed: bool) -> None:
        if not failed:
            self.failures.pop(key, None)
            return
        count = self.failures.get(key, (0, 0.0))[0] + 1
        self.failures[key] = (count, clock() + retry_delay(count))


_memories: weakref.WeakKeyDictionary[ModelRepository, Memory] = weakref.WeakKeyDictionary()


def memory_of(repository: ModelRepository) -> Memory:
    return _memories.setdefault(repository, Memory())


def changes(repository: ModelRepository, memory: Memory | None = None) -> list[Change]:
    """What one pass must do, in directory order (blocking: it reads the disk)."""
    memory = memory if memory is not None else memory_of(repository)
    if not repository.models_dir.is_dir():  # unmounted for a moment: not "all removed"
        log.warning("models directory %s is missing; nothing changed", repository.models_dir)
        return []
    on_disk = version_dirs(repository.models_dir)
    by_model: dict[str, list[int]] = {}
    for name, version, _ in on_disk:
        by_model.setdefault(name, []).append(version)
    for name in by_model:
        repository.refresh_config(name)
    known = {(s.name, s.version): s for s in repository.states()}
    found: list[Change] = []
    for name, version, path in on_disk:
        key = (name, version)
        wanted = version in repository.wanted(name, by_model[name])
        state = known.get(key)
        if not (path / CARD_FILE).is_file():
            continue
        if state is None or (state.status is VersionStatus.UNLOADED and state.reason == REMOVED):
            if not wanted:
                found.append(Change("unwanted", name, version, path))
            elif memory.settled(key, fingerprint(path)):
                found.append(Change("new", name, version, path))
        elif state.status is VersionStatus.UNLOADED:
            if wanted and state.reason == OUTSIDE_POLICY:  # an admin unload stays unloaded
                found.append(Change("wanted", name, version, path))
        elif not wanted:
            found.append(Change("unwanted", name, version, path))
        elif state.status is not VersionStatus.LOADING:
            stamp = fingerprint(path)
            if stamp != state.fingerprint:
                if memory.settled(key, stamp):
                    found.append(Change("changed", name, version, path))
            elif state.status is VersionStatus.FAILED and memory.retry_due(key):
                found.append(Change("retry", name, version, path))
    for (name, version), state in known.items():
        if name not in by_model or version in by_model[name]:
            continue
        if not (state.status is VersionStatus.UNLOADED and state.reason == REMOVED):
            found.append(Change("removed", name, version, state.path))
    for name in repository.names():
        if name not in by_model:
            found.append(Change("gone", name, 0, repository.models_dir / name))
    return found


_locks: weakref.WeakKeyDictionary[ModelRepository, asyncio.Lock] = weakref.WeakKeyDictionary()


def changing(repository: ModelRepository) -> asyncio.Lock:
    """Held by a watcher pass and by each admin change: never two at once on one
    repository (a pass could reload a version an admin change just unloaded)."""
    return _locks.setdefault(repository, asyncio.Lock())


async def watch_once(repository: ModelRepository) -> list[Change]:
    """One pass, under :func:`changing`."""
    async with changing(repository):
        return await watch_pass(repository)


async def watch_pass(repository: ModelRepository) -> list[Change]:
    """One pass; the caller holds :func:`changing`."""
    memory = memory_of(repository)
    found = await anyio.to_thread.run_sync(changes, repository, memory)
    for change in found:
        key = (change.name, change.version)
        if change.kind == "unwanted":
            log.info("%s v%s: %s, unloaded", change.name, change.version, OUTSIDE_POLICY)
            repository.skip_version(change.name, change.version, change.path)
        elif change.kind == "removed":
            log.info("%s v%s: %s, unloaded", change.name, change.version, REMOVED)
            repository.remove_version(change.name, change.version)
            memory.failures.pop(key, None)
        elif change.kind == "gone":
            log.info("model %s: no version left in the models directory", change.name)
            repository.forget_model(change.name)
        else:
            if change.kind != "retry":  # new files: a fresh retry schedule
                memory.failures.pop(key, None)
            log.info("%s version found: %s v%s", change.kind, change.name, change.version)
            state = await anyio.to_thread.run_sync(
                repository.load_version, change.name, change.version, change.path
            )
            memory.loaded(key, state.status is VersionStatus.FAILED)
    return found


async def watch(repository: ModelRepository, interval: float) -> None:
    """Poll every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await watch_once(repository)
        except Exception:  # a bad directory must not end the watcher
            log.exception("model watcher pass failed")
