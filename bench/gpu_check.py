"""Prove the ONNX Runtime GPU path of keras-serve and time it against the CPU path.

Runs on any machine; the GPU sections only mean something where ``onnxruntime-gpu``
is installed and a CUDA device is visible (``--require-gpu`` fails otherwise, so a
silent CPU fallback cannot pass for a GPU result). Everything goes through the
repo's own runtime class (``app.runtimes.open_runtime("onnx", ...)``), so what is
checked is what the server runs; the CPU rows use the same class with the CUDA
provider hidden from it. See bench/GPU.md::

    python bench/gpu_check.py                       # environment, check, in-process table
    python bench/gpu_check.py --require-gpu --serve # and the real server over loopback

Sections:

1. environment: ONNX Runtime version, its providers, the GPU;
2. check: every committed version, GPU outputs against CPU outputs (max |diff|) on
   fresh random inputs at 1, 64 and 1024 rows, and ``runtime.device``;
3. in-process: calls/s and rows/s at 1, 64 and 1024 rows per call, CPU (1 thread,
   the service default; and all cores) against the GPU;
4. ``--serve``: ``python -m app`` with ``RUNTIME=onnx`` (GPU, then with
   ``CUDA_VISIBLE_DEVICES=`` so the same build falls back to the CPU), its
   ``/models`` devices, one checked prediction per version, and req/s over loopback
   with a small keep-alive HTTP/1.1 client (several processes; client-bound figures
   are marked as such by the client CPU column).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.artifacts import version_dirs  # noqa: E402
from app.runtimes import InferenceRuntime, open_runtime  # noqa: E402

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


# ----------------------------------------------------------------------------- helpers
def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "none (no nvidia-smi)"
    return out.stdout.strip() or f"none ({out.stderr.strip()[:100]})"


def open_onnx(path: Path, threads: int, gpu: bool) -> InferenceRuntime:
    """The repo's ONNX runtime; with ``gpu=False`` the CUDA provider is hidden from it."""
    if gpu:
        return open_runtime("onnx", path, threads)
    with mock.patch("app.runtimes.onnx.available_providers", return_value=[CPU]):
        return open_runtime("onnx", path, threads)


def input_shape(path: Path) -> list[int]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path / "model.onnx"), providers=[CPU])
    return [d if isinstance(d, int) else -1 for d in session.get_inputs()[0].shape]


def random_batch(shape: list[int], rows: int, rng: np.random.Generator) -> np.ndarray:
    """Fresh inputs in the encoded range: pixels in [0, 1], tabular columns ~ N(0, 1)."""
    dims = [rows, *shape[1:]]
    if len(shape) > 2:
        return rng.random(dims, dtype=np.float32)
    return rng.standard_normal(dims, dtype=np.float32)


