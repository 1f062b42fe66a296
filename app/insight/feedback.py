"""Live accuracy: predictions kept for joining with the true labels clients send later.

Storage is SQLAlchemy Core, so ``DATABASE_URL`` may name SQLite (the default, a file
in the temp directory) or PostgreSQL. Predictions are written *off the request path*:
the data plane puts a small record on a bounded queue (``put_nowait``) and one
background thread inserts them in batches. When the queue is full the record is
dropped and counted, so the store can never slow down or fail a prediction.
Retention by age and by row count runs on the writer thread every minute.

A prediction is keyed by its request id (``X-Request-ID``, or the OIP ``id``) and the
instance's index in the request; when an id was used twice the newest row answers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)

from app.serving.errors import InvalidInput, Problem

log = logging.getLogger(__name__)
RETENTION_EVERY_S = 60.0
WRITE_EVERY_S = 1.0
WRITE_BATCH = 20_000

metadata = MetaData()
predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("label", String(256), nullable=False),
    Column("score", Float, nullable=True),  # binary: probability of the positive class
    Column("created", Float, nullable=False),
    Column("truth", String(256), nullable=True),
    Column("labelled", Float, nullable=True),
    Index("ix_predictions_request", "request_id", "idx"),
    Index("ix_predictions_version", "model", "version", "labelled"),
)


def _sqlite_pragmas(connection: Any, _: Any) -> None:
    """WAL lets readers (feedback, performance) work while the writer thread writes."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@dataclass
class Record:
    request_id: str
    model: str
    version: int
    labels: list[str]
    scores: list[float] | None
    created: float


@dataclass
class Label:
    """One piece of feedback: the true class of instance ``index`` of a request."""

    request_id: str
    index: int
    label: str


