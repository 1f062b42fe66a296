"""Sampled request and response payload logs, written off the request path.

KServe's payload logger is the anchor: each sampled inference becomes a JSON record
(request id, time, model, version, protocol, raw inputs, outputs, latency, status),
written as a JSON line to stdout or a rotating file, or posted as CloudEvents to a
sink URL in the shape KServe's logger uses (``ce-type``
``org.kubeflow.serving.inference.request`` and ``...response``).

The request path only decides whether to sample and puts a record on a bounded
queue; a writer thread serialises and writes it. When the sink is slow and the
queue is full, records are dropped and counted, and requests never wait. Fields
named in the redaction list are replaced by a SHA-256 of their value; images are
logged as their shape and a SHA-256, never their pixels or bytes.
"""

from __future__ import annotations

import hashlib
import logging
import logging.handlers
import queue
import random
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from app.serving.inference import (
    Columns,
    ImageFile,
    InferenceRequest,
    InferenceResponse,
    Inputs,
    Rows,
    Tensors,
)

log = logging.getLogger(__name__)
SOURCE = "keras-serve"


def digest(value: Any) -> str:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value).tobytes()
    elif isinstance(value, bytes):
        data = value
    else:
        data = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return "sha256:" + hashlib.sha256(data).hexdigest()


class PayloadLogger:
    def __init__(
        self,
        rate: float,
        sink: str,
        redact: Iterable[str] = (),
        buffer: int = 1000,
        max_bytes: int = 50 * 1024 * 1024,
        backups: int = 5,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.rate = rate
        self.redact = frozenset(redact)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=buffer)
        self._on_drop = on_drop
        self._write = self._writer_for(sink, max_bytes, backups)
        self._thread = threading.Thread(target=self._run, name="payload-log", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ request path
    def sampled(self) -> bool:
        return self.rate >= 1 or random.random() < self.rate  # noqa: S311 - sampling, not secrets

    def record(
        self,
        request: InferenceRequest,
        protocol: str,
        name: str,
        response: InferenceResponse | None,
        started: float,
        error: BaseException | None,
        images: bool = False,
    ) -> None:
        """Hand one sampled exchange to the writer; never blocks, never raises.
        ``images``: the model takes images, which are logged as shape and hash."""
        entry = {
            "images": images,
            "request": request,
            "protocol": protocol,
            "model": name,
            "response": response,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "time": time.time(),
            "error": error,
        }
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            if self._on_drop is not None:
                self._on_drop()

    # ------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            try:
                self._write(self._render(entry))
            except Exception:  # a broken sink must not end the writer
                log.exception("payload log write failed")

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop (called at shutdown)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _render(self, entry: dict[str, Any]) -> dict[str, Any]:
        request: InferenceRequest = entry["request"]
        response: InferenceResponse | None = entry["response"]
        error: BaseException | None = entry["error"]
        record: dict[str, Any] = {
            "id": request.id,
            "time": datetime.fromtimestamp(entry["time"], UTC).isoformat(timespec="milliseconds"),
            "model": entry["model"],
            "version": response.version if response is not None else None,
            "protocol": entry["protocol"],
            "inputs": self._inputs(request.inputs, entry["images"]),
            "latency_ms": entry["latency_ms"],
            "status": "ok" if error is None else type(error).__name__,
        }
        if response is not None:
            record["outputs"] = {k: v.tolist() for k, v in response.outputs.items()}
        if error is not None:
            record["error"] = str(error)
        return record

    def _inputs(self, inputs: Inputs, images: bool) -> Any:
        if isinstance(inputs, ImageFile):
            return {inputs.field: {"bytes": len(inputs.data), "hash": digest(inputs.data)}}
        if isinstance(inputs, Rows):
            return [
                {k: self._value(k, v, images) for k, v in row.items()}
                if isinstance(row, dict)
                else self._value("", row, images)
                for row in inputs.rows
            ]
        if isinstance(inputs, Columns):
            return {k: self._value(k, v, images, True) for k, v in inputs.columns.items()}
        if isinstance(inputs, Tensors):
            return {t.name: self._value(t.name, t.values, images, True) for t in inputs.tensors}
        return None

    def _value(self, field: str, value: Any, images: bool, column: bool = False) -> Any:
        if images:
            try:
                array = np.asarray(value)
            except (ValueError, TypeError, OverflowError):
                return {"hash": digest(repr(value).encode())}
            return {"shape": list(array.shape), "hash": digest(array)}
        if field in self.redact:
            if column and isinstance(value, list | np.ndarray):
                return [digest(v) for v in list(value)]
            return digest(value)
        return value.tolist() if isinstance(value, np.ndarray) else value

    # ------------------------------------------------------------------ sinks
    def _writer_for(
        self, sink: str, max_bytes: int, backups: int
    ) -> Callable[[dict[str, Any]], None]:
        if sink == "stdout":

            def to_stdout(record: dict[str, Any]) -> None:
                sys.stdout.write(
                    orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n"
                )
                sys.stdout.flush()

            return to_stdout
        if sink.startswith(("http://", "https://")):
            return lambda record: post_cloudevents(sink, record)
        path = sink.removeprefix("file:")
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))

        def to_file(record: dict[str, Any]) -> None:
            line = orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY).decode()
            handler.emit(logging.makeLogRecord({"msg": line, "levelno": logging.INFO}))

        return to_file


def post_cloudevents(url: str, record: dict[str, Any], timeout: float = 5.0) -> None:
    """The exchange as two binary-mode CloudEvents, request then response, as KServe's
    payload logger sends them (ce-id is the request id, shared by both)."""
    event_id = record.get("id") or digest(record)[7:39]
    common = {
        "ce-specversion": "1.0",
        "ce-source": f"{SOURCE}/{record['model']}",
        "ce-id": event_id,
        "ce-time": record["time"],
        "ce-inferenceservicename": record["model"],
        "ce-modelversion": str(record.get("version")),
        "content-type": "application/json",
    }
    request_body = {k: record[k] for k in ("id", "model", "protocol", "inputs") if k in record}
    response_keys = ("id", "model", "version", "outputs", "status", "error", "latency_ms")
    response_body = {k: record[k] for k in response_keys if k in record}
    for kind, body in (("request", request_body), ("response", response_body)):
        headers = {**common, "ce-type": f"org.kubeflow.serving.inference.{kind}"}
        data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        message = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
        with urllib.request.urlopen(message, timeout=timeout):  # noqa: S310 - operator's sink URL
            pass
