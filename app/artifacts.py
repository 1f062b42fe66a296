"""The on-disk contract between training and serving: ``models/<name>/<version>/``.

Training writes these files; the service reads them. Keeping the names and the
model card's shape in one place means neither side can rename a file alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"
PIPELINE_FILE = "pipeline.json"
CARD_FILE = "model_card.json"
HISTORY_PLOT = "history.png"
CONFIG_FILE = "config.json"  # models/<name>/config.json: version policy, labels, canary


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

    accuracy: float | None = None  # classification; regression gives mae and rmse (extra)
    roc_auc: float | None = None
    loss: float | None = None
    rows: int
    confusion_matrix: list[list[int]] | None = None


class OutputHead(BaseModel):
    """One named output of a multi-output model (a Keras output), served under its name."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    task: Literal["binary", "multiclass", "regression"]
    output: Literal["sigmoid", "softmax", "linear"]
    classes: list[str] = Field(description="class order of its probabilities; [] for regression")


class DataFile(BaseModel):
    file: str
    sha256: str


class ModelCard(BaseModel):
    """What the model is, how it was made, and how well it does.

    Fields a user importing their own model cannot know (data hashes, seed, training
    time, metrics without labelled rows) are optional; training always fills them.
    """

    name: str
    version: int
    title: str
    description: str
    task: Literal["binary", "multiclass", "regression"]
    output: Literal["sigmoid", "softmax", "linear"] = Field(
        description="the network's last activation: sigmoid (binary: P(classes[1])), "
        "softmax (one probability per class), linear (regression: one value)"
    )
    classes: list[str] = Field(description="class order of the probabilities; [] for regression")
    inputs: list[InputField]
    example: dict[str, Any]
    architecture: str
    parameters: int
    metrics: dict[str, Metrics] = Field(
        default_factory=dict, description='"test", "validation", "baseline", or "sample"'
    )
    baseline: str = ""
    data: list[DataFile] = Field(default_factory=list)
    seed: int | None = None
    epochs_run: int | None = None
    training_seconds: float | None = None
    libraries: dict[str, str] = Field(default_factory=dict)
    created: str = Field(description="UTC time the artifact was written")
    runtime: Literal["onnx", "tensorflow"] | None = Field(
        None, description="a runtime this version requires (tensorflow: no ONNX export)"
    )
    source: str | None = Field(None, description="where an imported model came from")
    heads: list[OutputHead] | None = Field(
        None,
        description="a multi-output model's outputs, in the network's order, each served "
        "under its own name (a classifier's labels as NAME_label); task, output and "
        "classes above repeat the first",
    )
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


# A label starts with a letter, so it can never be read as a version number: the two
# grammars share the URL segment where a request names a version.
LABEL_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
_LABEL = re.compile(LABEL_PATTERN)
STABLE = "stable"
CANARY = "canary"


def parse_label(text: str) -> str | None:
    """The one label grammar (``stable``, ``canary``, ``blue-2``): lowercase ASCII."""
    return text if _LABEL.fullmatch(text) else None


def parse_version_ref(text: str) -> int | str | None:
    """A version number or a label, as a request names a version; None when neither."""
    number = parse_version(text)
    return number if number is not None else parse_label(text)


class VersionPolicy(BaseModel):
    """Which versions on disk are loaded, as in TF Serving and Triton: every one (no
    field set), the ``latest`` N, or ``specific`` ones. Labelled versions always load."""

    model_config = ConfigDict(extra="forbid")

    latest: int | None = Field(None, ge=1, le=1000, description="load the N highest versions")
    specific: list[int] | None = Field(
        None, min_length=1, description="load exactly these versions"
    )

    def model_post_init(self, _context: Any) -> None:
        if self.latest is not None and self.specific is not None:
            raise ValueError("version_policy: give either latest or specific, not both")
        for version in self.specific or []:
            if not 1 <= version <= MAX_VERSION:
                raise ValueError(f"version_policy.specific: {version} is not a version number")

    def selects(self, versions: list[int]) -> set[int]:
        if self.specific is not None:
            return set(versions) & set(self.specific)
        if self.latest is not None:
            return set(sorted(versions)[-self.latest :])
        return set(versions)


class ModelConfig(BaseModel):
    """``models/<name>/config.json``: how a model's versions are served. Optional; the
    service watches it, and the admin API writes it."""

    model_config = ConfigDict(extra="forbid")

    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    labels: dict[str, int] = Field(
        default_factory=dict,
        description=f"label ({LABEL_PATTERN}) to version; 'stable' is the default version",
    )
    canary_percent: float = Field(
        0, ge=0, le=100, description="share of default-version traffic sent to 'canary'"
    )

    def model_post_init(self, _context: Any) -> None:
        for label, version in self.labels.items():
            if parse_label(label) is None:
                raise ValueError(f"labels: {label!r} must match {LABEL_PATTERN}")
            if not 1 <= version <= MAX_VERSION:
                raise ValueError(f"labels.{label}: {version} is not a version number")


def read_config(model_dir: Path) -> ModelConfig:
    """The model's config, or the defaults when it has none; raises ValueError if bad."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return ModelConfig()
    return ModelConfig.model_validate_json(path.read_bytes())


def write_config(config: ModelConfig, model_dir: Path) -> None:
    """Written beside and renamed into place: a watcher never reads half a file."""
    model_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=model_dir)
    with os.fdopen(fd, "w") as out:
        out.write(config.model_dump_json(indent=1, exclude_defaults=True) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, model_dir / CONFIG_FILE)
