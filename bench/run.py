"""Benchmark keras-serve over loopback with wrk and print markdown tables.

The bench starts every server it needs itself (one uvicorn worker, a free loopback
port), times start to ready, drives each row with ``wrk`` for a fixed duration at
each concurrency, samples the server's memory meanwhile, stops the server, and
prints the machine, a start-up table, a throughput table and a check of the
targets of issue 5. See bench/README.md::

    .venv/bin/python bench/run.py                 # every row, 10 s per row
    .venv/bin/python bench/run.py --quick         # 1 s per row, no warm-up: proves it runs
    .venv/bin/python bench/run.py --rows noop,native --concurrency 16,64 --output out.md
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "request.lua"
PEER_SCRIPT = BENCH / "kserve_peer.py"
MODELS_DIR = ROOT / "models"
GROUPS = (
    "noop",
    "native",
    "v2",
    "tfserving",
    "nolog",
    "workers",
    "triton",
    "grpc",
    "naive",
    "batching",
    "peer",
)
# (label, model name, pinned version or None for the highest)
MODELS: tuple[tuple[str, str, int | None], ...] = (
    ("income", "income", None),
    ("salary", "salary", None),
    ("iris", "iris", None),
    ("digits v1", "digits", 1),
    ("digits v2", "digits", 2),
)
TABULAR = ("income", "salary", "iris")
DIGITS = ("digits v1", "digits v2")
PEER_MODEL = ("digits", 2)
TRITON_MODEL = ("digits", 1)
TRITON_SCRIPT = BENCH / "triton_peer.py"
GRPC_MODELS = ("digits v1", "digits v2", "income")
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
# the gRPC no-op: ServerLive with an empty message (a gRPC frame: flag, length 0)
GRPC_LIVE = "/inference.GRPCInferenceService/ServerLive"
GRPC_EMPTY = b"\x00\x00\x00\x00\x00"
# native req/s at c=64 in the README table before the single data plane (access log off,
# same machine kind, an earlier run): the floor issue 11 sets for the native figures
PREVIOUS_NATIVE = {
    "income": 7130,
    "salary": 7928,
    "iris": 8343,
    "digits v1": 4409,
    "digits v2": 3758,
}


# ----------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Server:
    """One server configuration; ``runtime`` is ``kserve`` or ``triton`` for the peers.

    keras-serve runs with a user's defaults except where a field says otherwise.
    """

    key: str
    runtime: str
    batching: bool = True
    workers: int = 1
    access_log: bool = True
    grpc_server: str = "asyncio"

    @property
    def label(self) -> str:
        if self.runtime == "kserve":
            return "KServe (peer)"
        if self.runtime == "triton":
            return "Triton 2.51 via PyTriton (peer)"
        label = f"{self.runtime}, batching {'on' if self.batching else 'off'}"
        if self.workers > 1:
            label += f", {self.workers} workers"
        if not self.access_log:
            label += ", access log off"
        if self.grpc_server != "asyncio":
            label += f", GRPC_SERVER={self.grpc_server}"
        return label


@dataclass(frozen=True)
class Row:
    """One table row: a request sent to one server, measured at each concurrency."""

    id: str
    group: str
    label: str
    server: Server
    method: str
    path: str
    body: bytes | None = None
    protocol: str = "http"  # "grpc": driven by h2load on the server's gRPC port


@dataclass
class Measurement:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    peak_rss_mb: float

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Startup:
    server: Server
    ready_s: float | None = None
    rss_ready_mb: float | None = None
    peak_rss_mb: float | None = None
    problem: str | None = None


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, dict[int, Measurement]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    startups: dict[str, Startup] = field(default_factory=dict)

    def at(self, row_id: str, concurrency: int) -> Measurement | None:
        return self.figures.get(row_id, {}).get(concurrency)


ONNX = Server("onnx", "onnx")
ONNX_OFF = Server("onnx-off", "onnx", batching=False)
TF = Server("tf", "tensorflow")
TF_OFF = Server("tf-off", "tensorflow", batching=False)
KERAS = Server("keras", "keras", batching=False)
PEER = Server("peer", "kserve")
TRITON = Server("triton", "triton")
ONNX_NOLOG = Server("onnx-nolog", "onnx", access_log=False)
ONNX_2 = Server("onnx-2w", "onnx", workers=2)
ONNX_GRPCIO = Server("onnx-grpcio", "onnx", grpc_server="grpcio")


# ----------------------------------------------------------------------------- rows
def card(name: str, version: int | None) -> dict[str, Any]:
    """The model card of a version (the highest when ``version`` is None)."""
    folder = MODELS_DIR / name
    chosen = version or max(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    data: dict[str, Any] = json.loads((folder / str(chosen) / "model_card.json").read_text())
    return data


def native_body(name: str, version: int | None) -> bytes:
    return json.dumps(card(name, version)["example"]).encode()


def v2_body(name: str, version: int | None) -> bytes:
    """The card's example as OIP v2 inputs: one tensor per feature, one for an image."""
    model_card = card(name, version)
    example = model_card["example"]
    inputs = []
    for feature in model_card["inputs"]:
        value = example[feature["name"]]
        kind = feature["type"]
        if kind == "image":
            height, width = feature.get("shape") or [28, 28]
            inputs.append(
                {
                    "name": feature["name"],
                    "shape": [1, height, width],
                    "datatype": "UINT8",
                    "data": value,
                }
            )
            continue
        datatype = {"category": "BYTES", "ordinal": "BYTES", "integer": "INT64"}.get(kind, "FP32")
        inputs.append(
            {"name": feature["name"], "shape": [1], "datatype": datatype, "data": [value]}
        )
    return json.dumps({"inputs": inputs}).encode()


