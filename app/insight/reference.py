"""``reference.json``: what training measured for insight, one file per version.

Written by ``python -m training.reference`` from the training data, beside the other
artifacts; read once when a version loads. A version without it still serves, still
explains (against the card's example as a one-row background) and still flags
out-of-range values; drift, calibration and thresholds then say it is missing.

Layout of the file::

    {"format": 1, "seed": 0,
     "background": {"rows": [raw records], "weights": [...], "method": "..."},
     "drift": {"rows": N, "fields": {name: {...}}},          # tabular only
     "calibration": {"temperature": T, "ece": ..., "ece_calibrated": ..., "bins": [...]},
     "threshold": {"default": 0.5, "rule": "...", "max_f1": {...}, "pr_curve": [...]}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.encoding import ImagePipeline, Pipeline, TabularPipeline
from app.insight.explain import OcclusionExplainer, TabularExplainer
from app.insight.layout import Layout

REFERENCE_FILE = "reference.json"
CALIBRATION_PLOT = "calibration.png"
FORMAT = 1


class ReferenceError(ValueError):
    """reference.json exists but cannot be used with this version's pipeline."""


@dataclass
class Insight:
    """Everything a served version needs to explain, monitor and calibrate itself."""

    reference: dict[str, Any] = field(default_factory=dict)
    layout: Layout | None = None
    tabular: TabularExplainer | None = None
    image: OcclusionExplainer | None = None
    temperature: float = 1.0

    @property
    def drift_profile(self) -> dict[str, Any] | None:
        profile: dict[str, Any] | None = self.reference.get("drift")
        return profile

    @property
    def calibration(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.reference.get("calibration")
        return found

    @property
    def threshold(self) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.reference.get("threshold")
        return found

    @property
    def background_method(self) -> str:
        background = self.reference.get("background") or {}
        method: str = background.get("method", "the model card's example (no reference.json)")
        return method


def read_reference(version_dir: Path) -> dict[str, Any] | None:
    path = version_dir / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"{REFERENCE_FILE} is unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReferenceError(f"{REFERENCE_FILE} is not format {FORMAT}")
    return data


def build_insight(
    pipeline: Pipeline, reference: dict[str, Any] | None, example: dict[str, Any]
) -> Insight:
    """The per-version insight objects; raises ReferenceError on an inconsistent file."""
    reference = reference or {}
    calibration = reference.get("calibration") or {}
    temperature = float(calibration.get("temperature", 1.0))
    if not np.isfinite(temperature) or temperature <= 0:
        raise ReferenceError(f"calibration temperature must be > 0, got {temperature}")
    if isinstance(pipeline, ImagePipeline):
        return Insight(
            reference,
            image=OcclusionExplainer(pipeline.height, pipeline.width),
            temperature=temperature,
        )
    assert isinstance(pipeline, TabularPipeline)
    layout = Layout.of(pipeline)
    background = reference.get("background") or {"rows": [example], "weights": [1.0]}
    rows, weights = background.get("rows"), background.get("weights")
    if not rows or not isinstance(weights, list) or len(weights) != len(rows):
        raise ReferenceError("background needs rows and one weight per row")
    try:
        matrix = pipeline.encode_rows(rows).matrix
    except Exception as exc:
        raise ReferenceError(f"background rows do not encode: {exc}") from None
    explainer = TabularExplainer(layout, matrix, np.asarray(weights, dtype=np.float64))
    return Insight(reference, layout, explainer, temperature=temperature)
