"""Admin changes that every worker applies, in one order.

With ``WORKERS`` > 1 an admin change (load, reload, unload, labels and other config,
OIP repository load and unload) is not applied directly by the worker that got the
call: it is appended to this start's :class:`~app.serving.journal.Journal`, then that
worker applies the journal up to it and answers with its outcome. Every other worker
applies new entries every ``FOLLOW_INTERVAL_S`` (0.5 s), so within that time plus
the time the change itself takes there (a load) every worker serves the same versions.
Applying one order everywhere means that two calls racing on two workers end the same
on both. A worker that starts later (or replaces one that died) loads the models
directory, then replays the journal, keeping the last change per target.

With one worker there is no journal, and a change applies at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

import anyio

from app.artifacts import ModelConfig
from app.serving import control
from app.serving.errors import ModelNotFound
from app.serving.journal import Journal
from app.serving.repository import ModelRepository
from app.serving.watcher import changing, watch_pass

log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 0.5
Op = Literal["load", "unload", "load_model", "unload_model", "config"]


@dataclass(frozen=True)
class AdminChange:
    op: Op
    name: str
    version: int | None = None  # load and unload: one version
    config: dict[str, Any] | None = None  # config: the whole config in force
    pid: int = 0  # the worker that got the call (the one that writes config.json)


def latest(entries: list[tuple[int, AdminChange]]) -> list[tuple[int, AdminChange]]:
    """What a worker starting now must replay: per version, per model (whole-model load
    and unload supersede earlier version changes) and per config, the last change."""
    seen: set[tuple[str, str, int | None]] = set()
    kept = []
    for number, change in reversed(entries):
        key: tuple[str, str, int | None] = ("version", change.name, change.version)
        if change.op == "config":
            key = ("config", change.name, None)
        elif change.op in ("load_model", "unload_model"):
            key = ("model", change.name, None)
        elif ("model", change.name, None) in seen:
            continue
        if key not in seen:
            seen.add(key)
            kept.append((number, change))
    return kept[::-1]


class Broadcast:
    def __init__(self, repository: ModelRepository, journal: Journal | None) -> None:
        self.repository = repository
        self.journal = journal

    async def submit(self, change: AdminChange) -> Any:
        """Apply ``change`` here and, through the journal, on every worker; returns its
        outcome here, or raises what it raised (ModelNotFound, LoadFailed, ConfigError)."""
        change = AdminChange(**{**asdict(change), "pid": os.getpid()})
        async with changing(self.repository):
            if self.journal is None:
                return await self._apply(change, own=True)
            number = await anyio.to_thread.run_sync(self.journal.append, asdict(change))
            return await self._catch_up(mine=number)

    async def catch_up(self, replay: bool = False) -> None:
        """Apply the entries other workers wrote since the last call; ``replay``: the
        first call of a worker that just loaded the models directory."""
        if self.journal is None:
            return
        async with changing(self.repository):
            await self._catch_up(replay=replay)

    async def follow(self, interval: float = FOLLOW_INTERVAL_S) -> None:
        """Catch up every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.catch_up()
            except Exception:  # a bad entry must not stop the following ones
                log.exception("applying admin changes from other workers failed")

    async def _catch_up(self, mine: int | None = None, replay: bool = False) -> Any:
        assert self.journal is not None
        found = await anyio.to_thread.run_sync(self.journal.read_new)
        entries = [(number, AdminChange(**entry)) for number, entry in found]
        if replay:
            entries = latest(entries)
        outcome: Any = None
        failure: Exception | None = None
        for number, change in entries:
            try:
                result = await self._apply(change, own=number == mine)
            except Exception as exc:  # the caller's goes to it, after the rest is applied
                if number == mine:
                    failure = exc
                else:  # as the worker that got the call answered
                    log.info("admin change %s on %s: %s", change.op, change.name, exc)
                continue
            if number == mine:
                outcome = result
        if failure is not None:
            raise failure
        return outcome

    async def _apply(self, change: AdminChange, own: bool) -> Any:
        repository, name, version = self.repository, change.name, change.version
        if change.op == "load":
            assert version is not None
            path = repository.models_dir / name / str(version)
            if not path.is_dir():
                raise ModelNotFound(name, version, "is not in the models directory")
            return await anyio.to_thread.run_sync(repository.load_version, name, version, path)
        if change.op == "unload":
            assert version is not None
            return repository.unload_version(name, version)
        if change.op == "load_model":
            return await anyio.to_thread.run_sync(control.load_model, repository, name)
        if change.op == "unload_model":
            return control.unload_model(repository, name)
        config = ModelConfig.model_validate(change.config)
        repository.versions(name)  # ModelNotFound for an unknown model
        written = repository.set_config(name, config, persist=own)  # one worker writes it
        await watch_pass(repository)  # load or unload what the policy changed
        return written
