"""What a change of batch size costs on ONNX Runtime's CUDA provider.

Request merging (``BATCHING``) hands the runtime a different number of rows on
almost every call; on the GPU the cuDNN convolutions of digits v2 keep their tuned
state for the last input shape only, so this prints, per provider setting:

1. ``first``: the first call at each size 1..64, and later calls in random order;
2. ``patterns``: constant 64 rows, alternating 1 and 64, powers of two, random sizes.

See bench/GPU.md for what it printed on an H100::

    python bench/gpu_shapes.py models/digits/2/model.onnx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "HEURISTIC": {"cudnn_conv_algo_search": "HEURISTIC"},
    "DEFAULT": {"cudnn_conv_algo_search": "DEFAULT"},
    "tf32 off+HEURISTIC": {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"},
}


def session(path: Path, options: dict[str, str]) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    providers = [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
    s = ort.InferenceSession(str(path), so, providers=providers)
    if s.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit("no CUDAExecutionProvider: install onnxruntime-gpu and run on a GPU")
    return s


def timed(s: Any, x: np.ndarray) -> float:
    name = s.get_inputs()[0].name
    start = time.perf_counter()
    s.run(None, {name: x})
    return time.perf_counter() - start


def inputs(s: Any, rng: np.random.Generator) -> dict[int, np.ndarray]:
    shape = [d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape]
    return {n: rng.random([n, *shape[1:]], dtype=np.float32) for n in range(1, 65)}


def first(path: Path, rng: np.random.Generator) -> None:
    for label, options in SETTINGS.items():
        s = session(path, options)
        xs = inputs(s, rng)
        once = [timed(s, xs[n]) for n in range(1, 65)]
        later = [timed(s, xs[int(n)]) for _ in range(3) for n in rng.permutation(np.arange(1, 65))]
        print(
            f"{label:20s} first call per size 1..64: total {sum(once) * 1e3:8.1f} ms, "
            f"max {max(once) * 1e3:7.1f} ms, median {np.median(once) * 1e3:6.2f} ms | "
            f"later calls: median {np.median(later) * 1e3:6.3f} ms, max {max(later) * 1e3:6.2f} ms",
            flush=True,
        )


def patterns(path: Path, rng: np.random.Generator) -> None:
    cycles = {
        "constant 64": [64],
        "alternate 1,64": [1, 64],
        "powers of 2 (1..64)": [1, 2, 4, 8, 16, 32, 64],
        "random 1..64": list(range(1, 65)),
    }
    for label in ("default", "HEURISTIC"):
        s = session(path, SETTINGS[label])
        xs = inputs(s, rng)
        for name, sizes in cycles.items():
            for n in sizes:  # a warm pass over every size of the pattern
                timed(s, xs[n])
            if name.startswith("random"):
                order = [int(v) for v in rng.integers(1, 65, 128)]
            else:
                order = [sizes[i % len(sizes)] for i in range(128)]
            times = [timed(s, xs[n]) for n in order]
            print(
                f"{label:10s} {name:22s} median {np.median(times) * 1e3:7.3f} ms  "
                f"p90 {np.percentile(times, 90) * 1e3:7.3f} ms",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model.onnx")
    parser.add_argument("--part", choices=["first", "patterns", "both"], default="both")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.part in ("first", "both"):
        first(args.model, rng)
    if args.part in ("patterns", "both"):
        patterns(args.model, rng)


if __name__ == "__main__":
    main()
