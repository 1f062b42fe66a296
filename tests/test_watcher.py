"""The repository watcher sees everything: copies made file by file, removed
directories, broken versions, and retries that back off."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.artifacts import CARD_FILE, ONNX_FILE, PIPELINE_FILE
from app.serving import watcher
from app.serving.errors import ModelNotFound
from app.serving.repository import REMOVED, ModelRepository, VersionStatus
from app.serving.watcher import retry_delay, watch_once
from tests.conftest import MODELS_DIR
from tests.repository_copies import copy_version as renamed_copy
from tests.test_operations import IRIS_ROW, copy_version, started, truncate

HOUR_AGO = time.time() - 3600


def watch(repository: ModelRepository) -> None:
    asyncio.run(watch_once(repository))


def status(repository: ModelRepository, version: int) -> VersionStatus | None:
    state = repository.versions("iris").get(version)
    return state.status if state else None


def copy_file(source: Path, target: Path, old: bool = False) -> None:
    """Copied now (a fresh modification time), or as if an hour ago."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    if old:
        os.utime(target, (HOUR_AGO, HOUR_AGO))


def aged(directory: Path) -> Path:
    """As if copied an hour ago: settled."""
    for file in directory.rglob("*"):
        os.utime(file, (HOUR_AGO, HOUR_AGO))
    return directory


@pytest.fixture
def repository(tmp_path: Path) -> ModelRepository:
    copy_version(tmp_path, "iris", 1)
    found = ModelRepository(tmp_path, "onnx")
    found.load_all()
    return found


def test_a_copy_made_file_by_file_is_loaded_once_complete_and_settled(
    repository: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher, "SETTLE_S", 600)  # a slow machine must not settle it early
    source, target = MODELS_DIR / "iris" / "2", repository.models_dir / "iris" / "2"
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name != CARD_FILE)  # cp -r as it may go: the card first
    for file in files:
        if file.name == ONNX_FILE:  # the largest file, written in two halves
            data = (source / file).read_bytes()
            (target / file).write_bytes(data[: len(data) // 2])
            watch(repository)
            with open(target / file, "ab") as out:
                out.write(data[len(data) // 2 :])
        else:
            copy_file(source / file, target / file)
        watch(repository)
        assert status(repository, 2) is None, f"loaded while {file} was being copied"
    watch(repository)  # nothing changed since the last pass: settled
    assert status(repository, 2) is VersionStatus.AVAILABLE


def test_a_load_that_came_too_early_is_retried_when_the_files_change(
    repository: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher, "SETTLE_S", 600)
    source, target = MODELS_DIR / "iris" / "2", repository.models_dir / "iris" / "2"
    for file in (CARD_FILE, PIPELINE_FILE):  # settled long ago, yet incomplete
        copy_file(source / file, target / file, old=True)
    watch(repository)
    state = repository.versions("iris")[2]
    assert state.status is VersionStatus.FAILED and ONNX_FILE in state.reason
    copy_file(source / ONNX_FILE, target / ONNX_FILE)
    watch(repository)  # changed, still settling
    watch(repository)
    assert status(repository, 2) is VersionStatus.AVAILABLE


def test_failed_versions_are_retried_with_backoff_and_at_once_when_changed(
    repository: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4, 9, 10, 50)] == [1, 2, 4, 8, 256, 300, 300]
    now = [1000.0]
    monkeypatch.setattr(watcher, "clock", lambda: now[0])
    loads: list[int] = []
    real_load = repository.load_version

    def counted(name: str, version: int, path: Path) -> object:
        loads.append(version)
        return real_load(name, version, path)

    monkeypatch.setattr(repository, "load_version", counted)
    broken = copy_version(repository.models_dir, "iris", 2)
    truncate(broken / ONNX_FILE)
    aged(broken)
    watch(repository)
    assert status(repository, 2) is VersionStatus.FAILED and len(loads) == 1
    for advance, tried in ((0, 1), (1.1, 2), (1.1, 2), (1.0, 3), (3.0, 3), (1.1, 4)):
        now[0] += advance
        watch(repository)
        assert len(loads) == tried, (advance, loads)
    assert status(repository, 1) is VersionStatus.AVAILABLE  # the others kept serving
    copy_file(MODELS_DIR / "iris" / "2" / ONNX_FILE, broken / ONNX_FILE)  # fixed: no waiting
    watch(repository)
    watch(repository)
    assert status(repository, 2) is VersionStatus.AVAILABLE and len(loads) == 5


def test_a_removed_version_is_unloaded_and_a_removed_model_forgotten(
    repository: ModelRepository,
) -> None:
    aged(copy_version(repository.models_dir, "iris", 2))
    aged(renamed_copy(repository.models_dir, ("iris", 1), "flowers", 1))
    watch(repository)
    assert status(repository, 2) is VersionStatus.AVAILABLE
    held = repository.get("iris", 2)  # a request already holding it
    shutil.rmtree(repository.models_dir / "iris" / "2")
    watch(repository)
    state = repository.versions("iris")[2]
    assert (state.status, state.reason, state.model) == (VersionStatus.UNLOADED, REMOVED, None)
    with pytest.raises(ModelNotFound, match=REMOVED):
        repository.get("iris", 2)
    assert repository.default_version("iris") == 1
    assert held.runtime is not None  # still whole for the request that holds it
    shutil.rmtree(repository.models_dir / "flowers")
    watch(repository)
    assert "flowers" not in repository.names()
    with pytest.raises(ModelNotFound):
        repository.get("flowers")
    aged(copy_version(repository.models_dir, "iris", 2))  # back again
    watch(repository)
    assert status(repository, 2) is VersionStatus.AVAILABLE


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[TestClient]:
    copy_version(tmp_path, "iris", 1)
    copy_version(tmp_path, "iris", 2)
    renamed_copy(tmp_path, ("iris", 1), "flowers", 1)
    with started(tmp_path, watch_interval_s=0.1) as client:
        yield client


def wait_for(check: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    pytest.fail(f"not within {seconds} s: {check}")


def test_served_broken_removed_and_fixed_versions(serving: TestClient, tmp_path: Path) -> None:
    def version_status(version: int) -> tuple[str, str]:
        models = serving.get("/health/ready").json()["models"]
        found = [m for m in models if m["name"] == "iris" and m["version"] == version]
        return (found[0]["status"], found[0]["reason"]) if found else ("", "")

    def default_version() -> int:
        answer = serving.post("/models/iris/predict", json=IRIS_ROW)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["version"])

    broken = copy_version(tmp_path, "iris", 2, 3)
    truncate(broken / ONNX_FILE)
    wait_for(lambda: version_status(3)[0] == "FAILED")
    assert ONNX_FILE in version_status(3)[1]
    assert default_version() == 2  # the others keep serving
    copy_file(MODELS_DIR / "iris" / "2" / ONNX_FILE, broken / ONNX_FILE)  # its files change
    wait_for(lambda: version_status(3)[0] == "AVAILABLE")
    assert default_version() == 3

    shutil.rmtree(broken)
    wait_for(lambda: version_status(3) == ("UNLOADED", REMOVED))
    pinned = serving.post("/models/iris/versions/3/predict", json=IRIS_ROW)
    assert pinned.status_code == 404 and REMOVED in pinned.json()["error"]
    assert default_version() == 2

    shutil.rmtree(tmp_path / "flowers")
    wait_for(lambda: "flowers" not in {m["name"] for m in serving.get("/models").json()})
    assert serving.post("/models/flowers/predict", json=IRIS_ROW).status_code == 404
