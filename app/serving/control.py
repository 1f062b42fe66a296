"""Repository control for the Open Inference Protocol's model repository extension.

Triton's extension works on whole models: the index lists every version with its
state, and load and unload act on every version of a model
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_model_repository.md).
The REST and gRPC adapters both call these functions, so both answer alike; the
per-version admin API (``/admin``) stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.artifacts import version_dirs
from app.serving.errors import ModelNotFound, ServingError
from app.serving.repository import REMOVED, ModelRepository, VersionState, VersionStatus

# Triton's state names: a failed or unloaded version is UNAVAILABLE, with the reason
STATES = {
    VersionStatus.AVAILABLE: "READY",
    VersionStatus.LOADING: "LOADING",
    VersionStatus.FAILED: "UNAVAILABLE",
    VersionStatus.UNLOADED: "UNAVAILABLE",
}


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: int
    state: str
    reason: str


class LoadFailed(ServingError):
    """A version of the model could not be loaded (the previous one, if any, still serves)."""


def index(repository: ModelRepository, ready_only: bool = False) -> list[IndexEntry]:
    """Every version known to the repository or present on disk, by name and version."""
    entries = {
        (s.name, s.version): IndexEntry(s.name, s.version, STATES[s.status], reason(s))
        for s in repository.states()
    }
    for name, version, _ in version_dirs(repository.models_dir):
        entries.setdefault((name, version), IndexEntry(name, version, "UNAVAILABLE", "not loaded"))
    found = [entries[key] for key in sorted(entries)]
    return [e for e in found if e.state == "READY"] if ready_only else found


def reason(state: VersionState) -> str:
    if state.status is VersionStatus.UNLOADED:
        return REMOVED if state.reason == REMOVED else "unloaded"
    if state.status is VersionStatus.FAILED and state.model is not None:
        return f"{state.reason} (the previously loaded copy still serves)"
    return state.reason


def load_model(repository: ModelRepository, name: str) -> list[VersionState]:
    """Load (or reload) every version of ``name`` found on disk; blocking, so call it
    on a worker thread. Raises ModelNotFound or LoadFailed."""
    found = version_dirs(repository.models_dir)
    paths = [(version, path) for model, version, path in found if model == name]
    if not paths:
        raise ModelNotFound(
            name, None, "is not in the models directory", known={m for m, _, _ in found}
        )
    states = [repository.load_version(name, version, path) for version, path in paths]
    failed = [s for s in states if s.status is VersionStatus.FAILED]
    if failed:
        text = "; ".join(f"version {s.version}: {s.reason}" for s in failed)
        raise LoadFailed(f"failed to load model {name!r}: {text}")
    return states


def unload_model(repository: ModelRepository, name: str) -> list[VersionState]:
    """Stop serving every version of ``name``; requests already running finish."""
    versions = repository.versions(name)  # ModelNotFound names the known models
    return [
        repository.unload_version(name, version)
        if state.status is not VersionStatus.UNLOADED
        else state
        for version, state in versions.items()
    ]