def tf32_off_session(path: Path) -> Any:
    """A CUDA session with TF32 math off, to tell TF32 rounding from a real fault."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 2  # warnings too: nodes ONNX Runtime kept off the GPU
    return ort.InferenceSession(
        str(path / "model.onnx"), options, providers=[(CUDA, {"use_tf32": "0"}), CPU]
    )


# ----------------------------------------------------------------------------- sections
def environment() -> bool:
    import onnxruntime as ort

    providers = list(ort.get_available_providers())
    print("## Environment\n")
    print(f"- python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"- onnxruntime {ort.__version__} ({ort.get_device()}), providers: {providers}")
    print(f"- GPU: {gpu_name()}\n")
    return CUDA in providers


def check(models_dir: Path, tolerance: float, batches: list[int], seed: int) -> tuple[bool, bool]:
    """(every version within tolerance, every version on the GPU)."""
    rng = np.random.default_rng(seed)
    rows: list[list[str]] = []
    all_ok = all_gpu = True
    for name, version, path in version_dirs(models_dir):
        gpu = open_onnx(path, 1, gpu=True)
        cpu = open_onnx(path, 1, gpu=False)
        strict = tf32_off_session(path) if gpu.device != "CPU" else None
        shape = input_shape(path)
        worst = worst_strict = 0.0
        for n in batches:
            x = random_batch(shape, n, rng)
            reference = cpu.run(x)
            out = gpu.run(x)
            if out.shape != reference.shape or not np.all(np.isfinite(out)):
                worst = float("inf")
                continue
            worst = max(worst, float(np.max(np.abs(out - reference))))
            if strict is not None:
                strict_out = np.asarray(strict.run(None, {strict.get_inputs()[0].name: x})[0])
                worst_strict = max(worst_strict, float(np.max(np.abs(strict_out - reference))))
        ok = worst <= tolerance
        on_gpu = gpu.device != "CPU"
        all_ok &= ok
        all_gpu &= on_gpu
        rows.append(
            [
                f"{name} v{version}",
                gpu.device,
                cpu.device,
                f"{worst:.2e}",
                f"{worst_strict:.2e}" if strict is not None else "-",
                "PASS" if ok else "FAIL",
            ]
        )
        for runtime in (gpu, cpu):
            runtime.close()
    print(f"## Check: GPU against CPU, max |diff| over {batches} rows (tolerance {tolerance})\n")
    header = ["version", "runtime.device", "reference", "max |diff|", "TF32 off", "result"]
    print(table(header, rows) + "\n")
    return all_ok, all_gpu


def time_calls(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, seconds: float
) -> list[float]:
    """Per-call seconds over a fixed time, after a short warm-up."""
    warm_until = time.perf_counter() + min(0.3, seconds / 3)
    while time.perf_counter() < warm_until:
        run(x)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        run(x)
        stop = time.perf_counter()
        times.append(stop - start)
        if stop >= end:
            return times


def in_process(
    models_dir: Path, picks: list[str], batches: list[int], seconds: float, gpu_ok: bool
) -> list[dict[str, Any]]:
    cores = os.cpu_count() or 1
    # (label, threads, GPU: None = CPU, True = the repo's runtime, False = TF32 off)
    configs: list[tuple[str, int, bool | None]] = [("CPU 1 thread", 1, None)]
    if cores > 1:
        configs.append((f"CPU {cores} threads", cores, None))
    if gpu_ok:
        configs += [("GPU", 1, True), ("GPU, TF32 off", 1, False)]
    rng = np.random.default_rng(1)
    results: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for pick in picks:
        name, version = pick.split(":")
        path = models_dir / name / version
        shape = input_shape(path)
        for label, threads, gpu in configs:
            runtime = open_onnx(path, threads, gpu is not None)
            run = runtime.run
            if gpu is False:
                strict = tf32_off_session(path)
                name_in = strict.get_inputs()[0].name

                def run(x: np.ndarray, s: Any = strict, i: str = name_in) -> np.ndarray:
                    return np.asarray(s.run(None, {i: x})[0])

            for n in batches:
                x = random_batch(shape, n, rng)
                times = time_calls(run, x, seconds)
                calls = len(times) / sum(times)
                median = statistics.median(times) * 1e3
                p99 = sorted(times)[int(0.99 * (len(times) - 1))] * 1e3
                results.append(
                    {
                        "model": f"{name} v{version}",
                        "config": label,
                        "device": runtime.device,
                        "rows": n,
                        "calls_per_s": calls,
                        "rows_per_s": calls * n,
                        "median_ms": median,
                        "p99_ms": p99,
                        "calls": len(times),
                    }
                )
                rows.append(
                    [
                        f"{name} v{version}",
                        label,
                        str(n),
                        f"{calls:,.0f}",
                        f"{calls * n:,.0f}",
                        f"{median:.3f}",
                        f"{p99:.3f}",
                    ]
                )
            runtime.close()
    print(f"## In-process ONNX Runtime, {seconds:g} s per row after a warm-up\n")
    header = ["model", "runtime", "rows/call", "calls/s", "rows/s", "median ms", "p99 ms"]
    print(table(header, rows) + "\n")
    return results


# ----------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@contextlib.contextmanager
def server(
    env_extra: dict[str, str], models_dir: Path, log: Path, ready_wait: float = 60.0
) -> Iterator[tuple[int, float]]:
    """``python -m app`` on a free port; yields (port, seconds to ready or -1 if never)."""
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "1",
            "LOG_LEVEL": "info",
            "ACCESS_LOG": "false",
            "DRAIN_SECONDS": "2",
            "WATCH_INTERVAL_S": "0",
            "MODELS_DIR": str(models_dir),
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        }
    )
    env.update(env_extra)
    with log.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ready = -1.0
        try:
            while process.poll() is None and time.perf_counter() - started < 120:
                with contextlib.suppress(OSError):
                    status, _ = request(port, "GET", "/health/live")
                    if status == 200:
                        if request(port, "GET", "/health/ready")[0] == 200:
                            ready = time.perf_counter() - started
                        elif time.perf_counter() - started < ready_wait:
                            time.sleep(0.05)
                            continue
                        break
                time.sleep(0.05)
            yield port, ready
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


async def _client(port: int, raw: bytes, until: float, latencies: list[float]) -> int:
    """One keep-alive connection sending ``raw`` until ``until``; returns non-2xx count."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    errors = 0
    try:
        while time.perf_counter() < until:
            start = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            errors += not 200 <= status < 300
    finally:
        writer.close()
    return errors


