"""An append-only file of admin changes, shared by the workers of one start.

Each worker holds its own repository, so an admin call changes only the worker that
answered it unless every worker applies it too. Writers append one JSON line under an
exclusive ``flock``, so lines never interleave and the file's order is the one order
every worker applies. An entry's number is the byte offset where its line starts:
unique and increasing, without reading the file. Readers need no lock: they take only
complete lines, and a line still being written is read on the next pass.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

JOURNAL_ENV = "KERAS_SERVE_ADMIN_JOURNAL"  # set by python -m app for its workers
JOURNAL_FILE = "admin-journal.jsonl"


def journal_path() -> Path | None:
    """This start's journal when several workers share it, else None."""
    value = os.environ.get(JOURNAL_ENV)
    return Path(value) if value else None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0  # where this reader's next unread line starts

    def append(self, entry: dict[str, Any]) -> int:
        """Write ``entry`` as one line; returns its number (blocking)."""
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        with open(self.path, "ab") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                number = file.seek(0, os.SEEK_END)
                file.write(line)
                file.flush()
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)
        return number

    def read_new(self) -> list[tuple[int, dict[str, Any]]]:
        """Entries after the last ones read, with their numbers (blocking)."""
        try:
            if os.stat(self.path).st_size <= self._offset:
                return []
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        entries = []
        offset = self._offset
        for line in complete.splitlines(keepends=True):
            entries.append((offset, json.loads(line)))
            offset += len(line)
        self._offset = offset
        return entries