def tfserving_body(name: str, version: int | None) -> bytes:
    """The card's example in TF Serving's row format."""
    return json.dumps({"instances": [card(name, version)["example"]]}).encode()


def grpc_body(name: str, version: int | None) -> bytes:
    """The card's example as a gRPC ModelInferRequest, framed for the wire (1 byte
    "not compressed", 4 bytes big-endian length, the message), as h2load posts it.
    Inputs travel as ``raw_input_contents``, as tritonclient.grpc sends them."""
    import struct

    import numpy as np
    from tritonclient.grpc import service_pb2

    model_card = card(name, version)
    example = model_card["example"]
    request = service_pb2.ModelInferRequest(model_name=name, model_version=str(version or ""))
    for feature in model_card["inputs"]:
        value = example[feature["name"]]
        kind = feature["type"]
        if kind == "image":
            pixels = np.asarray(value, dtype=np.uint8)[None]
            request.inputs.add(name=feature["name"], datatype="UINT8", shape=pixels.shape)
            request.raw_input_contents.append(pixels.tobytes())
        elif kind in ("category", "ordinal"):
            text = str(value).encode()
            request.inputs.add(name=feature["name"], datatype="BYTES", shape=[1])
            request.raw_input_contents.append(struct.pack("<I", len(text)) + text)
        else:
            datatype, dtype = ("INT64", "<i8") if kind == "integer" else ("FP32", "<f4")
            request.inputs.add(name=feature["name"], datatype=datatype, shape=[1])
            request.raw_input_contents.append(np.asarray([value], dtype=dtype).tobytes())
    message = request.SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def model_path(name: str, version: int | None, suffix: str) -> str:
    pinned = f"/versions/{version}" if version else ""
    return f"/models/{name}{pinned}/{suffix}"


