"""The on-disk contract between training and serving: ``models/<name>/<version>/``.

Training writes these files; the service reads them. Keeping the names and the
model card's shape in one place means neither side can rename a file alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"
PIPELINE_FILE = "pipeline.json"
CARD_FILE = "model_card.json"
HISTORY_PLOT = "history.png"


class InputField(BaseModel):
    """One raw input the model accepts, as a client sends it."""

    name: str
    type: Literal["number", "integer", "category", "ordinal", "image"]
    description: str = ""
    nullable: bool = False
    allowed: list[str] | None = None  # categories (open set) or ordinal levels (closed)
    minimum: float | None = None
    maximum: float | None = None
    seen_min: float | None = None
    seen_max: float | None = None
    shape: list[int] | None = None  # image fields


class Metrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    accuracy: float
    roc_auc: float | None = None
    loss: float | None = None
    rows: int
    confusion_matrix: list[list[int]] | None = None


class DataFile(BaseModel):
    file: str
    sha256: str


class ModelCard(BaseModel):
    """What the model is, how it was made, and how well it does."""

    name: str
    version: int
    title: str
    description: str
    task: Literal["binary", "multiclass"]
    output: Literal["sigmoid", "softmax"]
    classes: list[str]
    inputs: list[InputField]
    example: dict[str, Any]
    architecture: str
    parameters: int
    metrics: dict[str, Metrics]  # "test", "validation", "baseline"
    baseline: str
    data: list[DataFile]
    seed: int
    epochs_run: int
    training_seconds: float
    libraries: dict[str, str]
    created: str = Field(description="UTC time the artifact was written")
    # added for issue 12; optional so older cards stay valid
    target: str | None = Field(default=None, description="What the test split must show")
    target_met: bool | None = None
    augmentation: dict[str, Any] | None = Field(
        default=None, description="Training-only augmentation ranges (images)"
    )
    robustness: dict[str, float] | None = Field(
        default=None, description="Test accuracy under each seeded shift of the suite"
    )
    tuning: list[dict[str, Any]] | None = Field(
        default=None, description="Candidates tried, with their validation figures"
    )
    ceiling: Metrics | None = Field(
        default=None, description="Gradient-boosted trees on the same features and split"
    )
    ceiling_method: str | None = None


MAX_VERSION = 2**31 - 1


def parse_version(text: str) -> int | None:
    """The one version-number grammar, for directories and every protocol alike:
    ASCII digits without sign, spaces or leading zeros, from 1 to 2**31-1. Each
    version has exactly one spelling, so ``01`` and ``1`` never name the same thing."""
    if not (0 < len(text) <= 10 and text.isascii() and text.isdigit()) or text[0] == "0":
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None


def version_dirs(models_dir: Path) -> list[tuple[str, int, Path]]:
    """Every ``<name>/<version>`` directory whose name is a version number, sorted."""
    found: list[tuple[str, int, Path]] = []
    if not models_dir.is_dir():
        return found
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        for version_dir in model_dir.iterdir():
            version = parse_version(version_dir.name)
            if version is not None and version_dir.is_dir():
                found.append((model_dir.name, version, version_dir))
    return sorted(found, key=lambda t: (t[0], t[1]))


def read_card(version_dir: Path) -> ModelCard:
    return ModelCard.model_validate(json.loads((version_dir / CARD_FILE).read_text()))


def write_card(card: ModelCard, version_dir: Path) -> None:
    (version_dir / CARD_FILE).write_text(card.model_dump_json(indent=1) + "\n")
