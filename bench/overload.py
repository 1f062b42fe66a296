"""Overload: what happens at c=1000, against the server as a user starts it.

For each load (income with one instance; digits v2 with 100 instances per request)
it measures, in one run: the p99 at c=64 (the reference, the same client measured the
same way for min(10, --seconds) s), then c=1000 for --seconds: how many requests were
admitted (200) and their p99, how many were refused (503 with Retry-After), other
answers and socket errors, and the server's RSS at idle and at peak. Issue 14's targets:
the admitted p99 at most 5x the p99 at c=64, and the peak RSS within 20% of idle plus
the bounded queue's worth of data (MAX_IN_FLIGHT admitted bodies).

Clients (``--client``):

- ``wrk`` (default): wrk, 2 threads, ``bench/overload.lua`` counting answers by status.
  wrk times every answer together, so the admitted p99 comes from the server's own
  request-duration histogram in ``/metrics`` (server-side: from the app's outermost
  middleware to the answer; time in the kernel's accept and socket queues before
  uvicorn parses the request is not in it). wrk's p50/p99 over all answers are shown.
- ``polite``: an asyncio keep-alive loop per connection that, after a 503, waits the
  Retry-After seconds (plus up to 10% jitter) before its next request; client-side p99
  by status.
- ``eager``: the same loop retrying at once after a 503, ignoring Retry-After. Its
  client-side times include the client's own queueing on the cores it shares with the
  server.

The server-side estimate is printed for every client, so the client-side figures can be
compared with it.

    .venv/bin/python bench/overload.py                      # both loads, wrk, 30 s at c=1000
    .venv/bin/python bench/overload.py --seconds 10 --loads income --client polite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
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
from service import running

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "overload.lua"
CLIENTS = ("wrk", "polite", "eager")
REFERENCE_CLIENTS = 64
TARGET_RATIO = 5.0
RSS_SLACK = 1.2
SCRAPE_EVERY_S = 0.5
LABEL = re.compile(r'(\w+)="([^"]*)"')
Results = list[tuple[int, float]]  # (status or -1 for a socket error, seconds)


@dataclass
class ServerSide:
    """The server's request-duration histogram for one model, before/after delta."""

    answers: int  # requests that reached the model (admission refusals carry no model)
    non_200: int  # of those, answered with another status
    p99_ms: float | None  # of the 200s; an upper bound when non_200 > 0


@dataclass
class Figures:
    client: str
    clients: int
    seconds: float
    admitted: int
    refused: int
    other: int  # other statuses and socket errors
    p50_ms: float  # client side, every answer
    p99_ms: float
    admitted_p99_ms: float | None  # client side, 200s only; None: the client cannot tell
    refused_p99_ms: float | None
    server: ServerSide | None = None

    def admitted_p99(self) -> tuple[float | None, str]:
        """The admitted p99 and the side that measured it."""
        if self.admitted_p99_ms is not None:
            return self.admitted_p99_ms, "client"
        return (self.server.p99_ms if self.server else None), "server"


# ----------------------------------------------------------------------------- loads
def body_for(load: str) -> tuple[str, str, bytes]:
    """The path, the model name as /metrics labels it, and the body."""
    if load == "income":
        card = json.loads((ROOT / "models/income/1/model_card.json").read_text())
        return "/models/income/predict", "income", json.dumps(card["example"]).encode()
    card = json.loads((ROOT / "models/digits/2/model_card.json").read_text())
    instances = [card["example"]] * 100
    body = json.dumps({"instances": instances}).encode()
    return "/models/digits/versions/2/predict", "digits", body


def max_in_flight() -> int:
    """The server's in-flight bound, read the way the server reads it (env, defaults)."""
    sys.path.insert(0, str(ROOT))
    from app.settings import Settings

    return Settings().max_in_flight


# ----------------------------------------------------------------------------- memory
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


# ----------------------------------------------------------------------------- /metrics
@dataclass
class Scrape:
    buckets: dict[float, float]  # le -> cumulative count
    non_200: float
    in_flight: float


def scrape(client: httpx.Client, model: str) -> Scrape:
    text = client.get("/metrics").text
    scraped = Scrape({}, 0.0, 0.0)
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if not rest:
            if name.startswith("keras_serve_requests_in_flight "):
                scraped.in_flight = float(line.split()[1])
            continue
        labels = dict(LABEL.findall(rest))
        if labels.get("model") != model:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if name == "keras_serve_request_duration_seconds_bucket":
            le = float(labels["le"])
            scraped.buckets[le] = scraped.buckets.get(le, 0.0) + value
        elif name == "keras_serve_requests_total" and labels.get("status") != "200":
            scraped.non_200 += value
    return scraped


def settle(client: httpx.Client, model: str, limit_s: float = 60) -> Scrape:
    """The scrape once the server has answered everything (the scrape is the one left)."""
    deadline = time.monotonic() + limit_s
    while True:
        scraped = scrape(client, model)
        if scraped.in_flight <= 1 or time.monotonic() > deadline:
            return scraped
        time.sleep(0.2)


