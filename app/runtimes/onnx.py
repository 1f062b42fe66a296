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
        providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available_providers():
            # TF32 math (on by default on Ampere and later) breaks the 1e-5 agreement with
            # the CPU and Keras; the exhaustive cuDNN search re-runs on every new batch
            # size, which request merging changes on nearly every call (bench/GPU.md)
            cuda = {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC"}
            providers.insert(0, ("CUDAExecutionProvider", cuda))
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeLoadError(f"{path.name}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        provider = self._session.get_providers()[0]
        self.device = "GPU:0 (CUDAExecutionProvider)" if provider.startswith("CUDA") else "CPU"
        self.on_caller_thread = threads == 1 and self.device == "CPU"

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: x})[0])

    def close(self) -> None:
        del self._session