def build_rows(groups: list[str]) -> list[Row]:
    rows: list[Row] = []
    for group in groups:
        if group == "noop":
            rows.append(Row("noop", group, "no-op GET /health/live", ONNX, "GET", "/health/live"))
        if group == "nolog":
            rows.append(
                Row(
                    "nolog/noop", group, "no-op GET /health/live", ONNX_NOLOG, "GET", "/health/live"
                )
            )
        if group == "workers":
            rows.append(
                Row("workers/noop", group, "no-op GET /health/live", ONNX_2, "GET", "/health/live")
            )
        for label, name, version in MODELS:
            if group == "native":
                rows.append(
                    Row(
                        f"native/{label}",
                        group,
                        f"native {label}",
                        ONNX,
                        "POST",
                        model_path(name, version, "predict"),
                        native_body(name, version),
                    )
                )
            elif group == "v2":
                rows.append(
                    Row(
                        f"v2/{label}",
                        group,
                        f"v2 infer {label}",
                        ONNX,
                        "POST",
                        "/v2" + model_path(name, version, "infer"),
                        v2_body(name, version),
                    )
                )
            elif group == "tfserving":
                pinned = f"/versions/{version}" if version else ""
                rows.append(
                    Row(
                        f"tfserving/{label}",
                        group,
                        f"TF Serving predict {label}",
                        ONNX,
                        "POST",
                        f"/v1/models/{name}{pinned}:predict",
                        tfserving_body(name, version),
                    )
                )
            elif group == "nolog":
                rows.append(
                    Row(
                        f"nolog/{label}",
                        group,
                        f"native {label}",
                        ONNX_NOLOG,
                        "POST",
                        model_path(name, version, "predict"),
                        native_body(name, version),
                    )
                )
            elif group == "workers":
                rows.append(
                    Row(
                        f"workers/v2/{label}",
                        group,
                        f"v2 infer {label}",
                        ONNX_2,
                        "POST",
                        "/v2" + model_path(name, version, "infer"),
                        v2_body(name, version),
                    )
                )
            elif group == "naive":
                rows.append(
                    Row(
                        f"naive/{label}",
                        group,
                        f"naive {label} (model.predict)",
                        KERAS,
                        "POST",
                        model_path(name, version, "predict"),
                        native_body(name, version),
                    )
                )
        if group == "batching":
            name, version = PEER_MODEL
            for server in (ONNX_OFF, ONNX, TF_OFF, TF):
                state = "on" if server.batching else "off"
                rows.append(
                    Row(
                        f"batching/{server.runtime}/{state}",
                        group,
                        f"digits v2 {server.runtime}, batching {state}",
                        server,
                        "POST",
                        model_path(name, version, "predict"),
                        native_body(name, version),
                    )
                )
        if group == "grpc":
            rows.append(
                Row(
                    "grpc/noop",
                    group,
                    "gRPC ServerLive (the gRPC no-op)",
                    ONNX,
                    "POST",
                    GRPC_LIVE,
                    GRPC_EMPTY,
                    protocol="grpc",
                )
            )
            for label, name, version in MODELS:
                if label in GRPC_MODELS:
                    rows.append(
                        Row(
                            f"grpc/{label}",
                            group,
                            f"gRPC ModelInfer {label}",
                            ONNX,
                            "POST",
                            GRPC_INFER,
                            grpc_body(name, version),
                            protocol="grpc",
                        )
                    )
            name, version = TRITON_MODEL
            rows.append(
                Row(
                    "workers/grpc/digits v1",
                    group,
                    "gRPC ModelInfer digits v1, WORKERS=2",
                    ONNX_2,
                    "POST",
                    GRPC_INFER,
                    grpc_body(name, version),
                    protocol="grpc",
                )
            )
            rows.append(
                Row(
                    "grpcio/grpc/digits v1",
                    group,
                    "gRPC ModelInfer digits v1, grpc.aio server",
                    ONNX_GRPCIO,
                    "POST",
                    GRPC_INFER,
                    grpc_body(name, version),
                    protocol="grpc",
                )
            )
            rows.append(
                Row(
                    "grpc/triton digits v1",
                    group,
                    "Triton gRPC ModelInfer digits v1 (peer)",
                    TRITON,
                    "POST",
                    GRPC_INFER,
                    grpc_body(name, version),
                    protocol="grpc",
                )
            )
        if group == "triton":
            name, version = TRITON_MODEL
            rows.append(
                Row(
                    "triton/digits v1",
                    group,
                    "Triton v2 infer digits v1 (peer)",
                    TRITON,
                    "POST",
                    f"/v2/models/{name}/infer",
                    v2_body(name, version),
                )
            )
        if group == "peer":
            name, version = PEER_MODEL
            rows.append(
                Row(
                    "peer/digits v2",
                    group,
                    "KServe v2 infer digits v2 (peer)",
                    PEER,
                    "POST",
                    f"/v2/models/{name}/infer",
                    v2_body(name, version),
                )
            )
    return rows


# ----------------------------------------------------------------------------- processes
def free_port() -> int:
    """A port free on every address (the peer binds 0.0.0.0)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(VmRSS, VmHWM) summed over ``pids``, in MB (10^6 bytes)."""
    rss = hwm = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return rss * 1024 / 1e6, hwm * 1024 / 1e6


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of ``pids``, from /proc/<pid>/stat."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def settle(pid: int, limit: float, window: float = 0.3, busy: float = 0.1) -> bool:
    """Wait until the server is idle (under ``busy`` of a core over ``window`` s).

    wrk abandons the requests in flight when a run ends, but the server still
    serves them: a slow server (the naive rows) would start the next row with a
    backlog. Returns False when it is still busy after ``limit`` seconds.
    """
    pids = tree(pid)
    deadline = time.monotonic() + limit
    last = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pids)
        if now - last <= busy * window:
            return True
        last = now
    return False


