"""Soak test: load across native, v2 and gRPC with several workers while the repository
watcher sees a version copied in file by file, a version removed, and a broken version
offered (then fixed); then hot reloads through the admin API.

    python scripts/soak.py [--seconds 120] [--concurrency 64] [--workers 2] [--reloads 20]

It starts the service itself (``python -m app``, ONNX Runtime) on free loopback ports,
over a copy of ``models/``, and drives it with :mod:`soak_load`. Every request is
pinned to a committed version the events never touch, so 404s for the removed
version cannot happen and any answer but 200 (gRPC: OK) is an error. It reports:

- errors (must be 0);
- RSS of the service (supervisor and workers summed), start against end (at most +10%);
- metrics: ``keras_serve_requests_total`` never goes down across scrapes, and grows by
  exactly the requests the client sent;
- how long each watcher event took to show on ``/health/ready`` (several answers in a
  row on fresh connections, so that every worker is asked).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import soak_load

ROOT = Path(__file__).resolve().parent.parent
TOKEN = secrets.token_hex(16)
PINNED = [("digits", 1), ("digits", 2), ("income", 1), ("iris", 1), ("iris", 2), ("salary", 1)]
EVENT_MODEL, SOURCE = "iris", 2  # new versions are copies of iris v2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    found = [pid]
    for p in found:
        path = Path(f"/proc/{p}/task/{p}/children")
        if path.exists():
            found += [int(c) for c in path.read_text().split()]
    return found


def rss_mb(pid: int) -> float:
    """Resident memory of the service: the process and every descendant, in MB."""
    total = 0
    for p in descendants(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return total / 1024


def requests_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("keras_serve_requests_total{")
    )


# ------------------------------------------------------------------ watcher events
def copy_file_by_file(source: Path, target: Path, pause: float, broken: bool = False) -> None:
    """``cp -r`` as it may go: the card first, then one file at a time, the ONNX
    file in two halves (``broken``: only a third of it)."""
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name != "model_card.json")
    for file in files:
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        data = (source / file).read_bytes()
        if file.name == "model_card.json":
            data = data.replace(b'"version": 2', b'"version": ' + target.name.encode())
        if file.name == "model.onnx" and broken:
            (target / file).write_bytes(data[: len(data) // 3])
        elif file.name == "model.onnx":
            (target / file).write_bytes(data[: len(data) // 2])
            time.sleep(pause)
            with open(target / file, "ab") as out:
                out.write(data[len(data) // 2 :])
        else:
            (target / file).write_bytes(data)
        time.sleep(pause)


def status_everywhere(url: str, version: int) -> tuple[str, str]:
    """The version's status and reason on /health/ready, once 10 answers in a row on
    fresh connections agree (either worker may answer each)."""
    seen = []
    for _ in range(10):
        with httpx.Client(base_url=url, timeout=10) as http:
            models = http.get("/health/ready").json()["models"]
        match = [m for m in models if m["name"] == EVENT_MODEL and m["version"] == version]
        seen.append((match[0]["status"], match[0]["reason"]) if match else ("ABSENT", ""))
    return seen[0] if len(set(seen)) == 1 else ("MIXED", str(sorted(set(seen))))


@dataclass
class Event:
    at: float  # share of the run at which it starts
    what: str
    act: Callable[[Path], None]
    version: int
    expect: str  # the status every worker must report


def events(pause: float) -> list[Event]:
    source = ROOT / "models" / EVENT_MODEL / str(SOURCE)
    return [
        Event(
            0.05,
            "v3 copied in file by file",
            lambda d: copy_file_by_file(source, d / "3", pause),
            3,
            "AVAILABLE",
        ),
        Event(0.30, "v3 removed", lambda d: shutil.rmtree(d / "3"), 3, "UNLOADED"),
        Event(
            0.45,
            "v4 offered broken (ONNX cut short)",
            lambda d: copy_file_by_file(source, d / "4", pause, broken=True),
            4,
            "FAILED",
        ),
        Event(
            0.70,
            "v4 fixed in place",
            lambda d: shutil.copy(source / "model.onnx", d / "4"),
            4,
            "AVAILABLE",
        ),
    ]


def run_events(url: str, models: Path, seconds: float, started: float, rows: list[str]) -> None:
    """Each event at its time; waits (up to 30 s) until every worker reports it."""
    for event in events(pause=0.1):
        time.sleep(max(0.0, started + event.at * seconds - time.monotonic()))
        begun = time.monotonic()
        event.act(models / EVENT_MODEL)
        acted = time.monotonic()
        status, reason = "", ""
        while time.monotonic() - acted < 30:
            status, reason = status_everywhere(url, event.version)
            if status == event.expect:
                break
            time.sleep(0.2)
        took = time.monotonic() - acted
        shown = f"{status}: {reason}" if reason else status
        rows.append(
            f"| {begun - started:.1f} | {EVENT_MODEL} {event.what} | {acted - begun:.1f} "
            f"| {took:.1f} | {shown[:70]} | {'ok' if status == event.expect else 'FAIL'} |"
        )


# ------------------------------------------------------------------------ the run
def start_service(models: Path, workers: int) -> tuple[subprocess.Popen[bytes], str, str]:
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "GRPC_PORT": str(grpc_port),
        "HOST": "127.0.0.1",
        "MODELS_DIR": str(models),
        "RUNTIME": "onnx",
        "WORKERS": str(workers),
        "ADMIN_TOKEN": TOKEN,
        "ACCESS_LOG": "false",
        "LOG_LEVEL": "warning",
        "WATCH_INTERVAL_S": "0.5",
    }
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    return server, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}"


def wait_ready(url: str) -> bool:
    for _ in range(1200):
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def load(url: str, grpc: str, work: soak_load.Plan, seconds: float, c: int) -> soak_load.Tally:
    port = int(url.rsplit(":", 1)[1])
    return asyncio.run(soak_load.run("127.0.0.1", port, grpc, work, seconds, c))


def scrape_while(url: str, stop: threading.Event, totals: list[float]) -> None:
    while not stop.wait(2.0):
        totals.append(requests_total(url))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reloads", type=int, default=20)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="soak-models-") as tmp:
        models = Path(tmp) / "models"
        shutil.copytree(ROOT / "models", models)
        work = soak_load.plan(models, PINNED)
        server, url, grpc = start_service(models, args.workers)
        try:
            if not wait_ready(url):
                print("the service did not become ready", file=sys.stderr)
                return 2
            time.sleep(2)  # every worker up
            load(url, grpc, work, 3, 8)  # warm-up: first allocations, caches, batchers
            before = requests_total(url)
            start_rss = rss_mb(server.pid)
            totals: list[float] = [before]
            stop, event_rows = threading.Event(), []
            started = time.monotonic()
            side = [
                threading.Thread(target=scrape_while, args=(url, stop, totals)),
                threading.Thread(
                    target=run_events, args=(url, models, args.seconds, started, event_rows)
                ),
            ]
            for thread in side:
                thread.start()
            tally = load(url, grpc, work, args.seconds, args.concurrency)
            elapsed = time.monotonic() - started
            stop.set()
            for thread in side:
                thread.join()
            time.sleep(0.5)  # counters are written just after the answer
            totals.append(requests_total(url))
            end_rss = rss_mb(server.pid)
            reloads = hot_reloads(url, server.pid, args.reloads)
        finally:
            server.terminate()
            server.wait(timeout=60)
    return report(args, tally, elapsed, event_rows, totals, (start_rss, end_rss), reloads)


def hot_reloads(url: str, pid: int, rounds: int) -> tuple[int, list[float]]:
    """Reload digits v2 and income v1 ``rounds`` times; failed loads and RSS per round."""
    failed, memory = 0, [rss_mb(pid)]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as h:
        for _ in range(rounds):
            for name, version in (("digits", 2), ("income", 1)):
                failed += h.post(f"/admin/models/{name}/versions/{version}/load").status_code != 200
            memory.append(rss_mb(pid))
    return failed, memory


def report(
    args: argparse.Namespace,
    tally: soak_load.Tally,
    elapsed: float,
    event_rows: list[str],
    totals: list[float],
    rss: tuple[float, float],
    reloads: tuple[int, list[float]],
) -> int:
    errors = sum(tally.errors.values())
    sent = sum(tally.sent.values())
    print(
        f"## Soak: {args.seconds:.0f} s at concurrency {args.concurrency}, WORKERS={args.workers}"
        f", native + v2 + gRPC, pinned to {len(PINNED)} versions the events never touch\n"
    )
    print("| protocol | requests | requests/s | errors |\n|---|---|---|---|")
    for protocol in ("native", "v2", "grpc"):
        wrong = sum(n for (p, _), n in tally.errors.items() if p == protocol)
        count = tally.sent[protocol]
        print(f"| {protocol} | {count} | {count / elapsed:.0f} | {wrong} |")
    print(f"| all | {sent} | {sent / elapsed:.0f} | {errors} |")
    if errors:
        print("\nerrors by protocol and status:", dict(tally.errors))

    print("\n## Watcher events during the load (WATCH_INTERVAL_S=0.5)\n")
    print("| at (s) | event | acting took (s) | every worker after (s) | status | |")
    print("|---|---|---|---|---|---|")
    print("\n".join(event_rows))
    events_ok = len(event_rows) == len(events(0)) and all(r.endswith("| ok |") for r in event_rows)

    start_rss, end_rss = rss
    growth = (end_rss - start_rss) / start_rss * 100
    print("\n## Memory: RSS of the supervisor and its workers, summed\n")
    print("| start (MB) | end (MB) | growth |\n|---|---|---|")
    print(f"| {start_rss:.1f} | {end_rss:.1f} | {growth:+.1f}% |")

    counted = totals[-1] - totals[0]
    monotonic = all(b >= a for a, b in itertools.pairwise(totals))
    print("\n## Metrics: keras_serve_requests_total over the load\n")
    print("| scrapes | monotonic | counter growth | client requests | equal |")
    print("|---|---|---|---|---|")
    print(f"| {len(totals)} | {monotonic} | {counted:.0f} | {sent} | {counted == sent} |")

    failed, memory = reloads
    reload_growth = (memory[-1] - memory[0]) / memory[0] * 100
    print(f"\n## Hot reloads: {args.reloads} x (digits v2 + income v1), admin API\n")
    print("| reloads | failed | RSS before (MB) | RSS after (MB) | growth |\n|---|---|---|---|---|")
    print(
        f"| {args.reloads * 2} | {failed} | {memory[0]:.1f} | {memory[-1]:.1f} "
        f"| {reload_growth:+.1f}% |"
    )
    ok = (
        errors == 0
        and events_ok
        and growth <= 10
        and monotonic
        and counted == sent
        and failed == 0
        and reload_growth <= 10
    )
    print("\nresult:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
