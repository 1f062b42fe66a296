"""What a recipe is: raw splits, an encoding, a network, and how to fit it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import train_test_split

from app.artifacts import DataFile, Metrics
from app.encoding import FeatureSpec, ImagePipeline, Pipeline, TabularPipeline
from training.augment import NONE, Augmentation
from training.datasets import sha256_of
from training.loaders import TabularData

if TYPE_CHECKING:
    import keras


@dataclass
class ImageData:
    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> ImageData:
        return ImageData(self.images[index], self.labels[index])


RawData = TabularData | ImageData


@dataclass
class RawSplits:
    """Raw train / validation / test data; the test split is scored once, at the end."""

    train: RawData
    validation: RawData
    test: RawData
    files: list[Path]

    def data_files(self) -> list[DataFile]:
        return [DataFile(file=p.name, sha256=sha256_of(p)) for p in self.files]


@dataclass(frozen=True)
class Recipe:
    """Everything that defines one served model version, declared before any data."""

    name: str
    version: int
    title: str
    description: str
    classes: tuple[str, ...]
    architecture: str
    load: Callable[[Path | None, int], RawSplits]
    build: Callable[[tuple[int, ...]], keras.Model]
    example: dict[str, Any]
    features: tuple[FeatureSpec, ...] = ()
    image_input_shape: tuple[int, ...] = ()
    max_epochs: int = 100
    batch_size: int = 128
    patience: int = 5
    learning_rate: float = 1e-3
    # when set, the learning rate drops 3x after this many epochs without a better val_loss
    reduce_lr_patience: int | None = None
    # image recipes: changes drawn afresh for every training batch (never at inference)
    augmentation: Augmentation = NONE
    # what was tried on the validation split before settling on this recipe
    tuning: tuple[dict[str, Any], ...] = ()
    # what the test split must show: accuracy, ROC AUC, and the worst robustness shift
    target_accuracy: float | None = None
    target_roc_auc: float | None = None
    target_robustness: float | None = None
    # also score gradient-boosted trees on the same features: what the inputs allow
    ceiling: bool = False

    @property
    def target(self) -> str | None:
        parts = []
        if self.target_accuracy is not None:
            parts.append(f"accuracy >= {self.target_accuracy}")
        if self.target_roc_auc is not None:
            parts.append(f"ROC AUC >= {self.target_roc_auc}")
        if self.target_robustness is not None:
            parts.append(f"every robustness shift >= {self.target_robustness}")
        return ", ".join(parts) or None

    def target_met(self, test: Metrics, robustness: dict[str, float] | None) -> bool | None:
        if self.target is None:
            return None
        ok = self.target_accuracy is None or (
            test.accuracy is not None and test.accuracy >= self.target_accuracy
        )
        if self.target_roc_auc is not None:
            ok = ok and test.roc_auc is not None and test.roc_auc >= self.target_roc_auc
        if self.target_robustness is not None:
            ok = ok and bool(robustness) and min(robustness.values()) >= self.target_robustness  # type: ignore[union-attr]
        return ok

    @property
    def output(self) -> str:
        return "sigmoid" if len(self.classes) == 2 else "softmax"

    def fit_pipeline(self, train: RawData) -> Pipeline:
        """Learn the encoding from the training split alone."""
        if isinstance(train, TabularData):
            # labels serve only features with target-aware bins
            return TabularPipeline.fit(train.columns(), self.features, labels=train.labels)
        return ImagePipeline(28, 28, 255.0, list(self.image_input_shape))


def encode(pipeline: Pipeline, data: RawData) -> np.ndarray:
    """The one place training turns raw data into network input: the served pipeline."""
    if isinstance(pipeline, TabularPipeline):
        assert isinstance(data, TabularData)
        return pipeline.encode_columns(data.columns(), len(data)).matrix
    assert isinstance(data, ImageData)
    return pipeline.encode(data.images)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` held out, class ratios preserved."""
    index = np.arange(len(labels))
    keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(keep), np.sort(held)
