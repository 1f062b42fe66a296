"""Log setup: plain text or one JSON object per line, written off the request path.

Every record goes through one in-process queue to a writer thread that formats and
writes in batches (one ``write`` and one ``flush`` per batch rather than per line), so a
request pays for a queue put, not for formatting and a system call. The access log
skips even the ``LogRecord``: the middleware hands over a tuple (:func:`log_access`) and
the writer thread builds the record. The queue is bounded: past it, lines are dropped
and counted rather than growing memory under a flood. The writer drains the queue at
exit (``atexit``), so a SIGTERM-drained server loses no line.

Text logs escape control characters (CR, LF, ESC, the other C0 and C1 codes, and the
Unicode line separators) in every field, so a client-chosen path, header or id cannot
forge a line or send escape sequences to a terminal. JSON logs escape them by design.
"""

from __future__ import annotations

import atexit
import io
import json
import logging
import queue
import re
import sys
import threading
import time
from typing import IO, Any

from app.observability.context import request_id

# attributes every LogRecord has; anything else was passed through ``extra=``
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

ACCESS_LOGGER = "app.access"
ACCESS_FORMAT = "%s %s %d %.2fms"
QUEUE_LIMIT = 50_000  # lines waiting for the writer; beyond, new lines are dropped
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

access = logging.getLogger(ACCESS_LOGGER)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\r``, ``\\x1b``)."""
    return _CONTROL.sub(_escape_one, text)


class RequestIdFilter(logging.Filter):
    """Stamps the current request's id; it runs where the record is made (the request's
    task), not in the writer thread, which has no request context."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class SafeTextFormatter(logging.Formatter):
    """The text format with control characters escaped.

    The first line of a record is escaped whole. A traceback keeps its line breaks (it
    needs them to be read), but every line after the first starts with ``| `` so that
    an exception message carrying a newline cannot pass for a record of its own.
    """

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head, newline, rest = text.partition("\n")
        if not newline:
            return text
        rest = _CONTROL_BUT_NEWLINE.sub(_escape_one, rest)
        return head + "\n" + "\n".join("| " + line for line in rest.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# ------------------------------------------------------------------ the writer thread
AccessEntry = tuple[float, str, str, int, float, str, str, str]


def access_record(entry: AccessEntry) -> logging.LogRecord:
    """The access line's ``LogRecord``, built from what the middleware handed over."""
    created, method, path, status, seconds, rid, model, version = entry
    record = logging.LogRecord(
        ACCESS_LOGGER,
        logging.INFO,
        "",
        0,
        ACCESS_FORMAT,
        (method, path, status, seconds * 1000),
        None,
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    record.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
    record.request_id = rid
    record.method = method
    record.path = path
    record.status = status
    record.duration_ms = round(seconds * 1000, 3)
    record.model = model
    record.version = version
    return record


class LogWriter:
    """Drains the queue in a daemon thread: records (or access tuples) in, batched writes out."""

    def __init__(self, handler: logging.Handler, limit: int = QUEUE_LIMIT) -> None:
        self.handler = handler
        self.limit = limit
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.dropped = 0
        self._stop = object()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, item: logging.LogRecord | AccessEntry) -> None:
        if self.queue.qsize() < self.limit:
            self.queue.put(item)
        else:
            self.dropped += 1  # only under a flood the writer cannot follow

    def _write(self, item: Any) -> None:
        if isinstance(item, threading.Event):  # a flush() waiting for what came before it
            self.handler.flush()
            item.set()
            return
        record = item if isinstance(item, logging.LogRecord) else access_record(item)
        self.handler.handle(record)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            while item is not self._stop:
                self._write(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                self.handler.handle(
                    logging.LogRecord(
                        "app.logs", logging.WARNING, "", 0,
                        "%d log lines dropped: the log writer could not keep up", (dropped,), None,
                    )
                )  # fmt: skip
            self.handler.flush()
            if item is self._stop:
                return

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is written."""
        if self._thread.is_alive():
            done = threading.Event()
            self.queue.put(done)
            done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop (``atexit``; idempotent)."""
        if self._thread.is_alive():
            self.queue.put(self._stop)
            self._thread.join(timeout)
        self.handler.flush()


_writer: LogWriter | None = None


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that leaves flushing to the writer, once per batch."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class QueueingHandler(logging.Handler):
    """The root handler in every process: hands records to the writer thread.

    The message is merged with its arguments here (records are rare outside the
    access log, and arguments may change after the call); formatting and writing
    happen in the writer thread.
    """

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        record.msg = record.getMessage()
        record.args = None
        self.writer.put(record)


def queueing_handler(as_json: bool, stream: str = "stderr") -> QueueingHandler:
    """``dictConfig`` factory: the process's writer thread, the real handler behind it,
    and the queue handler in front. Uvicorn applies the config in each worker, so each
    process gets its own writer."""
    global _writer
    target: IO[str] = getattr(sys, stream)
    try:
        out: IO[str] = open(  # noqa: SIM115 (lives as long as the process)
            target.fileno(), "w", buffering=1 << 16, encoding="utf-8",
            errors="backslashreplace", closefd=False,
        )  # fmt: skip
    except (OSError, ValueError, io.UnsupportedOperation):  # no real file behind it
        out = target
    handler = BufferedStreamHandler(out)
    handler.setFormatter(JsonFormatter() if as_json else SafeTextFormatter())
    if _writer is not None:
        _writer.close()
    _writer = LogWriter(handler)
    return QueueingHandler(_writer)


def log_access(
    method: str, path: str, status: int, seconds: float, rid: str, model: str, version: str
) -> None:
    """One access line, cheaply: a tuple onto the writer's queue when the process has
    one (``python -m app``), else an ordinary record (tests, other servers)."""
    if not access.isEnabledFor(logging.INFO):
        return
    entry = (time.time(), method, path, status, seconds, rid, model, version)
    if _writer is not None:
        _writer.put(entry)
    else:
        access.handle(access_record(entry))


def flush_logs() -> None:
    """Write out what is queued so far (the writer keeps running)."""
    if _writer is not None:
        _writer.flush()


def uvicorn_log_config(level: str, as_json: bool) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that uvicorn applies in every worker process."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "handlers": {
            "default": {
                "()": queueing_handler,
                "as_json": as_json,
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # the app's own access log (with request id, model and timing) replaces it
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