class MemorySampler:
    """Samples the peak (VmHWM) and current RSS of a process tree on a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pids = tree(pid)
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss, hwm = memory_mb(self.pids)
        self.peak_mb = max(self.peak_mb, rss, hwm)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def request_once(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Running:
    server: Server
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    grpc_port: int = 0


def command(
    server: Server, port: int, args: argparse.Namespace, grpc_port: int = 0
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if server.runtime == "kserve":
        name, version = PEER_MODEL
        python = str(ensure_peer_venv(Path(args.kserve_venv)))
        env["KSERVE_LOGLEVEL"] = "WARNING"
        return [
            python,
            str(PEER_SCRIPT),
            "--model_dir",
            str(MODELS_DIR / name / str(version)),
            "--model_name",
            name,
            "--http_port",
            str(port),
            "--enable_grpc",
            "false",
        ], env
    if server.runtime == "triton":
        name, version = TRITON_MODEL
        python = str(ensure_triton_venv(Path(args.triton_venv)))
        return [
            python,
            str(TRITON_SCRIPT),
            "--model_dir",
            str(MODELS_DIR / name / str(version)),
            "--model_name",
            name,
            "--http_port",
            str(port),
            "--grpc_port",
            str(grpc_port or free_port()),
            "--metrics_port",
            str(free_port()),
        ], env
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "GRPC_PORT": str(grpc_port or free_port()),
            "WORKERS": str(server.workers),
            "GRPC_SERVER": server.grpc_server,
            "RUNTIME": server.runtime,
            "BATCHING": str(server.batching).lower(),
            "ACCESS_LOG": str(server.access_log and args.access_log).lower(),
            "LOG_LEVEL": "warning",
            "DRAIN_SECONDS": "2",
            "MODELS_DIR": str(MODELS_DIR),
        }
    )
    return [args.python, "-m", "app"], env


@contextlib.contextmanager
def serve(server: Server, args: argparse.Namespace, startup: Startup) -> Iterator[Running]:
    """Start ``server``, wait until it is ready, record start-up figures, stop it after."""
    port = free_port()
    grpc_port = free_port()
    argv, env = command(server, port, args, grpc_port)
    log = Path(args.log_dir) / f"{server.key}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ready_path = {
        "kserve": "/v2/health/ready",
        # Triton's server readiness comes before the model's
        "triton": f"/v2/models/{TRITON_MODEL[0]}/ready",
    }.get(server.runtime, "/health/ready")
    with log.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        running = Running(server, process, port, log, grpc_port)
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"exited with {process.returncode} before ready; see {log}: {tail(log)}"
                    )
                if time.perf_counter() - started > args.ready_timeout:
                    raise RuntimeError(f"not ready after {args.ready_timeout} s; see {log}")
                with contextlib.suppress(OSError):
                    if request_once(port, "GET", ready_path, timeout=2)[0] == 200:
                        break
                time.sleep(0.02)
            startup.ready_s = time.perf_counter() - started
            startup.rss_ready_mb = memory_mb(tree(process.pid))[0]
            yield running
            startup.peak_rss_mb = memory_mb(tree(process.pid))[1]
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (its own session), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def ensure_venv(venv: Path, base: Path, packages: list[str], modules: str) -> Path:
    """A peer's interpreter: a venv made from ``base`` holding ``packages``, created when
    ``import modules`` fails in it (or it is missing)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import {modules}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    if not base.exists():
        raise RuntimeError(f"{venv.name} needs {base}")
    print(
        f"creating {venv} ({', '.join(packages)})...",
        file=sys.stderr,
        flush=True,
    )
    venv.parent.mkdir(parents=True, exist_ok=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for step in ([str(base), "-m", "venv", "--clear", str(venv)], [*pip, *packages], probe):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step[:4])} failed: {done.stderr.strip()[-500:]}")
    return python


def ensure_peer_venv(venv: Path) -> Path:
    """KServe's interpreter: kserve and onnxruntime in a venv of this Python."""
    return ensure_venv(venv, Path(sys.executable), ["kserve", "onnxruntime"], "kserve, onnxruntime")


def ensure_triton_venv(venv: Path) -> Path:
    """Triton's interpreter: a venv from Debian's python3.11 (apt-get install
    python3.11-venv), since PyTriton's backend stub links libpython3.11.so."""
    return ensure_venv(
        venv,
        Path("/usr/bin/python3.11"),
        ["nvidia-pytriton", "onnxruntime"],
        "pytriton, onnxruntime",
    )


# ----------------------------------------------------------------------------- wrk
def wrk(
    port: int,
    row: Row,
    concurrency: int,
    seconds: int,
    args: argparse.Namespace,
    body_file: Path | None,
) -> dict[str, Any]:
    """One wrk run; returns the summary that bench/request.lua prints."""
    env = dict(os.environ, BENCH_METHOD=row.method, BENCH_BODY_FILE=str(body_file or ""))
    argv = [
        "wrk",
        "-t",
        str(min(args.threads, concurrency)),
        "-c",
        str(concurrency),
        "-d",
        f"{seconds}s",
        "--timeout",
        f"{args.timeout}s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}{row.path}",
    ]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + args.timeout + 30
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            summary: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return summary
    raise RuntimeError(f"wrk gave no summary (rc {done.returncode}): {done.stderr.strip()}")


