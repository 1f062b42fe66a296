"""TensorFlow: the exported SavedModel's serving signature; uses a GPU when it sees one.

``model.predict`` is avoided on purpose: it builds a tf.data pipeline per call
(about 100 ms here), while the concrete signature costs well under a millisecond.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.runtimes.base import RuntimeLoadError


def tensorflow_devices() -> list[str]:
    import tensorflow as tf

    return [d.name.replace("/physical_device:", "") for d in tf.config.list_physical_devices()]


class SavedModelRuntime:
    name = "tensorflow"
    on_caller_thread = False  # TensorFlow computes on thread pools of its own

    def __init__(self, path: Path) -> None:
        import tensorflow as tf

        try:
            # keep the loaded object: its variables die with it
            self._loaded: Any = tf.saved_model.load(str(path))
            self._fn = self._loaded.signatures["serving_default"]
        except Exception as exc:  # TensorFlow raises many unrelated types here
            raise RuntimeLoadError(f"{path.name}: {exc}") from exc
        self._input = next(iter(self._fn.structured_input_signature[1]))
        self._output = next(iter(self._fn.structured_outputs))
        gpus = tf.config.list_logical_devices("GPU")
        self.device = gpus[0].name.replace("/device:", "") if gpus else "CPU"
        self._tf = tf

    def run(self, x: np.ndarray) -> np.ndarray:
        result = self._fn(**{self._input: self._tf.constant(x)})
        return np.asarray(result[self._output].numpy())

    def close(self) -> None:
        del self._fn, self._loaded


class KerasPredictRuntime:
    """The naive baseline (``model.predict`` per call), kept only for the benchmark."""

    name = "keras"
    on_caller_thread = False

    def __init__(self, path: Path) -> None:
        import keras

        try:
            self._model = keras.saving.load_model(str(path), safe_mode=True)
        except Exception as exc:
            raise RuntimeLoadError(f"{path.name}: {exc}") from exc
        self.device = "CPU"

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict(x, verbose=0))

    def close(self) -> None:
        del self._model
