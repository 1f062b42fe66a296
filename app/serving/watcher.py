"""Keep the repository in step with the models directory while serving.

Each pass (every ``WATCH_INTERVAL_S``):

- a model's ``config.json`` that changed is re-read; versions its policy now wants
  are loaded, versions it no longer wants are unloaded;
- a new version directory with a model card is loaded, when the policy wants it;
- a loaded version whose directory changed (retrained with ``--overwrite``, or
  replaced) is reloaded with the same checks and atomic switch as the admin reload:
  a broken replacement leaves the old one serving.

A change is seen through a fingerprint of the directory (inode, and every file's
path, size and modification time), taken before each load. Training writes a
version beside its destination and renames it into place, so a directory with a
model card is complete when it appears. Loading runs on a worker thread; the
repository switches a version in only once it is loaded and warmed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

import anyio

from app.artifacts import CARD_FILE, version_dirs
from app.serving.repository import (
    OUTSIDE_POLICY,
    ModelRepository,
    VersionStatus,
    fingerprint,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    kind: str  # "new", "changed", "wanted" (policy now selects it), "unwanted"
    name: str
    version: int
    path: Path


def changes(repository: ModelRepository) -> list[Change]:
    """What one pass must do, in directory order (blocking: it reads the disk)."""
    on_disk = version_dirs(repository.models_dir)
    by_model: dict[str, list[int]] = {}
    for name, version, _ in on_disk:
        by_model.setdefault(name, []).append(version)
    for name in by_model:
        repository.refresh_config(name)
    known = {(s.name, s.version): s for s in repository.states()}
    found: list[Change] = []
    for name, version, path in on_disk:
        wanted = version in repository.wanted(name, by_model[name])
        state = known.get((name, version))
        if not (path / CARD_FILE).is_file():
            continue
        if state is None:
            found.append(Change("new" if wanted else "unwanted", name, version, path))
        elif state.status is VersionStatus.UNLOADED:
            if wanted and state.reason == OUTSIDE_POLICY:  # an admin unload stays unloaded
                found.append(Change("wanted", name, version, path))
        elif not wanted:
            found.append(Change("unwanted", name, version, path))
        elif state.status is not VersionStatus.LOADING and fingerprint(path) != state.fingerprint:
            found.append(Change("changed", name, version, path))
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
    found = await anyio.to_thread.run_sync(changes, repository)
    for change in found:
        if change.kind == "unwanted":
            log.info("%s v%s: %s, unloaded", change.name, change.version, OUTSIDE_POLICY)
            repository.skip_version(change.name, change.version, change.path)
            continue
        log.info("%s version found: %s v%s", change.kind, change.name, change.version)
        await anyio.to_thread.run_sync(
            repository.load_version, change.name, change.version, change.path
        )
    return found


async def watch(repository: ModelRepository, interval: float) -> None:
    """Poll every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await watch_once(repository)
        except Exception:  # a bad directory must not end the watcher
            log.exception("model watcher pass failed")
