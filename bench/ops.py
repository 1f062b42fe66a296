"""Operations benchmarks: what the access log, the HTTP head limits and draining cost,
and native throughput against an older checkout.

    python bench/ops.py access-log --before OLD_CHECKOUT   # access log on/off, old vs new
    python bench/ops.py parser                            # limited httptools vs plain vs h11
    python bench/ops.py drain --before OLD_CHECKOUT        # unanswered at SIGTERM, 1 and 2 workers
    python bench/ops.py native --before OLD_CHECKOUT --before-python OLD_VENV/bin/python

Each server is ``python -m app`` (or, for ``parser``, this checkout's uvicorn config with
another protocol class) on a free loopback port, one worker unless said, ``RUNTIME=onnx``,
logs to a file as a container runtime would take them. Load is wrk (one thread,
``bench/request.lua``), c=64, after a warm-up; runs of different servers alternate so
that drift of the machine spreads over all of them. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "request.lua"
# noop, and each model's native POST with its card's example (as bench/run.py sends it):
# income, salary, iris, digits-v1, digits-v2
ROWS: dict[str, tuple[str, str, bytes | None]] = {"noop": ("GET", "/health/live", None)}
ROWS.update(
    {
        row.id.removeprefix("native/").replace(" ", "-"): (row.method, row.path, row.body)
        for row in run.build_rows(["native"])
    }
)
PARSER_LAUNCH = """
import sys
from app.__main__ import uvicorn_config
from app.runner.process import DrainingServer
from app.settings import get_settings
config = uvicorn_config(get_settings())
if sys.argv[1] != "limited":
    config.http = sys.argv[1]
    config.h11_max_incomplete_event_size = get_settings().max_header_bytes
DrainingServer(config).run()
"""


@contextmanager
def server(
    checkout: Path, env: dict[str, str], argv: list[str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = run.free_port()
    log = Path(tempfile.mkstemp(prefix="ops-bench-", suffix=".log")[1])
    full = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RUNTIME": "onnx",
        "WATCH_INTERVAL_S": "0",
        "LOG_LEVEL": "info",
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv or [sys.executable, "-m", "app"], cwd=checkout, env=full, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "not ready"
            try:
                if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url, process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        log.unlink(missing_ok=True)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children, from /proc."""
    total = 0.0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pids.extend(int(c) for c in children)
    return total


