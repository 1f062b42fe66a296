"""Pick up version directories dropped into the models directory while serving.

Training writes a version beside its destination and renames it into place, so a
directory with a model card is complete when it appears. Loading runs on a worker
thread; the repository switches it in only once it is loaded and warmed.
"""

from __future__ import annotations

import asyncio
import logging

import anyio

from app.artifacts import CARD_FILE, version_dirs
from app.serving.repository import ModelRepository

log = logging.getLogger(__name__)


def new_versions(repository: ModelRepository) -> list[tuple[str, int]]:
    known = {(s.name, s.version) for s in repository.states()}
    return [
        (name, version)
        for name, version, path in version_dirs(repository.models_dir)
        if (name, version) not in known and (path / CARD_FILE).is_file()
    ]


async def watch(repository: ModelRepository, interval: float) -> None:
    """Poll every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            for name, version in new_versions(repository):
                log.info("new version found: %s v%s", name, version)
                path = repository.models_dir / name / str(version)
                await anyio.to_thread.run_sync(repository.load_version, name, version, path)
        except Exception:  # a bad directory must not end the watcher
            log.exception("model watcher pass failed")
