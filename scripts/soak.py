"""Soak test: 60 s at concurrency 64 against the native and v2 endpoints, then 20 hot
reloads; reports errors (must be 0) and the server's RSS (growth must stay within 10%).

    python scripts/soak.py [--seconds 60] [--concurrency 64] [--reloads 20]

It starts the service itself (``python -m app``, one worker, ONNX Runtime) on a free
loopback port and drives it with wrk (Debian's ``wrk``), rotating over one native and
one v2 request per model version; only loopback is used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = secrets.token_hex(16)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its children, in MB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def requests_to_send() -> list[tuple[str, dict[str, Any]]]:
    """One native and one v2 request per model version, built from the model cards."""
    out: list[tuple[str, dict[str, Any]]] = []
    for card_file in sorted((ROOT / "models").glob("*/*/model_card.json")):
        card = json.loads(card_file.read_text())
        name, version, example = card["name"], card["version"], card["example"]
        out.append((f"/models/{name}/versions/{version}/predict", example))
        if name == "digits":
            inputs = [
                {
                    "name": "image",
                    "shape": [1, 28, 28],
                    "datatype": "UINT8",
                    "data": example["image"],
                }
            ]
        else:
            inputs = []
            for field in card["inputs"]:
                value = example[field["name"]]
                datatype = {"category": "BYTES", "ordinal": "BYTES", "integer": "INT64"}.get(
                    field["type"], "FP32"
                )
                inputs.append(
                    {"name": field["name"], "shape": [1], "datatype": datatype, "data": [value]}
                )
        out.append((f"/v2/models/{name}/versions/{version}/infer", {"inputs": inputs}))
    return out


def lua_script(plan: list[tuple[str, dict[str, Any]]]) -> str:
    """wrk script cycling through the requests; counts non-200 answers as errors."""
    entries = ",\n".join(
        f"  wrk.format('POST', '{path}', headers, [==[{json.dumps(body)}]==])"
        for path, body in plan
    )
    return f"""
local headers = {{['Content-Type'] = 'application/json'}}
local requests = {{}}
local i = 0
init = function(args)
  requests = {{
{entries}
  }}
end
request = function()
  i = i + 1
  return requests[(i % #requests) + 1]
end
"""


def wrk(url: str, seconds: float, concurrency: int) -> dict[str, int]:
    """Run wrk; returns requests, non-2xx answers and socket errors."""
    plan = requests_to_send()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua_script(plan))
    try:
        run = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{concurrency}",
                f"-d{seconds:.0f}s",
                "--timeout",
                "30s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script.name)
    out = run.stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return {
        "requests": total,
        "kinds": len(plan),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--reloads", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "RUNTIME": "onnx",
        "ADMIN_TOKEN": TOKEN,
        "ACCESS_LOG": "false",
        "LOG_LEVEL": "warning",
        "WATCH_INTERVAL_S": "0",
    }
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            print("the service did not become ready", file=sys.stderr)
            return 2
        wrk(url, 3, 8)  # warm-up: first allocations, caches, batchers
        start_rss = rss_mb(server.pid)
        started = time.monotonic()
        result = wrk(url, args.seconds, args.concurrency)
        elapsed = time.monotonic() - started
        end_rss = rss_mb(server.pid)
        total, kinds = result["requests"], result["kinds"]
        errors = result["non_2xx"] + result["socket_errors"]
        growth = (end_rss - start_rss) / start_rss * 100

        reload_rss = [end_rss]
        reload_errors = 0
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as admin:
            for _ in range(args.reloads):
                for name, version in (("digits", 2), ("income", 1)):
                    answer = admin.post(f"/admin/models/{name}/versions/{version}/load")
                    reload_errors += answer.status_code != 200
                reload_rss.append(rss_mb(server.pid))
        reload_growth = (reload_rss[-1] - reload_rss[0]) / reload_rss[0] * 100
    finally:
        server.terminate()
        server.wait(timeout=60)

    print(
        f"## Soak: {args.seconds:.0f} s at concurrency {args.concurrency}, "
        f"{kinds} request kinds (native and v2, every model version)\n"
    )
    print("| requests | requests/s | errors | RSS start (MB) | RSS end (MB) | growth |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {total} | {total / elapsed:.0f} | {errors} | {start_rss:.1f} | {end_rss:.1f} "
        f"| {growth:+.1f}% |"
    )
    if errors:
        print(f"\nnon-2xx answers: {result['non_2xx']}, socket errors: {result['socket_errors']}")
    print(f"\n## Hot reloads: {args.reloads} x (digits v2 + income v1)\n")
    print("| reloads | failed | RSS before (MB) | RSS after (MB) | growth |")
    print("|---|---|---|---|---|")
    print(
        f"| {args.reloads * 2} | {reload_errors} | {reload_rss[0]:.1f} | {reload_rss[-1]:.1f} "
        f"| {reload_growth:+.1f}% |"
    )
    print("\nRSS after each reload round (MB):", " ".join(f"{r:.1f}" for r in reload_rss))
    ok = errors == 0 and reload_errors == 0 and growth <= 10 and reload_growth <= 10
    print("\nresult:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