def h2load(
    port: int,
    row: Row,
    concurrency: int,
    seconds: int,
    args: argparse.Namespace,
    body_file: Path | None,
) -> dict[str, Any]:
    """One h2load run of a unary gRPC call: ``concurrency`` HTTP/2 connections with one
    stream each (as wrk's connections), the framed request posted from ``body_file``.
    Returns the same summary as :func:`wrk`; percentiles come from h2load's per-request
    log. h2load sees HTTP statuses only (a gRPC error is a 200 with ``grpc-status`` in
    the trailers), so :func:`measure` counts keras-serve's gRPC errors from its metrics."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        argv = [
            "h2load",
            "-c",
            str(concurrency),
            "-m",
            "1",
            "-t",
            str(min(args.threads, concurrency)),
            "-D",
            str(seconds),
            "-d",
            str(body_file),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "--log-file",
            log.name,
            f"http://127.0.0.1:{port}{row.path}",
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + args.timeout + 30
        )
        elapsed = sorted(
            int(fields[2])
            for fields in (line.split("\t") for line in Path(log.name).read_text().splitlines())
            if len(fields) >= 3 and fields[1] == "200"
        )
    counts: dict[str, int] = {}
    duration_s = float(seconds)
    for line in done.stdout.splitlines():
        line = line.strip()
        if line.startswith("finished in"):
            duration_s = float(line.split()[2].rstrip("s,"))
        if line.startswith("requests:"):
            parts = line.removeprefix("requests:").split(",")
            counts = {p.split()[1]: int(p.split()[0]) for p in parts if p.strip()}
    if not counts:
        raise RuntimeError(f"h2load gave no summary (rc {done.returncode}): {done.stderr[-300:]}")

    def percentile(q: float) -> float:
        return float(elapsed[min(len(elapsed) - 1, int(q * len(elapsed)))]) if elapsed else 0.0

    errors = {
        "failed": counts.get("failed", 0),
        "errored": counts.get("errored", 0),
        "timeout": counts.get("timeout", 0),
    }
    return {
        "requests": counts.get("succeeded", 0),
        "duration_us": duration_s * 1e6,
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
        "errors": errors,
    }


def grpc_errors(port: int) -> int:
    """keras-serve's gRPC calls answered with a status other than OK so far (/metrics).

    CANCELLED is left out: h2load abandons the calls in flight when a run ends (as wrk
    abandons its requests), and the server records those as cancelled by the client."""
    try:
        status, body = request_once(port, "GET", "/metrics")
    except OSError:
        return 0
    if status != 200:
        return 0
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        series = line.startswith("keras_serve_requests_total{") and 'protocol="grpc"' in line
        if series and 'status="OK"' not in line and 'status="CANCELLED"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def grpc_preflight(port: int, row: Row) -> None:
    """One real gRPC call with the row's message: it must answer OK."""
    import grpc

    assert row.body is not None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(row.path)
        try:
            call(row.body[5:], timeout=30)
        except grpc.RpcError as exc:
            raise RuntimeError(f"gRPC {row.path} answered {exc.code()}: {exc.details()}") from None


def preflight(port: int, row: Row) -> None:
    """One request first: a row whose request fails is reported, not benchmarked."""
    status, body = request_once(port, row.method, row.path, row.body)
    if not 200 <= status < 300:
        raise RuntimeError(f"{row.method} {row.path} answered {status}: {body[:200]!r}")


def measure(
    running: Running,
    row: Row,
    args: argparse.Namespace,
    results: Results,
    progress: Callable[[str], None],
) -> None:
    grpc_row = row.protocol == "grpc"
    driver = h2load if grpc_row else wrk
    port = running.grpc_port if grpc_row else running.port
    ours = grpc_row and running.server.runtime not in ("kserve", "triton")
    try:
        if grpc_row:
            grpc_preflight(port, row)
        else:
            preflight(running.port, row)
    except (OSError, RuntimeError) as exc:
        results.problems[row.id] = str(exc)
        progress(f"{row.label}: FAILED {exc}")
        return
    with tempfile.NamedTemporaryFile(suffix=".json") as body:
        body_file = None
        if row.body is not None:
            body.write(row.body)
            body.flush()
            body_file = Path(body.name)
        if args.warmup > 0:
            driver(port, row, max(args.concurrency), args.warmup, args, body_file)
        for concurrency in args.concurrency:
            if not settle(running.process.pid, args.settle_timeout):
                progress(f"{row.label}: server still busy after {args.settle_timeout} s")
            failed_before = grpc_errors(running.port) if ours else 0
            with MemorySampler(running.process.pid) as memory:
                summary = driver(port, row, concurrency, args.duration, args, body_file)
            if ours:
                summary["errors"]["grpc-status"] = grpc_errors(running.port) - failed_before
            seconds = summary["duration_us"] / 1e6
            figure = Measurement(
                rps=summary["requests"] / seconds if seconds else 0.0,
                p50_ms=summary["p50_us"] / 1000,
                p99_ms=summary["p99_us"] / 1000,
                errors={k: v for k, v in summary["errors"].items() if v},
                peak_rss_mb=memory.peak_mb,
            )
            results.figures.setdefault(row.id, {})[concurrency] = figure
            progress(
                f"{row.label} c={concurrency}: {figure.rps:,.0f} req/s, "
                f"p50 {figure.p50_ms:.2f} ms, p99 {figure.p99_ms:.2f} ms, "
                f"{figure.error_count} errors, {figure.peak_rss_mb:.0f} MB"
            )


