"""On the real datasets: the committed models score what their cards say, and a short
retrain of each tabular model beats always answering the majority class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.artifacts import KERAS_FILE, read_card, version_dirs
from app.serving.model import ServedModel
from tests.conftest import MODELS_DIR
from training.evaluate import class_probabilities, majority_accuracy
from training.fit import train
from training.recipes import RECIPES
from training.recipes.base import encode

pytestmark = pytest.mark.real_data

COMMITTED = [(name, version) for name, version, _ in version_dirs(MODELS_DIR)]
TARGETS = {
    ("income", 1): 0.860,
    ("salary", 1): 0.71,
    ("iris", 1): 0.95,
    ("iris", 2): 0.95,
    ("digits", 1): 0.980,
    ("digits", 2): 0.990,
}

AUC_TARGETS = {("income", 1): 0.912, ("salary", 1): 0.69}
ROBUSTNESS_TARGET = 0.95  # digits v2, on every shift


def recipe_for(name: str, version: int):  # type: ignore[no-untyped-def]
    return next(r for r in RECIPES[name] if r.version == version)


@pytest.mark.parametrize(("name", "version"), COMMITTED)
def test_committed_model_scores_its_card(data_dir: Path, name: str, version: int) -> None:
    import keras

    folder = MODELS_DIR / name / str(version)
    card = read_card(folder)
    served = ServedModel.load(folder, "onnx")
    raw = recipe_for(name, version).load(data_dir, card.seed)
    x = encode(served.pipeline, raw.test)  # the artifact's own pipeline, as the service uses
    assert len(x) == card.metrics["test"].rows

    model = keras.saving.load_model(folder / KERAS_FILE, safe_mode=True)
    keras_accuracy = float(
        (
            class_probabilities(model.predict(x, batch_size=2048, verbose=0)).argmax(1)
            == raw.test.labels
        ).mean()
    )
    assert keras_accuracy == pytest.approx(card.metrics["test"].accuracy, abs=1e-12)

    onnx_accuracy = float((served.predict(x).argmax(1) == raw.test.labels).mean())
    assert abs(onnx_accuracy - keras_accuracy) <= 1 / len(x)  # at most one borderline row

    assert card.metrics["test"].accuracy >= TARGETS[(name, version)]
    if card.task == "binary":
        assert card.metrics["test"].roc_auc is not None
    if (name, version) in AUC_TARGETS:
        assert card.metrics["test"].roc_auc >= AUC_TARGETS[(name, version)]  # type: ignore[operator]
    if card.target is not None:
        assert card.target_met


@pytest.mark.parametrize("version", [v for n, v in COMMITTED if n == "digits"])
def test_digits_robustness_suite_re_evaluates_to_the_card(data_dir: Path, version: int) -> None:
    """The seeded suite, run on the committed ONNX file, gives the card's figures."""
    from training.robustness import evaluate

    folder = MODELS_DIR / "digits" / str(version)
    card = read_card(folder)
    assert card.robustness is not None
    served = ServedModel.load(folder, "onnx")
    raw = recipe_for("digits", version).load(data_dir, card.seed)

    def labels(images: np.ndarray) -> np.ndarray:
        return served.predict(served.pipeline.encode(images)).argmax(1)  # type: ignore[union-attr]

    measured = evaluate(labels, raw.test.images, raw.test.labels, card.seed)
    assert measured.keys() == card.robustness.keys()
    for shift, accuracy in measured.items():
        # ONNX and Keras may part on a borderline image or two
        assert accuracy == pytest.approx(card.robustness[shift], abs=3e-4), shift
    if version >= 2:
        assert min(measured.values()) >= ROBUSTNESS_TARGET


@pytest.mark.slow
@pytest.mark.parametrize("name", ["income", "salary", "iris"])
def test_short_retrain_beats_majority_class(data_dir: Path, tmp_path: Path, name: str) -> None:
    recipe = RECIPES[name][0]
    outcome = train(
        recipe, data_dir, tmp_path, seed=0, epochs=2 if name != "iris" else 30, verbose=0
    )
    raw = recipe.load(data_dir, 0)
    majority = majority_accuracy(raw.train.labels, raw.test.labels)
    assert outcome.card.metrics["test"].accuracy > majority
    assert np.isfinite(outcome.card.metrics["test"].loss or np.nan)
