"""Encoding pipelines shared by training and serving; imports no TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.encoding.errors import EncodingError
from app.encoding.image import ImagePipeline, prepare_pixels, prepare_upload
from app.encoding.tabular import EncodedBatch, FeatureSpec, TabularPipeline, normalise

Pipeline = TabularPipeline | ImagePipeline

__all__ = [
    "EncodedBatch",
    "EncodingError",
    "FeatureSpec",
    "ImagePipeline",
    "Pipeline",
    "TabularPipeline",
    "load_pipeline",
    "normalise",
    "pipeline_from_json",
    "prepare_pixels",
    "prepare_upload",
    "save_pipeline",
]


def pipeline_from_json(data: dict[str, Any]) -> Pipeline:
    kind = data.get("kind")
    if kind == "tabular":
        return TabularPipeline.from_json(data)
    if kind == "image":
        return ImagePipeline.from_json(data)
    raise ValueError(f"unknown pipeline kind {kind!r}")


def load_pipeline(path: Path) -> Pipeline:
    return pipeline_from_json(json.loads(path.read_text()))


def save_pipeline(pipeline: Pipeline, path: Path) -> None:
    path.write_text(json.dumps(pipeline.to_json(), indent=1) + "\n")
