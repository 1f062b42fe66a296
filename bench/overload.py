"""Overload: what happens at c=1000, against the server as a user starts it.

For each load (income with one instance; digits v2 with 100 instances per request)
it measures, in one run: the p99 at c=64 (the reference), then c=1000 for 30 s: how
many requests were admitted (200) and their p99, how many were refused (503 with
Retry-After), other errors, and the server's RSS at idle and at peak. Issue 14's
targets: the admitted p99 at most 5x the p99 at c=64, and the peak RSS within 20% of
idle plus the bounded queue's worth of data.

The client is a small asyncio HTTP/1.1 keep-alive loop per connection (uvloop when
installed), so that it can hold 1000 connections and time each answer by status;
wrk times all answers together. It shares the 2 cores with the server, as wrk does.

    .venv/bin/python bench/overload.py                      # both loads, 30 s at c=1000
    .venv/bin/python bench/overload.py --seconds 10 --loads income
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from service import running

ROOT = Path(__file__).resolve().parent.parent


def body_for(load: str) -> tuple[str, bytes]:
    if load == "income":
        card = json.loads((ROOT / "models/income/1/model_card.json").read_text())
        return "/models/income/predict", json.dumps(card["example"]).encode()
    card = json.loads((ROOT / "models/digits/2/model_card.json").read_text())
    instances = [card["example"]] * 100
    return "/models/digits/versions/2/predict", json.dumps({"instances": instances}).encode()


def rss_mb(pid: int) -> float:
    total = 0.0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in children.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


class Peak:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.1)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def connection(
    port: int, request: bytes, until: float, results: list[tuple[int, float]]
) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        results.append((-1, 0.0))
        return
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            results.append((status, time.perf_counter() - started))
            if b"connection: close" in head.lower():
                break
    except (OSError, asyncio.IncompleteReadError, ValueError):
        results.append((-1, 0.0))
    finally:
        writer.close()


async def drive(
    port: int, path: str, body: bytes, clients: int, seconds: float
) -> list[tuple[int, float]]:
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    results: list[tuple[int, float]] = []
    until = time.perf_counter() + seconds
    await asyncio.gather(*(connection(port, request, until, results) for _ in range(clients)))
    return results


def summary(results: list[tuple[int, float]], seconds: float) -> dict[str, float]:
    admitted = sorted(t for s, t in results if s == 200)
    p99 = admitted[min(len(admitted) - 1, int(0.99 * len(admitted)))] * 1000 if admitted else 0.0
    return {
        "admitted": len(admitted),
        "admitted_rps": len(admitted) / seconds,
        "p99_ms": p99,
        "refused": sum(1 for s, _ in results if s == 503),
        "other": sum(1 for s, _ in results if s not in (200, 503)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default="income,digits", help="income, digits")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rows = []
    with running(port) as server:
        idle = rss_mb(server.pid)
        for load in args.loads.split(","):
            path, body = body_for(load)
            reference = summary(asyncio.run(drive(port, path, body, 64, 10)), 10)
            with Peak(server.pid) as peak:
                heavy = summary(
                    asyncio.run(drive(port, path, body, args.clients, args.seconds)), args.seconds
                )
            rows.append((load, len(body), reference, heavy, peak.peak))
            time.sleep(2)
    print(
        f"server: python -m app, defaults; idle RSS {idle:.0f} MB; "
        f"{args.clients} clients, {args.seconds:g} s"
    )
    print()
    print(
        "| load | body bytes | p99 c=64 ms | admitted c=1000 (req/s) | admitted p99 ms | "
        "p99 ratio | refused 503 | other | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for load, size, reference, heavy, peak in rows:
        ratio = heavy["p99_ms"] / reference["p99_ms"] if reference["p99_ms"] else 0
        print(
            f"| {load} | {size:,} | {reference['p99_ms']:.1f} | {heavy['admitted']:,} "
            f"({heavy['admitted_rps']:,.0f}) | {heavy['p99_ms']:.1f} | {ratio:.2f}x | "
            f"{heavy['refused']:,} | {heavy['other']:,} | {peak:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
