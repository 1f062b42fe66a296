"""What the inference libraries can run on, logged once at startup.

TensorFlow is asked only when the runtime in use already imports it: importing it
just to list devices would cost the ONNX runtime about 5 s and 600 MB per worker.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

log = logging.getLogger(__name__)

TENSORFLOW_RUNTIMES = frozenset({"tensorflow", "keras"})


def device_report(runtime: str) -> dict[str, Any]:
    """ONNX Runtime's providers and, for TensorFlow runtimes, TensorFlow's devices."""
    from app.runtimes.onnx import available_providers

    report: dict[str, Any] = {"runtime": runtime, "onnxruntime_providers": available_providers()}
    if runtime in TENSORFLOW_RUNTIMES and importlib.util.find_spec("tensorflow") is not None:
        from app.runtimes.tensorflow import tensorflow_devices

        report["tensorflow_devices"] = tensorflow_devices()
    return report


def log_devices(runtime: str) -> dict[str, Any]:
    """Log the device report (the per-model device is logged as each model loads)."""
    report = device_report(runtime)
    log.info(
        "devices: runtime=%s onnxruntime providers=%s tensorflow devices=%s",
        runtime,
        ",".join(report["onnxruntime_providers"]) or "none",
        ",".join(report.get("tensorflow_devices", [])) or "not queried",
    )
    return report