def quantile_at(rank: float, buckets: list[tuple[float, float]]) -> float | None:
    """The value at ``rank`` (1-based) of cumulative buckets, linear within a bucket
    (as Prometheus' histogram_quantile); the last finite bound for the +Inf bucket."""
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return lower + (le - lower) * share
        lower, below = le, cumulative
    return None


def server_side(before: Scrape, after: Scrape) -> ServerSide:
    """The p99 of the 200s from the histogram's delta. The histogram has no status
    label: when answers that reached the model were not 200 (a full batch queue, a
    deadline), they are taken as the fastest, which bounds the 200s' p99 from above."""
    delta = sorted((le, n - before.buckets.get(le, 0.0)) for le, n in after.buckets.items())
    answers = int(delta[-1][1]) if delta else 0
    non_200 = int(after.non_200 - before.non_200)
    admitted = answers - non_200
    if admitted <= 0:
        return ServerSide(answers, non_200, None)
    value = quantile_at(math.ceil(0.99 * admitted) + non_200, delta)
    return ServerSide(answers, non_200, None if value is None else value * 1000)


# ----------------------------------------------------------------------------- wrk
def drive_wrk(port: int, path: str, body: bytes, clients: int, seconds: float) -> Figures:
    with tempfile.NamedTemporaryFile(suffix=".json") as file:
        file.write(body)
        file.flush()
        command = [
            "wrk",
            f"--threads={min(2, clients)}",
            f"--connections={clients}",
            f"--duration={max(1, round(seconds))}s",
            "--timeout=30s",
            f"--script={LUA}",
            f"http://127.0.0.1:{port}{path}",
        ]
        environment = {**os.environ, "BENCH_BODY_FILE": file.name}
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=seconds + 90
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("OVERLOAD_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.removeprefix("OVERLOAD_JSON "))
    return Figures(
        client="wrk",
        clients=clients,
        seconds=raw["duration_us"] / 1e6,
        admitted=raw["ok"],
        refused=raw["refused"],
        other=raw["other_status"] + sum(raw["socket_errors"].values()),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        admitted_p99_ms=None,
        refused_p99_ms=None,
    )


# ----------------------------------------------------------------------------- asyncio
def read_head(head: bytes) -> tuple[int, int, float, bool]:
    """Status, content length, Retry-After seconds (0 when absent), connection: close."""
    length, retry_after = 0, 0.0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"retry-after":
            retry_after = float(value)
    return int(head[9:12]), length, retry_after, b"connection: close" in head.lower()


async def connection(
    port: int, request: bytes, until: float, results: Results, polite: bool
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
            status, length, retry_after, close = read_head(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(length)
            results.append((status, time.perf_counter() - started))
            if close:
                break
            if polite and status == 503:
                wait = retry_after * random.uniform(1.0, 1.1)
                await asyncio.sleep(min(wait, max(0.0, until - time.perf_counter())))
    except (OSError, asyncio.IncompleteReadError, ValueError):
        results.append((-1, 0.0))
    finally:
        writer.close()


async def gather(
    port: int, path: str, body: bytes, clients: int, seconds: float, polite: bool
) -> Results:
    request = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    results: Results = []
    until = time.perf_counter() + seconds
    await asyncio.gather(
        *(connection(port, request, until, results, polite) for _ in range(clients))
    )
    return results


def p(q: float, values: list[float]) -> float | None:
    """The q-quantile of sorted seconds, in ms (None when empty)."""
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def drive_asyncio(
    port: int, path: str, body: bytes, clients: int, seconds: float, polite: bool
) -> Figures:
    results = asyncio.run(gather(port, path, body, clients, seconds, polite))
    every = sorted(t for s, t in results if s > 0)
    admitted = sorted(t for s, t in results if s == 200)
    refused = sorted(t for s, t in results if s == 503)
    return Figures(
        client="polite" if polite else "eager",
        clients=clients,
        seconds=seconds,
        admitted=len(admitted),
        refused=len(refused),
        other=len(results) - len(admitted) - len(refused),
        p50_ms=p(0.5, every) or 0.0,
        p99_ms=p(0.99, every) or 0.0,
        admitted_p99_ms=p(0.99, admitted),
        refused_p99_ms=p(0.99, refused),
    )


# ----------------------------------------------------------------------------- runs
Driver = Callable[[int, str, bytes, int, float], Figures]


def driver(client: str) -> Driver:
    if client == "wrk":
        return drive_wrk
    polite = client == "polite"
    return lambda port, path, body, c, s: drive_asyncio(port, path, body, c, s, polite)


class Scraper:
    """Scrapes /metrics every SCRAPE_EVERY_S on one kept-alive connection while a client
    runs (a new connection waits long in a flooded accept queue) and keeps each scrape
    with the time its answer arrived."""

    def __init__(self, client: httpx.Client, model: str) -> None:
        self.client, self.model, self._stop = client, model, threading.Event()
        self.scrapes: list[tuple[float, Scrape]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_EVERY_S):
            scraped = scrape(self.client, self.model)
            self.scrapes.append((time.perf_counter(), scraped))

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def last_before(self, moment: float) -> Scrape | None:
        return next((s for at, s in reversed(self.scrapes) if at <= moment), None)


def measure(drive: Driver, port: int, load: str, clients: int, seconds: float) -> Figures:
    """One client run, with the server's histogram delta from the idle server to the last
    scrape answered before the client's time was up: the answers the server gives after
    the client has stopped (to requests still in its socket buffers) stay out."""
    path, model, body = body_for(load)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        before = settle(client, model)
        with Scraper(client, model) as scraper:
            until = time.perf_counter() + seconds
            figures = drive(port, path, body, clients, seconds)
        after = scraper.last_before(until)
    figures.server = None if after is None else server_side(before, after)
    return figures


@dataclass
class Row:
    load: str
    body_bytes: int
    reference: Figures
    heavy: Figures
    peak_mb: float


# ----------------------------------------------------------------------------- report
def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def table_row(row: Row, idle_mb: float, queue_slots: int) -> str:
    heavy, reference = row.heavy, row.reference
    p99, side = heavy.admitted_p99()
    ref_p99, ref_side = reference.admitted_p99()
    ratio = p99 / ref_p99 if p99 is not None and ref_p99 else None
    ratio_text = "n/a" if ratio is None else f"{ratio:.2f}x {verdict(ratio <= TARGET_RATIO)}"
    bound = idle_mb * RSS_SLACK + queue_slots * row.body_bytes / 1e6
    server = heavy.server or ServerSide(0, 0, None)
    bounded = " (upper bound)" if server.non_200 and server.p99_ms is not None else ""
    cells = [
        row.load,
        heavy.client,
        f"{heavy.clients:,}",
        f"{heavy.seconds:.1f}",
        f"{heavy.admitted:,} ({heavy.admitted / heavy.seconds:,.0f}/s)",
        f"{heavy.refused:,}",
        f"{heavy.other:,}",
        f"{ms(p99)} ({side})",
        f"{ms(server.p99_ms)}{bounded} (n={server.answers - server.non_200:,})",
        f"{ms(heavy.p50_ms)} / {ms(heavy.p99_ms)}",
        ms(heavy.refused_p99_ms),
        f"{ms(ref_p99)} ({ref_side})",
        ratio_text,
        f"{idle_mb:.0f}",
        f"{row.peak_mb:.0f}",
        f"{bound:.0f} {verdict(row.peak_mb <= bound)}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| load | client | c | s | admitted 200 (req/s) | refused 503 | other | admitted p99 ms "
    "(side) | server-side 200 p99 ms | all answers p50 / p99 ms (client) | 503 p99 ms "
    f"(client) | p99 c={REFERENCE_CLIENTS} ms (side) | ratio, target <= {TARGET_RATIO:g}x | "
    "idle RSS MB | peak RSS MB | RSS bound MB |"
)


NOTES = (
    "server-side: keras_serve_request_duration_seconds for the load's model, delta from the "
    f"idle server to the last scrape (one every {SCRAPE_EVERY_S:g} s during the run) "
    "answered before the client's time was up (n: the 200s in it), interpolated within its "
    "buckets (..., 0.1, 0.25, 0.5, 1, 2.5, 5 s, ...). It starts at the app's outermost "
    "middleware: time in kernel queues and before uvicorn parses the request is not in it.",
    "(upper bound): the histogram has no status label, so answers that reached the model "
    "with another status were counted as the fastest.",
    "client: per answer, from writing the request to reading the whole response, in the "
    "client's own event loop on the cores it shares with the server.",
    f"RSS bound: idle x {RSS_SLACK:g} + MAX_IN_FLIGHT x body bytes; RSS of the server's "
    "process tree, sampled every 0.1 s.",
)


def report(rows: list[Row], idle_mb: float, queue_slots: int) -> None:
    client = rows[0].heavy.client if rows else "?"
    print(
        f"server: python -m app, defaults (MAX_IN_FLIGHT {queue_slots}); client {client}; "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for row in rows:
        print(table_row(row, idle_mb, queue_slots))
    print()
    for note in NOTES:
        print(f"- {note}")


# ----------------------------------------------------------------------------- cli
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", default="income,digits", help="income, digits")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--client", choices=CLIENTS, default="wrk")
    args = parser.parse_args()
    if args.client == "wrk" and shutil.which("wrk") is None:
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    drive, port, rows = driver(args.client), free_port(), []
    reference_s = min(10.0, args.seconds)
    with running(port) as server:
        idle = rss_mb(server.pid)
        for load in args.loads.split(","):
            reference = measure(drive, port, load, REFERENCE_CLIENTS, reference_s)
            with Peak(server.pid) as peak:
                heavy = measure(drive, port, load, args.clients, args.seconds)
            rows.append(Row(load, len(body_for(load)[2]), reference, heavy, peak.peak))
            time.sleep(2)
    report(rows, idle, max_in_flight())
    return 0


if __name__ == "__main__":
    sys.exit(main())