def _load_process(args: tuple[int, bytes, int, float, float]) -> tuple[list[float], int, float]:
    port, raw, connections, start_at, seconds = args
    time.sleep(max(0.0, start_at - time.time()))
    latencies: list[float] = []
    cpu0 = time.process_time()

    async def main() -> int:
        until = time.perf_counter() + seconds
        done = await asyncio.gather(
            *(_client(port, raw, until, latencies) for _ in range(connections))
        )
        return sum(done)

    errors = asyncio.run(main())
    return latencies, errors, time.process_time() - cpu0


def load(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    """req/s, p50, p99 and errors at ``concurrency`` connections over a few processes."""
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    processes = min(concurrency, 4)
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    start_at = time.time() + 0.5
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_load_process, [(port, raw, s, start_at, seconds) for s in shares])
    latencies = sorted(t for part in parts for t in part[0])
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "req_per_s": len(latencies) / seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else float("nan"),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3 if latencies else float("nan"),
        "errors": sum(part[1] for part in parts),
        "client_cpu_s": sum(part[2] for part in parts),
    }


def serve_section(
    models_dir: Path,
    picks: list[str],
    concurrencies: list[int],
    seconds: float,
    log_dir: Path,
    probe_auto: bool,
) -> list[dict[str, Any]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    # (label, log key, environment, seconds to wait for ready, timed)
    setups: list[tuple[str, str, dict[str, str], float, bool]] = [
        ("GPU (RUNTIME=onnx)", "gpu", {"RUNTIME": "onnx"}, 60, True),
        (
            "CPU (RUNTIME=onnx, CUDA_VISIBLE_DEVICES=)",
            "cpu",
            {"RUNTIME": "onnx", "CUDA_VISIBLE_DEVICES": ""},
            60,
            True,
        ),
    ]
    if probe_auto:  # what the default picks on a GPU host, and whether it serves
        setups.append(("RUNTIME=auto", "auto", {"RUNTIME": "auto"}, 20, False))
    results: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for label, key, extra, ready_wait, timed in setups:
        log = log_dir / f"server-{key}.log"
        with server(extra, models_dir, log, ready_wait) as (port, ready):
            print(f"### {label}: ready after {ready:.2f} s (-1: never)\n")
            status, body = request(port, "GET", "/models")
            if status != 200:
                print(f"GET /models answered {status}; log tail:\n{log.read_text()[-1500:]}\n")
            listing = json.loads(body) if status == 200 else []
            devices = []
            for model in listing:
                for info in model.get("versions", []):
                    card_path = (
                        models_dir / model["name"] / str(info["version"]) / "model_card.json"
                    )
                    example = json.loads(card_path.read_text())["example"]
                    url = f"/models/{model['name']}/versions/{info['version']}/predict"
                    code, answer = request(port, "POST", url, json.dumps(example).encode())
                    first = (
                        json.loads(answer)["predictions"][0]
                        if code == 200
                        else answer[:80].decode(errors="replace")
                    )
                    devices.append(
                        [
                            f"{model['name']} v{info['version']}",
                            str(info.get("status")),
                            str(info.get("runtime")),
                            str(info.get("device")),
                            f"{code}: {json.dumps(first)[:70]}",
                        ]
                    )
            header = ["version", "status", "runtime", "device", "example prediction"]
            print(table(header, devices) + "\n")
            device_of = {row[0]: row[3] for row in devices}
            if ready < 0 or not timed:
                print(f"log tail:\n{log.read_text()[-1500:]}\n")
                continue
            for pick in picks:
                name, version = pick.split(":")
                card_path = models_dir / name / version / "model_card.json"
                example = json.dumps(json.loads(card_path.read_text())["example"]).encode()
                path = f"/models/{name}/versions/{version}/predict"
                load(port, path, example, max(concurrencies), 1.0)  # warm-up, discarded
                for concurrency in concurrencies:
                    figure = load(port, path, example, concurrency, seconds)
                    figure.update({"server": label, "model": f"{name} v{version}"})
                    results.append(figure)
                    print(f"{label} {name} v{version} c={concurrency}: {figure}", flush=True)
                    rows.append(
                        [
                            f"{name} v{version}",
                            device_of.get(f"{name} v{version}", "?"),
                            str(concurrency),
                            f"{figure['req_per_s']:,.0f}",
                            f"{figure['p50_ms']:.2f}",
                            f"{figure['p99_ms']:.2f}",
                            str(figure["errors"]),
                            f"{figure['client_cpu_s'] / seconds:.1f}",
                        ]
                    )
    print(f"## Server over loopback, one worker, single-example requests, {seconds:g} s per row\n")
    header = [
        "model",
        "server device",
        "c",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "client CPUs busy",
    ]
    print(table(header, rows) + "\n")
    return results


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--batches", default="1,64,1024", help="rows per call")
    parser.add_argument("--bench-models", default="digits:2,income:1", help="name:version,...")
    parser.add_argument("--seconds", type=float, default=1.0, help="per in-process row")
    parser.add_argument("--require-gpu", action="store_true", help="fail unless on the GPU")
    parser.add_argument("--serve", action="store_true", help="also time the real server")
    parser.add_argument("--probe-auto", action="store_true", help="also start RUNTIME=auto")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--serve-seconds", type=float, default=3.0)
    parser.add_argument("--log-dir", type=Path, default=ROOT / "bench" / "results" / "gpu")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    picks = args.bench_models.split(",")
    gpu_ok = environment()
    if args.require_gpu and not gpu_ok:
        print("FAIL: onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        return 2
    all_ok, all_gpu = check(args.models_dir, args.tolerance, batches, args.seed)
    if args.require_gpu and not all_gpu:
        print("FAIL: some versions did not load on the GPU (see runtime.device above)")
    figures = in_process(args.models_dir, picks, batches, args.seconds, gpu_ok and all_gpu)
    served: list[dict[str, Any]] = []
    if args.serve:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        served = serve_section(
            args.models_dir,
            picks,
            concurrencies,
            args.serve_seconds,
            args.log_dir,
            args.probe_auto,
        )
    if args.json:
        args.json.write_text(json.dumps({"in_process": figures, "server": served}, indent=1))
    ok = all_ok and (all_gpu or not args.require_gpu)
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