def run(args: argparse.Namespace) -> Results:
    results = Results(rows=build_rows(args.rows))

    def progress(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    servers: list[Server] = []
    for row in results.rows:
        if row.server not in servers:
            servers.append(row.server)
    for server in servers:
        startup = results.startups.setdefault(server.key, Startup(server))
        rows = [r for r in results.rows if r.server == server]
        progress(f"starting {server.label}")
        try:
            with serve(server, args, startup) as running:
                progress(f"{server.label}: ready in {startup.ready_s:.2f} s")
                for row in rows:
                    measure(running, row, args, results, progress)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            startup.problem = str(exc)
            for row in rows:
                results.problems.setdefault(row.id, f"server {server.label}: {exc}")
            progress(f"{server.label}: FAILED {exc}")
    return results


# ----------------------------------------------------------------------------- report
def machine() -> list[str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kb / 1024 / 1024:.1f} GiB memory"
    usable = len(os.sched_getaffinity(0))
    version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- machine: {model}, {os.cpu_count()} logical cores ({usable} usable){memory}",
        f"- system: {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"{version.strip() or 'wrk'}",
        f"- load average at start: {load}",
    ]


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def errors_text(figure: Measurement) -> str:
    if not figure.errors:
        return "0"
    parts = ", ".join(f"{k} {v}" for k, v in figure.errors.items())
    return f"{figure.error_count} ({parts})"


def startup_table(results: Results) -> list[str]:
    lines = [
        "| server | start to ready s | RSS at ready MB | peak RSS MB (VmHWM) |",
        "|---|---:|---:|---:|",
    ]
    for startup in results.startups.values():
        if startup.problem:
            lines.append(f"| {startup.server.label} | failed: {startup.problem[:120]} | | |")
            continue
        lines.append(
            f"| {startup.server.label} | {fmt(startup.ready_s)} | "
            f"{fmt(startup.rss_ready_mb, 0)} | {fmt(startup.peak_rss_mb, 0)} |"
        )
    return lines


