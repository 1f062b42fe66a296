"""Does heavy input stall the event loop? Liveness latency while clients send the
largest inputs the limits allow.

Starts the service as a user does (``python -m app``), then for each load: N clients
in a loop upload a 4000x4000 PNG (16 megapixels, the default pixel limit; a few tens
of KB on the wire) or post an ~8 MB JSON body of digits instances; meanwhile one
client asks ``GET /health/live`` every 20 ms. Prints a table of the liveness p50, p99
and max next to the same probe on an idle server. Issue 11 asks for a p99 under
100 ms while 12 clients upload such images.

    .venv/bin/python bench/stall.py                 # 12 clients, 20 s per load
    .venv/bin/python bench/stall.py --clients 4 --seconds 5
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw
from service import running

ROOT = Path(__file__).resolve().parent.parent


def big_png(side: int = 4000) -> bytes:
    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).line(
        [(side // 2, side // 5), (side // 2, 4 * side // 5)], fill=0, width=side // 20
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def big_json(limit: int = 8 * 1024 * 1024) -> bytes:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (28, 28)).tolist()
    one = len(json.dumps({"image": image})) + 2
    count = min(1000, (limit - 32) // one)
    return json.dumps({"instances": [{"image": image}] * count}).encode()


def probe(url: str, seconds: float, stop: threading.Event) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            started = time.perf_counter()
            client.get(f"{url}/health/live")
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    return latencies


def load(url: str, kind: str, body: bytes, stop: threading.Event, answers: list[int]) -> None:
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            if kind == "image":
                files = {"file": ("big.png", body, "image/png")}
                response = client.post(f"{url}/models/digits/predict/image", files=files)
            else:
                response = client.post(
                    f"{url}/models/digits/predict",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            answers.append(response.status_code)


def row(name: str, latencies: list[float], answers: list[int]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    codes = ", ".join(f"{c}: {answers.count(c)}" for c in sorted(set(answers))) or "-"
    return (
        f"| {name} | {len(latencies)} | {statistics.median(ordered):.1f} | {p99:.1f} | "
        f"{ordered[-1]:.1f} | {codes} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--port", type=int, default=18123)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    with running(args.port):
        lines = [
            f"liveness probe every 20 ms; {args.clients} loading clients; "
            f"{args.seconds:g} s per load",
            "",
            "| load | probes | p50 ms | p99 ms | max ms | load answers |",
            "|---|---|---|---|---|---|",
        ]
        lines.append(row("idle", probe(url, min(5.0, args.seconds), threading.Event()), []))
        for kind, body, name in (
            ("image", big_png(), f"{args.clients} clients uploading 4000x4000 PNGs"),
            ("json", big_json(), f"{args.clients} clients posting ~8 MB JSON bodies"),
        ):
            stop, answers = threading.Event(), []
            workers = [
                threading.Thread(target=load, args=(url, kind, body, stop, answers), daemon=True)
                for _ in range(args.clients)
            ]
            for worker in workers:
                worker.start()
            time.sleep(1)
            latencies = probe(url, args.seconds, stop)
            stop.set()
            for worker in workers:
                worker.join(timeout=120)
            lines.append(row(name, latencies, answers))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
