"""Inference runtimes behind one interface, and the rule for picking one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from app.artifacts import KERAS_FILE, ONNX_FILE, SAVED_MODEL_DIR
from app.runtimes.base import InferenceRuntime, RuntimeLoadError

log = logging.getLogger(__name__)

RuntimeChoice = Literal["auto", "onnx", "tensorflow", "keras"]


def gpu_visible() -> bool:
    """Whether a CUDA device is usable, asked without importing TensorFlow."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return False
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and b"GPU" in result.stdout


def resolve(choice: RuntimeChoice) -> Literal["onnx", "tensorflow", "keras"]:
    """``auto``: TensorFlow where a GPU is present and TensorFlow is installed (the GPU
    image), else ONNX Runtime, which uses CUDA itself when onnxruntime-gpu is there."""
    if choice != "auto":
        return choice
    import importlib.util

    if gpu_visible() and importlib.util.find_spec("tensorflow") is not None:
        return "tensorflow"
    return "onnx"


def open_runtime(
    kind: Literal["onnx", "tensorflow", "keras"], version_dir: Path, threads: int = 1
) -> InferenceRuntime:
    if kind == "onnx":
        from app.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(_require(version_dir / ONNX_FILE), threads)
    if kind == "tensorflow":
        from app.runtimes.tensorflow import SavedModelRuntime

        return SavedModelRuntime(_require(version_dir / SAVED_MODEL_DIR))
    from app.runtimes.tensorflow import KerasPredictRuntime

    return KerasPredictRuntime(_require(version_dir / KERAS_FILE))


def _require(path: Path) -> Path:
    if not path.exists():
        raise RuntimeLoadError(f"{path.name} is missing")
    return path


__all__ = ["InferenceRuntime", "RuntimeChoice", "RuntimeLoadError", "open_runtime", "resolve"]
