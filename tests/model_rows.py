"""Test helpers shared by the API, parity and image tests: which model versions are
committed, raw rows built from a model card, and reference probabilities computed
without the service (the artifact's pipeline and ONNX Runtime, called directly)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from app.artifacts import ONNX_FILE, PIPELINE_FILE, ModelCard, read_card, version_dirs
from app.encoding import ImagePipeline, Pipeline, TabularPipeline, load_pipeline
from tests.conftest import MODELS_DIR

UNSEEN = "Atlantis-never-seen"


def committed() -> list[tuple[str, int]]:
    """Every ``(name, version)`` with a model card on disk, at collection time."""
    return [
        (name, version)
        for name, version, path in version_dirs(MODELS_DIR)
        if (path / "model_card.json").is_file()
    ]


def latest() -> dict[str, int]:
    """The version a request without a pinned version must be served by."""
    versions: dict[str, int] = {}
    for name, version in committed():
        versions[name] = max(version, versions.get(name, 0))
    return versions


def folder(name: str, version: int) -> Path:
    return MODELS_DIR / name / str(version)


def card(name: str, version: int) -> ModelCard:
    return read_card(folder(name, version))


def pipeline(name: str, version: int) -> Pipeline:
    return load_pipeline(folder(name, version) / PIPELINE_FILE)


def synthetic_rows(model: ModelCard, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Raw instances drawn from the card's declared domain, as a client would send them.

    Numbers fall within what training saw, categories and levels come from the card;
    nullable fields are sometimes null or "?", and sometimes hold an unseen category.
    """
    rng = np.random.default_rng(seed)
    if model.inputs[0].type == "image":
        images = rng.integers(0, 256, size=(n, 28, 28)) * (rng.random((n, 28, 28)) < 0.2)
        return [{"image": image.tolist()} for image in images]
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {}
        for field in model.inputs:
            if field.type in ("number", "integer"):
                lo = field.seen_min if field.seen_min is not None else field.minimum or 0.0
                hi = field.seen_max if field.seen_max is not None else field.maximum or 1.0
                value = float(rng.uniform(lo, hi))
                row[field.name] = round(value) if field.type == "integer" else round(value, 2)
            else:
                allowed = field.allowed or []
                row[field.name] = allowed[int(rng.integers(len(allowed)))]
                draw = rng.random()
                if field.nullable and draw < 0.1:
                    row[field.name] = None if draw < 0.05 else "?"
                elif field.type == "category" and draw > 0.95:
                    row[field.name] = UNSEEN
        rows.append(row)
    return rows


def encode_rows(encoding: Pipeline, rows: list[dict[str, Any]]) -> np.ndarray:
    """Network input for raw instances, straight from the artifact's pipeline."""
    if isinstance(encoding, ImagePipeline):
        return encoding.encode(np.asarray([r["image"] for r in rows]))
    assert isinstance(encoding, TabularPipeline)
    return encoding.encode_rows(rows).matrix


def as_class_probabilities(raw: np.ndarray, output: str) -> np.ndarray:
    """A sigmoid unit's output as [P(negative), P(positive)], like the service answers."""
    raw = np.asarray(raw, dtype=np.float64)
    if output == "sigmoid":
        positive = raw.reshape(-1, 1)
        return np.hstack([1.0 - positive, positive])
    return raw


def calibrated(name: str, version: int, probabilities: np.ndarray) -> np.ndarray:
    """Probabilities as served: with the version's temperature (reference.json), if any."""
    from app.insight.calibration import apply_temperature
    from app.insight.reference import read_reference

    reference = read_reference(folder(name, version)) or {}
    temperature = (reference.get("calibration") or {}).get("temperature", 1.0)
    return apply_temperature(probabilities, float(temperature))


@cache
def _onnx_session(name: str, version: int) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(
        str(folder(name, version) / ONNX_FILE), providers=["CPUExecutionProvider"]
    )


def onnx_probabilities(name: str, version: int, rows: list[dict[str, Any]]) -> np.ndarray:
    """Reference probabilities: artifact pipeline + ONNX Runtime, no service code."""
    session = _onnx_session(name, version)
    x = encode_rows(pipeline(name, version), rows)
    raw = session.run(None, {session.get_inputs()[0].name: x})[0]
    return calibrated(name, version, as_class_probabilities(raw, card(name, version).output))


def served_probabilities(body: dict[str, Any], classes: list[str]) -> np.ndarray:
    """The ``predictions`` of a response as a [N, classes] array in card order."""
    return np.asarray(
        [[p["probabilities"][c] for c in classes] for p in body["predictions"]],
        dtype=np.float64,
    )
