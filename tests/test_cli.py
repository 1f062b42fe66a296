"""``keras-serve``: the console script the README's quick start uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import MODELS_DIR
from tests.live_server import free_port

SCRIPT = shutil.which("keras-serve", path=str(Path(sys.executable).parent)) or "keras-serve"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=120, check=False)


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "train", "bench"):
        assert command in result.stdout


def test_train_and_bench_pass_their_options_through() -> None:
    train = run("train", "--help")
    assert train.returncode == 0 and "--output-dir" in train.stdout, train.stderr
    bench = run("bench", "--help")
    assert bench.returncode == 0 and "--rows" in bench.stdout, bench.stderr


def test_serve_answers_predictions(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MODELS_DIR": str(MODELS_DIR),
        "PORT": str(port),
        "RUNTIME": "onnx",
        "GRPC_ENABLED": "false",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([SCRIPT, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        row = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}
        response = httpx.post(f"{url}/models/iris/predict", json=row, timeout=10)
        assert response.status_code == 200, (tmp_path / "serve.log").read_text()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
