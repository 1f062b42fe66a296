"""Large blocks go back to the kernel when freed (app/runner/memory.py), even after
glibc's mmap threshold would have risen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import os, sys
from app.runner.memory import pin_mmap_threshold

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else False
block = bytearray(4 * 1024 * 1024)
del block  # a large block freed: glibc's own threshold rises to its size
blocks = [bytearray(300 * 1024) for _ in range(100)]
full = rss_mb()
del blocks[::2]  # every other one freed: holes in the heap, unless each had its mapping
print(pinned, full - rss_mb())
"""


def freed_mb(mode: str, env: dict[str, str] | None = None) -> tuple[bool, float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    pinned, freed = done.stdout.split()
    return pinned == "True", float(freed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_blocks_leave_the_process() -> None:
    assert freed_mb("plain") == (False, pytest.approx(0, abs=3))  # glibc alone keeps them
    pinned, freed = freed_mb("pin")
    assert pinned and freed > 10  # 50 blocks of 300 KiB, 14.6 MiB, went back


def test_the_operators_own_setting_wins() -> None:
    import os

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    assert freed_mb("pin", env)[0] is False
