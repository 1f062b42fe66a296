"""The one interface every inference runtime offers: encoded float32 in, raw outputs out.

Runtimes know nothing about features, classes or HTTP; a runtime call is blocking
and thread-safe, and the data plane decides which thread runs it.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class RuntimeLoadError(RuntimeError):
    """An artifact could not be turned into a callable model."""


class InferenceRuntime(Protocol):
    name: str  # "onnx", "tensorflow", "keras"
    device: str  # e.g. "CPU", "GPU:0 (CUDAExecutionProvider)"
    # a call computes on the calling thread alone, so its CPU time is its cost (the
    # batcher runs cheap calls on the event loop); False for runtimes with thread
    # pools of their own or a device the caller waits for
    on_caller_thread: bool

    def run(self, x: np.ndarray) -> np.ndarray:
        """Network outputs for a batch of encoded inputs (blocking)."""
        ...

    def close(self) -> None:
        """Release what the runtime holds; calls after this are undefined."""
        ...
