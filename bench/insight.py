"""What model insight costs: explanation latency, and plain predictions beside it.

Starts the service as a user does (``python -m app``) and prints one table:

* ``explain p50/p99``: one client explaining one income row at a time
  (``POST /models/income/explain``), exact Shapley over 14 raw fields;
* plain-prediction throughput of ``--clients`` clients posting one income row each,
  on a server with its defaults (drift window, out-of-range check and calibration on;
  the prediction store for live accuracy off), with the store on (``FEEDBACK=true``:
  every answer is also queued for SQLite), and with the defaults while
  ``--explainers`` clients explain rows without pause beside them.

Issue 16 asks for an explain p50 <= 20 ms and plain predictions within 10% of their
speed without insight. The load generator shares the machine's cores with the
server, so compare rows of one run, not numbers across machines.

    .venv/bin/python bench/insight.py                    # 4 clients, 15 s per row
    .venv/bin/python bench/insight.py --seconds 3 --explains 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from service import running

ROOT = Path(__file__).resolve().parent.parent
ROWS = [
    {
        "age": 45,
        "workclass": "Private",
        "fnlwgt": 200000,
        "education": "Masters",
        "education_num": 14,
        "marital_status": "Married-civ-spouse",
        "occupation": "Exec-managerial",
        "relationship": "Husband",
        "race": "White",
        "sex": "Male",
        "capital_gain": 5000,
        "capital_loss": 0,
        "hours_per_week": 50,
        "native_country": "United-States",
    },
    {
        "age": 23,
        "workclass": "Private",
        "fnlwgt": 120000,
        "education": "HS-grad",
        "education_num": 9,
        "marital_status": "Never-married",
        "occupation": "Sales",
        "relationship": "Own-child",
        "race": "Black",
        "sex": "Female",
        "capital_gain": 0,
        "capital_loss": 0,
        "hours_per_week": 30,
        "native_country": "United-States",
    },
    {
        "age": 61,
        "workclass": None,
        "fnlwgt": 90000,
        "education": "Doctorate",
        "education_num": 16,
        "marital_status": "Widowed",
        "occupation": None,
        "relationship": "Not-in-family",
        "race": "Asian-Pac-Islander",
        "sex": "Female",
        "capital_gain": 0,
        "capital_loss": 1900,
        "hours_per_week": 12,
        "native_country": "India",
    },
]


@contextmanager
def service(port: int, **env: str) -> Iterator[str]:
    with running(port, ACCESS_LOG="false", **env):
        yield f"http://127.0.0.1:{port}"


def explain_latency(url: str, count: int) -> list[float]:
    latencies = []
    with httpx.Client(timeout=30) as client:
        for i in range(count + 5):
            started = time.perf_counter()
            answer = client.post(f"{url}/models/income/explain", json=ROWS[i % len(ROWS)])
            if i >= 5:  # warm-up
                latencies.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
    return latencies


def hammer(url: str, path: str, stop: threading.Event, counts: list[int]) -> None:
    done = 0
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            answer = client.post(f"{url}{path}", json=ROWS[done % len(ROWS)])
            if answer.status_code == 200:
                done += 1
    counts.append(done)


def throughput(url: str, clients: int, explainers: int, seconds: float) -> tuple[float, float]:
    stop = threading.Event()
    plain: list[int] = []
    explained: list[int] = []
    threads = [
        threading.Thread(target=hammer, args=(url, "/models/income/predict", stop, plain))
        for _ in range(clients)
    ] + [
        threading.Thread(target=hammer, args=(url, "/models/income/explain", stop, explained))
        for _ in range(explainers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    return sum(plain) / seconds, sum(explained) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--explainers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--explains", type=int, default=300)
    parser.add_argument("--port", type=int, default=18124)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{tmp}/predictions.db"
        with service(args.port, FEEDBACK="false") as url:
            latencies = sorted(explain_latency(url, args.explains))
            results["off"] = throughput(url, args.clients, 0, args.seconds)
            results["beside"] = throughput(url, args.clients, args.explainers, args.seconds)
        with service(args.port, FEEDBACK="true", DATABASE_URL=database) as url:
            results["on"] = throughput(url, args.clients, 0, args.seconds)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    off = results["off"][0]
    lines = [
        f"income, one row per request; {args.clients} prediction clients; {args.seconds:g} s "
        f"per row; {os.cpu_count()} cores shared with the load generator",
        "",
        f"explain (one client, {len(latencies)} requests): p50 {p50:.2f} ms, p99 {p99:.2f} ms",
        "",
        "| server | plain predictions/s | vs defaults | explanations/s |",
        "|---|---|---|---|",
    ]
    for key, name in (
        ("off", "defaults (drift, out-of-range, calibration on; store off)"),
        ("on", "prediction store on too (FEEDBACK=true)"),
        ("beside", f"defaults, {args.explainers} client(s) explaining beside"),
    ):
        plain, explained = results[key]
        lines.append(f"| {name} | {plain:.0f} | {plain / off - 1:+.1%} | {explained:.0f} |")
    print("\n".join(lines))
    print(json.dumps({"explain_p50_ms": p50, "explain_p99_ms": p99, "rates": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
