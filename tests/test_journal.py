"""The admin journal that several workers share: one order, whole lines only, and the
replay a worker starting later does."""

from __future__ import annotations

from pathlib import Path

from app.serving.broadcast import AdminChange, latest
from app.serving.journal import Journal


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
