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
import collections
import io
import json
import logging
import re
import sys
import threading
import time
from typing import IO, Any

from app.observability.context import request_id
from app.observability.tracing import trace_id

# attributes every LogRecord has; anything else was passed through ``extra=``
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

ACCESS_LOGGER = "app.access"
ACCESS_FORMAT = "%s %s %s %.2fms"  # status: an HTTP code, or a gRPC status name
QUEUE_LIMIT = 50_000  # lines waiting for the writer; beyond, new lines are dropped
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(trace_id)s] %(message)s"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

access = logging.getLogger(ACCESS_LOGGER)
# what the middleware hands over: time, method, path, status, seconds, id, model, version,
# trace id
AccessEntry = tuple[float, str, str, int | str, float, str, str, str, str]


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
        if not hasattr(record, "trace_id"):
            record.trace_id = trace_id()
        return True


class SafeTextFormatter(logging.Formatter):
    """The text format with control characters escaped.

    The first line of a record is escaped whole. A traceback keeps its line breaks (it
    needs them to be read), but every line after the first starts with ``| `` so that
    an exception message carrying a newline cannot pass for a record of its own.
    """

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def format_access(self, entry: AccessEntry) -> str:
        """The access line as :meth:`format` would write it, without a ``LogRecord``
        (the writer thread formats thousands a second)."""
        created, method, path, status, seconds, rid, _, _, trace = entry
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(created))
        millis = int((created - second) * 1000)
        return (
            f"{self._stamp},{millis:03d} INFO {ACCESS_LOGGER} [{escape_controls(rid)} {trace}] "
            f"{escape_controls(method)} {escape_controls(path)} {status} {seconds * 1000:.2f}ms"
        )

    def formatMessage(self, record: logging.LogRecord) -> str:
        for name in ("request_id", "trace_id"):  # records that missed the filter
            if not hasattr(record, name):
                setattr(record, name, "-")
        return escape_controls(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head, newline, rest = text.partition("\n")
        if not newline:
            return text
        rest = _CONTROL_BUT_NEWLINE.sub(_escape_one, rest)
        return head + "\n" + "\n".join("| " + line for line in rest.split("\n"))


class JsonFormatter(logging.Formatter):
    def format_access(self, entry: AccessEntry) -> str:
        """The access line as :meth:`format` would write it, without a ``LogRecord``."""
        created, method, path, status, seconds, rid, model, version, trace = entry
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        return json.dumps(
            {
                "time": f"{stamp}.{int((created - int(created)) * 1000):03d}Z",
                "level": "info",
                "logger": ACCESS_LOGGER,
                "message": ACCESS_FORMAT % (method, path, status, seconds * 1000),
                "request_id": rid,
                "trace_id": trace,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "model": model,
                "version": version,
            }
        )

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


def access_record(entry: AccessEntry) -> logging.LogRecord:
    """The access line's ``LogRecord``, built from what the middleware handed over."""
    created, method, path, status, seconds, rid, model, version, trace = entry
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
    record.trace_id = trace
    record.method = method
    record.path = path
    record.status = status
    record.duration_ms = round(seconds * 1000, 3)
    record.model = model
    record.version = version
    return record


class LogWriter:
    """Writes queued records (or access tuples) from a daemon thread, in batches.

    The thread wakes every ``interval`` seconds, not per line: waking it per line
    would hand the GIL back and forth on every request, which costs more than the
    formatting it moves off the request path. A producer pays for one
    ``deque.append``; past ``limit`` queued lines it drops the line and counts it.
    """

    def __init__(
        self, handler: logging.Handler, limit: int = QUEUE_LIMIT, interval: float = 0.1
    ) -> None:
        self.handler = handler
        self.limit = limit
        self.interval = interval
        self.queue: collections.deque[Any] = collections.deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._batches = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, item: logging.LogRecord | AccessEntry) -> None:
        if len(self.queue) < self.limit:
            self.queue.append(item)
        else:
            self.dropped += 1  # only under a flood the writer cannot follow

    def _write_batch(self) -> None:
        popleft = self.queue.popleft
        handle = self.handler.handle
        # our own formatters write access lines straight from the tuple
        fast = getattr(self.handler.formatter, "format_access", None)
        stream: IO[str] | None = getattr(self.handler, "stream", None)
        lines: list[str] = []
        while True:
            try:
                item = popleft()
            except IndexError:
                break
            if isinstance(item, logging.LogRecord):
                if lines and stream is not None:
                    stream.write("\n".join(lines) + "\n")
                    lines.clear()
                handle(item)
            elif fast is not None and stream is not None:
                lines.append(fast(item))
            else:
                handle(access_record(item))
        if lines and stream is not None:
            stream.write("\n".join(lines) + "\n")
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            handle(
                logging.LogRecord(
                    "app.logs", logging.WARNING, "", 0,
                    "%d log lines dropped: the log writer could not keep up", (dropped,), None,
                )
            )  # fmt: skip
        self.handler.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            self._write_batch()
            with self._written:
                self._batches += 1
                self._written.notify_all()
            if stopping:
                return

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is written."""
        if not self._thread.is_alive():
            self._write_batch()
            return
        with self._written:
            target = self._batches + 2  # a batch that started after this call, finished
            self._wake.set()
            self._written.wait_for(
                lambda: self._batches >= target or not self._thread.is_alive(), timeout
            )

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop (``atexit``; idempotent)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._write_batch()


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
    method: str,
    path: str,
    status: int | str,
    seconds: float,
    rid: str,
    model: str,
    version: str,
    trace: str = "-",
) -> None:
    """One access line, cheaply: a tuple onto the writer's queue when the process has
    one (``python -m app``), else an ordinary record (tests, other servers)."""
    if not access.isEnabledFor(logging.INFO):
        return
    entry = (time.time(), method, path, status, seconds, rid, model, version, trace)
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
