"""Model repositories the tests build: copies of committed versions, renamed at will.

A copy keeps the network (its ONNX file) and rewrites the card and pipeline, so a
test can hold two versions of one model with different input names, or a model name
that appears while the server runs, without training anything.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.artifacts import CARD_FILE, HISTORY_PLOT, ONNX_FILE, PIPELINE_FILE
from tests.conftest import MODELS_DIR


def copy_version(
    target: Path,
    source: tuple[str, int],
    name: str,
    version: int,
    rename: dict[str, str] | None = None,
) -> Path:
    """``models/<source>`` as ``target/<name>/<version>``, inputs renamed by ``rename``.

    The copy is written beside its destination and renamed into place, as training
    does, so a watcher never sees half a version.
    """
    rename = rename or {}
    src = MODELS_DIR / source[0] / str(source[1])
    staging = target / f".{name}-{version}.staging"
    staging.mkdir(parents=True)
    for file in (ONNX_FILE, HISTORY_PLOT):
        shutil.copy2(src / file, staging / file)
    card = json.loads((src / CARD_FILE).read_text())
    card.update(name=name, version=version)
    for field in card["inputs"]:
        field["name"] = rename.get(field["name"], field["name"])
    card["example"] = {rename.get(k, k): v for k, v in card["example"].items()}
    (staging / CARD_FILE).write_text(json.dumps(card))
    pipeline = json.loads((src / PIPELINE_FILE).read_text())
    for feature in pipeline.get("features", []):
        feature["name"] = rename.get(feature["name"], feature["name"])
    pipeline.pop("columns", None)  # derived again from the renamed features
    (staging / PIPELINE_FILE).write_text(json.dumps(pipeline))
    destination = target / name / str(version)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(destination)
    return destination
