"""ONNX Runtime: the default on CPU; microseconds per call and no TensorFlow import."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.runtimes.base import RuntimeLoadError


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OnnxRuntime:
    name = "onnx"

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        wanted = [p for p in ("CUDAExecutionProvider",) if p in available_providers()]
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=[*wanted, "CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(f"{path.name}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        provider = self._session.get_providers()[0]
        self.device = "GPU:0 (CUDAExecutionProvider)" if provider.startswith("CUDA") else "CPU"

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: x})[0])

    def close(self) -> None:
        del self._session