def figures_table(results: Results, concurrencies: list[int]) -> list[str]:
    lines = [
        "| row | server | c | req/s | p50 ms | p99 ms | errors | vs no-op | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results.rows:
        if row.id in results.problems and row.id not in results.figures:
            lines.append(
                f"| {row.label} | {row.server.label} | | failed: "
                f"{results.problems[row.id][:120]} | | | | | |"
            )
            continue
        for c in concurrencies:
            figure = results.at(row.id, c)
            if figure is None:
                continue
            # gRPC rows against the gRPC no-op (ServerLive), HTTP rows against HTTP's
            ours = row.protocol == "grpc" and row.server.runtime not in ("kserve", "triton")
            noop = results.at("grpc/noop" if ours else "noop", c)
            ratio = figure.rps / noop.rps if noop and noop.rps else None
            lines.append(
                f"| {row.label} | {row.server.label} | {c} | {fmt(figure.rps, 0)} | "
                f"{fmt(figure.p50_ms)} | {fmt(figure.p99_ms)} | {errors_text(figure)} | "
                f"{fmt(ratio)} | {fmt(figure.peak_rss_mb, 0)} |"
            )
    return lines


@dataclass
class Check:
    target: str
    measured: str
    passed: bool | None  # None: not measured in this run


def ratio_check(
    results: Results, target: str, row_id: str, base_id: str, c: int, minimum: float
) -> Check:
    figure, base = results.at(row_id, c), results.at(base_id, c)
    if figure is None or base is None or not base.rps:
        return Check(target, "not measured", None)
    ratio = figure.rps / base.rps
    return Check(
        target, f"{figure.rps:,.0f} / {base.rps:,.0f} req/s = {ratio:.2f}x", ratio >= minimum
    )


def targets(results: Results) -> list[Check]:
    """The targets of issue 5, checked against this run's figures."""
    checks: list[Check] = []
    for label in TABULAR:
        checks.append(
            ratio_check(
                results,
                f"native {label} >= 0.60x no-op req/s at c=64",
                f"native/{label}",
                "noop",
                64,
                0.60,
            )
        )
    checks.append(
        ratio_check(
            results,
            "native digits v2 >= 0.30x no-op req/s at c=64",
            "native/digits v2",
            "noop",
            64,
            0.30,
        )
    )
    for label, _, _ in MODELS:
        checks.append(
            ratio_check(
                results,
                f"native {label} >= 100x naive req/s at c=64",
                f"native/{label}",
                f"naive/{label}",
                64,
                100,
            )
        )
    for label, _, _ in MODELS:
        limit = 2.0 if label in TABULAR else 5.0
        figure = results.at(f"native/{label}", 1)
        checks.append(
            Check(
                f"native {label} p99 at c=1 <= {limit:g} ms",
                "not measured" if figure is None else f"{figure.p99_ms:.2f} ms",
                None if figure is None else figure.p99_ms <= limit,
            )
        )
    for c in (16, 64):
        ours, peer = results.at("v2/digits v2", c), results.at("peer/digits v2", c)
        target = f"v2 digits v2 >= 1.5x KServe req/s at c={c}, lower p99"
        if ours is None or peer is None or not peer.rps:
            checks.append(Check(target, "not measured", None))
            continue
        ratio = ours.rps / peer.rps
        checks.append(
            Check(
                target,
                f"{ratio:.2f}x ({ours.rps:,.0f} vs {peer.rps:,.0f} req/s), "
                f"p99 {ours.p99_ms:.2f} vs {peer.p99_ms:.2f} ms",
                ratio >= 1.5 and ours.p99_ms < peer.p99_ms,
            )
        )
    checks.append(
        ratio_check(
            results,
            "tensorflow digits v2 batching on >= 3x off at c=64",
            "batching/tensorflow/on",
            "batching/tensorflow/off",
            64,
            3,
        )
    )
    for runtime, ready_limit, memory_limit in (("onnx", 5.0, 600.0), ("tensorflow", 15.0, 1500.0)):
        startups = [
            s
            for s in results.startups.values()
            if s.server.runtime == runtime and s.ready_s is not None
        ]
        ready = max((s.ready_s for s in startups if s.ready_s is not None), default=None)
        checks.append(
            Check(
                f"{runtime}: start to ready <= {ready_limit:g} s",
                "not measured" if ready is None else f"{ready:.2f} s (slowest start)",
                None if ready is None else ready <= ready_limit,
            )
        )
        peaks = [s.peak_rss_mb for s in startups if s.peak_rss_mb is not None]
        peak = max(peaks, default=None)
        checks.append(
            Check(
                f"{runtime}: peak RSS <= {memory_limit:g} MB",
                "not measured" if peak is None else f"{peak:.0f} MB",
                None if peak is None else peak <= memory_limit,
            )
        )
    return checks


def data_plane_targets(results: Results) -> list[Check]:
    """The targets of issue 11 (one data plane), checked against this run's figures."""
    checks: list[Check] = []
    for label, _, _ in MODELS:
        checks.append(
            ratio_check(
                results,
                f"v2 {label} >= 0.8x native req/s at c=64",
                f"v2/{label}",
                f"native/{label}",
                64,
                0.8,
            )
        )
    checks.append(
        ratio_check(results, "v2 income >= 0.60x no-op req/s at c=64", "v2/income", "noop", 64, 0.6)
    )
    for group in ("native", "v2", "tfserving"):
        for label, _, _ in MODELS:
            figure = results.at(f"{group}/{label}", 1)
            checks.append(
                Check(
                    f"{group} {label} p99 at c=1 <= 2 ms",
                    "not measured" if figure is None else f"{figure.p99_ms:.2f} ms",
                    None if figure is None else figure.p99_ms <= 2.0,
                )
            )
    for label, _, _ in MODELS:
        figure, before = results.at(f"nolog/{label}", 64), PREVIOUS_NATIVE[label]
        checks.append(
            Check(
                f"native {label}, access log off, c=64, vs the README before (VM noise 15-30%)",
                "not measured"
                if figure is None
                else f"{figure.rps:,.0f} vs {before:,} req/s = {figure.rps / before:.2f}x",
                None if figure is None else figure.rps >= 0.85 * before,
            )
        )
    # the peer serves the same digits v1 ONNX file; one worker, and one per core
    checks += peer_checks(
        results,
        "grpc/triton digits v1",
        "gRPC digits v1 ({what}) >= {minimum:g}x Triton gRPC req/s at c=64, lower p99",
        [("grpc/digits v1", 1.5, "1 worker"), ("workers/grpc/digits v1", 1.5, "2 workers")],
    )
    checks += peer_checks(
        results,
        "triton/digits v1",
        "v2 digits v1 ({what}) >= {minimum:g}x Triton req/s at c=64, lower p99",
        [("v2/digits v1", 1.0, "1 worker"), ("workers/v2/digits v1", 1.5, "2 workers")],
    )
    return checks


def peer_checks(
    results: Results, peer_row: str, wording: str, cases: list[tuple[str, float, str]]
) -> list[Check]:
    """Each (row, minimum ratio, what) against the peer's row at c=64: at least
    ``minimum`` times its req/s, with a lower p99."""
    peer = results.at(peer_row, 64)
    checks = []
    for row_id, minimum, what in cases:
        ours = results.at(row_id, 64)
        target = wording.format(what=what, minimum=minimum)
        if ours is None or peer is None or not peer.rps:
            checks.append(Check(target, "not measured", None))
            continue
        ratio = ours.rps / peer.rps
        checks.append(
            Check(
                target,
                f"{ratio:.2f}x ({ours.rps:,.0f} vs {peer.rps:,.0f} req/s), "
                f"p99 {ours.p99_ms:.2f} vs {peer.p99_ms:.2f} ms",
                ratio >= minimum and ours.p99_ms < peer.p99_ms,
            )
        )
    return checks


def report(results: Results, args: argparse.Namespace, header: list[str]) -> str:
    checks = targets(results)
    plane_checks = data_plane_targets(results)
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}
    lines = [
        f"# keras-serve bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        *header,
        f"- wrk: {args.duration} s per row and concurrency, {args.warmup} s warm-up, "
        f"{args.threads} thread(s); keras-serve as `python -m app` with its defaults (one "
        f"worker, access log {'on' if args.access_log else 'off'}) except where a row's server "
        "says otherwise",
        f"- load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "## Start to ready",
        "",
        *startup_table(results),
        "",
        "## Throughput and latency",
        "",
        *figures_table(results, args.concurrency),
        "",
        "errors: non-2xx responses (wrk counts status >= 400) and socket errors "
        "(connect, read, write, timeout). vs no-op: req/s over the no-op row's at the same c "
        "(keras-serve's gRPC rows: over the gRPC no-op, ServerLive).",
        "",
        "## Targets (issue 5)",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        *(f"| {c.target} | {c.measured} | {verdict[c.passed]} |" for c in checks),
        "",
        "## Targets (issue 11: one data plane)",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        *(f"| {c.target} | {c.measured} | {verdict[c.passed]} |" for c in plane_checks),
    ]
    if results.problems:
        lines += ["", "## Problems", ""]
        lines += [f"- {row_id}: {problem}" for row_id, problem in results.problems.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- cli
def csv_of(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def group_list(text: str) -> list[str]:
    groups = csv_of(str)(text)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown row group {unknown[0]!r}; pick from {','.join(GROUPS)}"
        )
    return groups


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "keras-serve-bench"
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--rows",
        type=group_list,
        default=list(GROUPS),
        help=f"row groups, comma-separated: {','.join(GROUPS)}",
    )
    parser.add_argument(
        "--concurrency",
        type=csv_of(int),
        default=[1, 16, 64],
        help="wrk connections, comma-separated",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per row and concurrency")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of discarded load per row before measuring"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 s per row and no warm-up: proves the bench runs, noisy figures",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (at most c)")
    parser.add_argument("--timeout", type=int, default=30, help="wrk per-request timeout, s")
    parser.add_argument(
        "--ready-timeout", type=float, default=180, help="seconds a server may take to become ready"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=60,
        help="longest wait before each measurement for the server to go idle",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keras-serve's access log, on as a user gets it (the nolog rows turn it off)",
    )
    parser.add_argument(
        "--triton-venv",
        default=str(cache / "pytriton-venv"),
        help="Triton's virtual environment, created when missing",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter that runs `-m app` (the project's venv)",
    )
    parser.add_argument(
        "--kserve-venv",
        default=str(cache / "kserve-venv"),
        help="the peer's virtual environment, created when missing",
    )
    parser.add_argument(
        "--log-dir",
        default=str(BENCH / "results" / "logs"),
        help="server logs, one file per server configuration",
    )
    parser.add_argument("--output", type=Path, help="also write the report (markdown) here")
    parser.add_argument("--json", type=Path, help="also write the raw figures (JSON) here")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1, 0
    if args.duration < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--duration and --threads must be >= 1, --warmup >= 0")
    if not args.concurrency or min(args.concurrency) < 1:
        parser.error("--concurrency needs positive integers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    if "grpc" in args.rows and shutil.which("h2load") is None:
        print("h2load is missing: apt-get install -y nghttp2-client", file=sys.stderr)
        return 2
    header = machine()
    results = run(args)
    text = report(results, args, header)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    if args.json:
        raw = {
            "figures": {
                row: {str(c): vars(m) for c, m in by_c.items()}
                for row, by_c in results.figures.items()
            },
            "startups": {
                k: {
                    "ready_s": s.ready_s,
                    "rss_ready_mb": s.rss_ready_mb,
                    "peak_rss_mb": s.peak_rss_mb,
                    "problem": s.problem,
                }
                for k, s in results.startups.items()
            },
            "problems": results.problems,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(raw, indent=1))
    return 1 if results.problems else 0


if __name__ == "__main__":
    sys.exit(main())