class FeedbackStore:
    def __init__(
        self,
        url: str,
        max_age_s: float,
        max_rows: int,
        queue_size: int = 10_000,
    ) -> None:
        sqlite = url.startswith("sqlite")
        # SQLite: wait for a lock (several workers share the file) instead of failing
        self.engine = create_engine(url, connect_args={"timeout": 30} if sqlite else {})
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=queue_size)
        self._last_retention = 0.0
        self._thread = threading.Thread(target=self._write_loop, name="feedback", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- write side
    def record(self, item: Record) -> None:
        """Never blocks, never raises: a full queue drops the record (counted)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _write_loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            # gather for a moment, asleep: one transaction per WRITE_EVERY_S, and no wake-up
            # per request (a get with a timeout wakes on every put and takes the GIL from
            # the event loop each time; measured, that cost a 40% slower prediction)
            if batch[-1] is not None:
                time.sleep(WRITE_EVERY_S)
            while len(batch) < WRITE_BATCH and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(b is None for b in batch)
            rows = [
                (
                    r.request_id,
                    i,
                    r.model,
                    r.version,
                    label,
                    None if r.scores is None else r.scores[i],
                    r.created,
                )
                for r in batch
                if r is not None
                for i, label in enumerate(r.labels)
            ]
            try:
                if rows:
                    self._insert(rows)
                    self.written += len(rows)
                if time.time() - self._last_retention > RETENTION_EVERY_S:
                    self.retain()
            except Exception:
                log.exception("could not store %d predictions", len(rows))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return

    def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction for a batch. Where the driver takes positional parameters (SQLite,
        psycopg), the rows go straight to its executemany: SQLAlchemy Core's per-row bind
        processing cost the writer about 20 us a row, all of it holding the GIL."""
        columns = ("request_id", "idx", "model", "version", "label", "score", "created")
        marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(
            self.engine.dialect.paramstyle
        )
        with self.engine.begin() as db:
            if marker is None:
                db.execute(
                    predictions.insert(), [dict(zip(columns, row, strict=True)) for row in rows]
                )
                return
            # table and column names are this module's constants; values are parameters
            names, markers = ", ".join(columns), ", ".join([marker] * len(columns))
            statement = f"INSERT INTO {predictions.name} ({names}) VALUES ({markers})"  # noqa: S608
            db.exec_driver_sql(statement, rows)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until queued records are written: feedback joins with them."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def retain(self) -> None:
        """Delete rows older than the age limit, then all but the newest ``max_rows``."""
        self._last_retention = time.time()
        with self.engine.begin() as db:
            db.execute(
                delete(predictions).where(predictions.c.created < time.time() - self.max_age_s)
            )
            cutoff = db.execute(
                select(predictions.c.id)
                .order_by(predictions.c.id.desc())
                .offset(self.max_rows)
                .limit(1)
            ).scalar()
            if cutoff is not None:
                db.execute(delete(predictions).where(predictions.c.id <= cutoff))

    # -------------------------------------------------------------- feedback
    def label(self, items: Sequence[Label], classes_of: Any) -> int:
        """Join true labels with stored predictions; InvalidInput lists every bad item.

        ``classes_of(model, version)`` gives a version's classes, or None when it is
        no longer served (its labels are then checked against nothing but presence).
        """
        self.flush()
        problems: list[Problem] = []
        matches: list[tuple[int, str]] = []
        with self.engine.connect() as db:
            for i, item in enumerate(items):
                row = db.execute(
                    select(predictions.c.id, predictions.c.model, predictions.c.version)
                    .where(predictions.c.request_id == item.request_id)
                    .where(predictions.c.idx == item.index)
                    .order_by(predictions.c.id.desc())
                    .limit(1)
                ).first()
                if row is None:
                    problems.append(
                        Problem(
                            "id",
                            f"no stored prediction has request id {item.request_id!r} and "
                            f"index {item.index} (unknown, or past retention)",
                            i,
                        )
                    )
                    continue
                classes = classes_of(row.model, row.version)
                if classes is not None and item.label not in classes:
                    problems.append(
                        Problem(
                            "label",
                            f"{item.label!r} is not a class of {row.model} v{row.version}; "
                            f"classes: {', '.join(classes)}",
                            i,
                            allowed=tuple(classes),
                        )
                    )
                    continue
                matches.append((row.id, item.label))
        if problems:
            raise InvalidInput(problems)
        now = time.time()
        with self.engine.begin() as db:
            for row_id, truth in matches:
                db.execute(
                    update(predictions)
                    .where(predictions.c.id == row_id)
                    .values(truth=truth, labelled=now)
                )
        return len(matches)

    def performance(self, model: str, version: int, window: int) -> dict[str, Any]:
        """Accuracy (and ROC AUC with scores) over the latest ``window`` labelled rows."""
        with self.engine.connect() as db:
            rows = db.execute(
                select(predictions.c.label, predictions.c.truth, predictions.c.score)
                .where(predictions.c.model == model)
                .where(predictions.c.version == version)
                .where(predictions.c.truth.is_not(None))
                .order_by(predictions.c.labelled.desc(), predictions.c.id.desc())
                .limit(window)
            ).all()
            stored = db.execute(
                select(func.count())
                .select_from(predictions)
                .where(predictions.c.model == model)
                .where(predictions.c.version == version)
            ).scalar()
        labels = [r.label for r in rows]
        truths = [r.truth for r in rows]
        n = len(rows)
        result: dict[str, Any] = {
            "labelled": n,
            "stored_predictions": int(stored or 0),
            "accuracy": sum(a == b for a, b in zip(labels, truths, strict=True)) / n if n else None,
        }
        if n and all(r.score is not None for r in rows):
            result["scores"] = [float(r.score) for r in rows]
            result["truths"] = truths
        return result

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            return
        self._thread.join(timeout=5.0)
        self.engine.dispose()


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Mann-Whitney ROC AUC with average ranks for ties; None without both classes."""
    pos = int(positive.sum())
    neg = len(positive) - pos
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))
