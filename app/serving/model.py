"""A served model version: load, preprocess, predict, postprocess (KServe's shape).

It knows its artifacts, its encoding and its runtime, and nothing about HTTP:
protocol code hands it raw values and gets probabilities and labels back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.artifacts import PIPELINE_FILE, ModelCard, read_card
from app.encoding import (
    EncodedBatch,
    EncodingError,
    ImagePipeline,
    Pipeline,
    TabularPipeline,
    load_pipeline,
)
from app.runtimes import InferenceRuntime, RuntimeLoadError, open_runtime


class ArtifactError(RuntimeError):
    """A version directory is incomplete or inconsistent."""


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]
    unknown_categories: list[str] = field(default_factory=list)


def read_description(version_dir: Path) -> tuple[ModelCard, Pipeline]:
    """The card and pipeline of a version, checked against each other and the path.

    Cheap (two JSON files), so the app also uses it to pick the card whose request
    schema it documents, before any model is loaded.
    """
    try:
        card = read_card(version_dir)
    except FileNotFoundError:
        raise ArtifactError("model_card.json is missing") from None
    except ValueError as exc:
        raise ArtifactError(f"model_card.json is invalid: {exc}") from None
    if (card.name, str(card.version)) != (version_dir.parent.name, version_dir.name):
        raise ArtifactError(
            f"model card says {card.name} v{card.version}, but it lies in "
            f"{version_dir.parent.name}/{version_dir.name}"
        )
    try:
        pipeline = load_pipeline(version_dir / PIPELINE_FILE)
    except FileNotFoundError:
        raise ArtifactError(f"{PIPELINE_FILE} is missing") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{PIPELINE_FILE} is invalid: {exc}") from None
    _check_card_matches(card, pipeline)
    return card, pipeline


def _check_card_matches(card: ModelCard, pipeline: Pipeline) -> None:
    if isinstance(pipeline, TabularPipeline):
        declared = [f.name for f in card.inputs]
        if declared != pipeline.feature_names:
            raise ArtifactError(
                f"model card inputs {declared} do not match the pipeline's {pipeline.feature_names}"
            )
    elif [f.type for f in card.inputs] != ["image"]:
        raise ArtifactError("model card does not describe an image input")


class ServedModel:
    def __init__(
        self, path: Path, card: ModelCard, pipeline: Pipeline, runtime: InferenceRuntime
    ) -> None:
        self.path = path
        self.card = card
        self.name = card.name
        self.version = card.version
        self.classes = card.classes
        self.pipeline = pipeline
        self.runtime = runtime
        self.load_seconds = 0.0

    # ------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        version_dir: Path,
        runtime: Literal["onnx", "tensorflow", "keras"],
        threads: int = 1,
    ) -> ServedModel:
        """Read, cross-check and warm up one version; raise with a clear reason."""
        started = time.perf_counter()
        card, pipeline = read_description(version_dir)
        try:
            engine = open_runtime(runtime, version_dir, threads)
        except RuntimeLoadError as exc:
            raise ArtifactError(str(exc)) from None
        model = cls(version_dir, card, pipeline, engine)
        model.warm_up()
        model.load_seconds = time.perf_counter() - started
        return model

    def warm_up(self) -> None:
        """One real prediction on the card's example, so the first client isn't slow."""
        x = self.encode_example()
        try:
            probabilities = self.predict(x)
        except Exception as exc:
            raise ArtifactError(f"warm-up prediction failed: {exc}") from None
        if probabilities.shape != (1, len(self.classes)) or not np.isfinite(probabilities).all():
            raise ArtifactError(
                f"warm-up gave outputs of shape {list(probabilities.shape)}, expected "
                f"[1, {len(self.classes)}]"
            )

    def encode_example(self) -> np.ndarray:
        if isinstance(self.pipeline, ImagePipeline):
            return self.pipeline.encode(np.asarray([self.card.example["image"]]))
        return self.pipeline.encode_rows([self.card.example]).matrix

    # ------------------------------------------------------------ preprocess
    @property
    def is_image(self) -> bool:
        return isinstance(self.pipeline, ImagePipeline)

    def preprocess_records(self, records: Sequence[Mapping[str, Any]]) -> EncodedBatch:
        if not isinstance(self.pipeline, TabularPipeline):
            raise EncodingError("image", "this model takes images, not records")
        return self.pipeline.encode_rows(records)

    def preprocess_columns(self, columns: Mapping[str, Sequence[Any]], n: int) -> EncodedBatch:
        if not isinstance(self.pipeline, TabularPipeline):
            raise EncodingError("image", "this model takes images, not records")
        return self.pipeline.encode_columns(columns, n)

    def preprocess_pixels(self, pixels: np.ndarray, field: str = "image") -> EncodedBatch:
        if not isinstance(self.pipeline, ImagePipeline):
            raise EncodingError(field, "this model takes records, not images")
        return EncodedBatch(self.pipeline.encode(pixels, field), [[] for _ in range(len(pixels))])

    # --------------------------------------------------------------- predict
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, classes]`` (blocking; call it off the event loop)."""
        raw = self.runtime.run(x)
        if self.card.output == "sigmoid":
            positive = raw.reshape(-1, 1)
            return np.hstack([1.0 - positive, positive])
        return raw

    # ----------------------------------------------------------- postprocess
    def postprocess(
        self, probabilities: np.ndarray, unknown: Sequence[Sequence[str]] = ()
    ) -> list[Prediction]:
        best = probabilities.argmax(axis=1)
        rows = probabilities.tolist()
        return [
            Prediction(
                label=self.classes[int(best[i])],
                probabilities=dict(zip(self.classes, rows[i], strict=True)),
                unknown_categories=list(unknown[i]) if unknown else [],
            )
            for i in range(len(rows))
        ]

    def close(self) -> None:
        self.runtime.close()