def wrk(
    url: str, row: str, seconds: int, concurrency: int = 64, pid: int | None = None
) -> dict[str, float]:
    method, path, body = ROWS[row]
    body_file = None
    if body is not None:
        body_file = Path(tempfile.mkstemp(suffix=".json")[1])
        body_file.write_bytes(body)
    env = {**os.environ, "BENCH_METHOD": method, "BENCH_BODY_FILE": str(body_file or "")}
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", str(LUA), url + path]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    if body_file:
        body_file.unlink()
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON "))
    summary = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(summary["errors"].values())
    return {
        "cpu_us": cpu / summary["requests"] * 1e6,
        "rps": summary["requests"] / (summary["duration_us"] / 1e6),
        "p99_ms": summary["p99_us"] / 1000,
        "errors": errors,
    }


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """req/s swings with whatever else runs on the machine; the server's CPU time per
    request much less, so both are shown, medians over the runs."""
    lines = [
        "| server | req/s per run | median req/s | server CPU per request, runs | median | "
        "p99 ms (median) | errors |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for name, runs in results.items():
        rps = [r["rps"] for r in runs]
        cpu = [r["cpu_us"] for r in runs]
        p99 = statistics.median(r["p99_ms"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        lines.append(
            f"| {name} | {', '.join(f'{x:,.0f}' for x in rps)} | {statistics.median(rps):,.0f} | "
            f"{', '.join(f'{x:.0f}' for x in cpu)} us | {statistics.median(cpu):.0f} us | "
            f"{p99:.2f} | {errors:.0f} |"
        )
    return "\n".join(lines)


def compare(
    configs: dict[str, tuple[Path, dict[str, str], list[str] | None]],
    row: str,
    seconds: int,
    repeats: int,
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, (checkout, env, argv) in configs.items():
            with server(checkout, env, argv) as (url, process, log):
                wrk(url, row, 2)  # warm-up, discarded
                results[name].append(wrk(url, row, seconds, pid=process.pid))
                if env.get("ACCESS_LOG") == "true":  # the log really was written
                    assert "app.access" in log.read_text(errors="replace")
            last = results[name][-1]
            print(
                f"  {row} {name}: {last['rps']:,.0f} req/s {last['cpu_us']:.0f} us", file=sys.stderr
            )
    return results


def access_log(args: argparse.Namespace) -> None:
    configs = {}
    for label, checkout in (("before", args.before), ("after", ROOT)):
        for on in ("true", "false"):
            configs[f"{label}, ACCESS_LOG={on}"] = (checkout, {"ACCESS_LOG": on}, None)
    for row in args.rows.split(","):
        print(f"\n### {row}, c=64, 1 worker, LOG_LEVEL=info, logs to a file\n")
        print(table(compare(configs, row, args.duration, args.repeats)))


def parser(args: argparse.Namespace) -> None:
    launch = [sys.executable, "-c", PARSER_LAUNCH]
    configs = {
        name: (ROOT, {"ACCESS_LOG": "false"}, [*launch, name])
        for name in ("limited", "httptools", "h11")
    }
    for row in args.rows.split(","):
        print(f"\n### {row}, c=64, 1 worker, access log off\n")
        print(table(compare(configs, row, args.duration, args.repeats)))


def native(args: argparse.Namespace) -> None:
    """Issue 11: native figures (access log off) must not fall below the README table
    measured before the data plane. A table from another day cannot settle that on a VM
    whose runs vary by 15-30%, so both codes run here, alternately, each with its own
    dependencies (``--before-python``: the old checkout pinned FastAPI below 0.129).
    ``--models`` serves one models directory from both, so that a model retrained since
    (bigger, slower to compute) is not counted against the serving code."""
    old = [str(args.before_python), "-m", "app"]
    env = {"ACCESS_LOG": "false"}
    if args.models is not None:
        env["MODELS_DIR"] = str(args.models.resolve())
    configs = {"before": (args.before, env, old), "after": (ROOT, env, None)}
    verdicts = []
    for row in args.rows.split(","):
        print(f"\n### {row}, c=64, 1 worker, access log off\n")
        results = compare(configs, row, args.duration, args.repeats)
        print(table(results))
        medians = {k: statistics.median(r["rps"] for r in v) for k, v in results.items()}
        cpu = {k: statistics.median(r["cpu_us"] for r in v) for k, v in results.items()}
        verdicts.append(
            f"| {row} | {medians['before']:,.0f} | {medians['after']:,.0f} | "
            f"{medians['after'] / medians['before']:.2f} | "
            f"{cpu['before']:.0f} / {cpu['after']:.0f} us |"
        )
    print("\n### after against before, medians of the alternating runs\n")
    print("| row | before req/s | after req/s | after / before | server CPU per request |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(verdicts))


def drain_once(checkout: Path, workers: int) -> dict[str, int]:
    """Clients open a new connection per request; SIGTERM once 50 were answered."""
    counts = {"answered": 0, "refused": 0, "unanswered": 0, "other_status": 0}
    lock = threading.Lock()
    stop = threading.Event()
    body = {"instances": [{"image": [[0] * 28] * 28}] * 50}

    def client(url: str) -> None:
        while not stop.is_set():
            try:
                with httpx.Client(timeout=httpx.Timeout(30, connect=15)) as http:
                    status = http.post(url + "/models/digits/predict", json=body).status_code
                key = "answered" if status == 200 else "other_status"
            except (httpx.ConnectError, httpx.ConnectTimeout):
                key = "refused"
            except httpx.TransportError:
                key = "unanswered"
            with lock:
                counts[key] += 1
            if key != "answered":
                return

    env = {"WORKERS": str(workers), "BATCHING": "false", "LOG_LEVEL": "warning"}
    with server(checkout, env) as (url, process, _):
        threads = [threading.Thread(target=client, args=(url,)) for _ in range(32)]
        for thread in threads:
            thread.start()
        while counts["answered"] < 50:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(60)
        process.wait(60)
    return counts


def drain(args: argparse.Namespace) -> None:
    print("\n### SIGTERM under load: 32 clients, a new connection per request, digits x50\n")
    print("| server | workers | runs | answered | refused (never accepted) | unanswered |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, checkout in (("before", args.before), ("after", ROOT)):
        for workers in (1, 2):
            runs = [drain_once(checkout, workers) for _ in range(args.repeats)]
            total = {k: sum(r[k] for r in runs) for k in runs[0]}
            print(
                f"| {label} | {workers} | {len(runs)} | {total['answered']} | {total['refused']} | "
                f"{total['unanswered']} ({', '.join(str(r['unanswered']) for r in runs)}) |"
            )


def main() -> None:
    parser_ = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser_.add_argument("what", choices=["access-log", "parser", "drain", "native"])
    parser_.add_argument("--before", type=Path, help="an older checkout to compare with")
    parser_.add_argument(
        "--before-python",
        type=Path,
        default=Path(sys.executable),
        help="the interpreter that runs --before (a venv holding its own dependency pins)",
    )
    parser_.add_argument(
        "--models", type=Path, help="native: one models directory for both servers"
    )
    parser_.add_argument("--rows", default="noop", help=",".join(ROWS))
    parser_.add_argument("--duration", type=int, default=10)
    parser_.add_argument("--repeats", type=int, default=2)
    args = parser_.parse_args()
    if args.what in ("access-log", "drain", "native") and args.before is None:
        parser_.error("--before is needed")
    unknown = set(args.rows.split(",")) - ROWS.keys()
    if unknown:
        parser_.error(f"unknown rows {sorted(unknown)}; rows: {','.join(ROWS)}")
    commands = {"access-log": access_log, "parser": parser, "drain": drain, "native": native}
    commands[args.what](args)


if __name__ == "__main__":
    main()
