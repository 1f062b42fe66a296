"""The admin journal that several workers share: one order, whole lines only, and the
replay a worker starting later does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.serving.broadcast import AdminChange, Broadcast, latest
from app.serving.journal import Journal
from app.serving.repository import ConfigError, ModelRepository
from tests.test_operations import copy_version


def test_readers_see_every_entry_once_in_the_writers_order(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    writer, reader = Journal(path), Journal(path)
    assert reader.read_new() == []  # no file yet
    first = writer.append({"op": "unload", "n": 1})
    second = Journal(path).append({"op": "load", "n": 2})  # another worker's writer
    assert first < second
    assert reader.read_new() == [
        (first, {"op": "unload", "n": 1}),
        (second, {"op": "load", "n": 2}),
    ]
    assert reader.read_new() == []
    with open(path, "ab") as file:
        file.write(b'{"op": "unl')  # a line still being written is left for later
    assert reader.read_new() == []
    with open(path, "ab") as file:
        file.write(b'oad"}\n')
    assert [entry for _, entry in reader.read_new()] == [{"op": "unload"}]


def test_a_late_worker_replays_only_the_last_change_per_target() -> None:
    changes = [
        AdminChange("unload", "iris", 1),
        AdminChange("load", "iris", 1),
        AdminChange("unload", "iris", 2),
        AdminChange("config", "iris", config={"labels": {"stable": 1}}),
        AdminChange("unload_model", "digits"),
        AdminChange("load", "digits", 2),
        AdminChange("config", "iris", config={}),
    ]
    kept = [change for _, change in latest(list(enumerate(changes)))]
    assert kept == [changes[1], changes[2], changes[4], changes[5], changes[6]]
    changes.append(AdminChange("load_model", "iris"))  # supersedes iris' version changes
    kept = [change for _, change in latest(list(enumerate(changes)))]
    assert kept == [changes[4], changes[5], changes[6], changes[7]]


def test_two_workers_apply_each_others_changes_in_one_order(tmp_path: Path) -> None:
    models = tmp_path / "models"
    copy_version(models, "iris", 1)
    copy_version(models, "iris", 2)
    workers = []
    for _ in range(2):
        repository = ModelRepository(models, "onnx")
        repository.load_all()
        workers.append(Broadcast(repository, Journal(tmp_path / "journal.jsonl")))
    a, b = workers

    def serving(worker: Broadcast) -> list[int]:
        return worker.repository.serving("iris")

    asyncio.run(a.submit(AdminChange("unload", "iris", 2)))
    assert (serving(a), serving(b)) == ([1], [1, 2])  # b has not followed yet
    asyncio.run(b.catch_up())
    assert serving(b) == [1]
    with pytest.raises(ConfigError):  # refused alike: b applies a's unload before its own
        asyncio.run(b.submit(AdminChange("config", "iris", config={"labels": {"stable": 2}})))
    asyncio.run(a.catch_up())  # a logs the same refusal and goes on
    asyncio.run(b.submit(AdminChange("load", "iris", 2)))
    asyncio.run(a.catch_up())
    assert serving(a) == serving(b) == [1, 2]
