"""Write one version directory: Keras, SavedModel, ONNX, pipeline, card, plot.

The directory is assembled beside its destination and renamed into place, so a
watching service never sees a half-written version.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.artifacts import (
    HISTORY_PLOT,
    KERAS_FILE,
    ONNX_FILE,
    PIPELINE_FILE,
    SAVED_MODEL_DIR,
    ModelCard,
    write_card,
)
from app.encoding import Pipeline, save_pipeline

if TYPE_CHECKING:
    import keras

ONNX_TOLERANCE = 1e-5


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x.astype(np.float32)})[0])


def check_onnx(model: keras.Model, path: Path, x: np.ndarray) -> float:
    """Largest absolute difference between Keras and ONNX Runtime; raises above 1e-5."""
    expected = np.asarray(model(x.astype(np.float32), training=False))
    diff = float(np.abs(onnx_outputs(path, x) - expected).max())
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"ONNX export differs from Keras by {diff:.2e} > {ONNX_TOLERANCE}")
    return diff


def plot_history(
    history: dict[str, list[float]], title: str, path: Path, augmented: bool = False
) -> None:
    """Loss and accuracy per epoch; readable from a single epoch to a hundred.

    With augmentation the training curve is measured on changed images (and with
    dropout), so it lies below validation; the legend says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    n = len(history["loss"])
    epochs = list(range(1, n + 1))
    marker = "o" if n <= 30 else None  # points stay visible for short runs
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):  # lr may be logged too
        train_label = "training (augmented)" if augmented else "training"
        for key, label in ((metric, train_label), (f"val_{metric}", "validation")):
            if key in history:
                ax.plot(epochs, history[key], marker=marker, markersize=4, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.set_xlim(0.5, n + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    axes[1].set_ylim(top=min(1.0, axes[1].get_ylim()[1] + 0.005))
    fig.suptitle(f"{title} ({n} epoch{'s' if n != 1 else ''})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_version(
    model: keras.Model,
    pipeline: Pipeline,
    card: ModelCard,
    history: dict[str, list[float]],
    check_rows: np.ndarray,
    output_dir: Path,
) -> Path:
    destination = output_dir / card.name / str(card.version)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{card.version}-", dir=destination.parent))
    try:
        model.save(staging / KERAS_FILE)
        model.export(str(staging / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
        model.export(str(staging / ONNX_FILE), format="onnx", verbose=False)
        check_onnx(model, staging / ONNX_FILE, check_rows)
        save_pipeline(pipeline, staging / PIPELINE_FILE)
        write_card(card, staging)
        plot_history(
            history,
            f"{card.name} v{card.version}",
            staging / HISTORY_PLOT,
            augmented=card.augmentation is not None,
        )
        if destination.exists():
            shutil.rmtree(destination)
        staging.chmod(0o755)  # mkdtemp makes it private; the service may run as another user
        staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return destination
