"""A tiny training run on synthetic files writes a complete, servable artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.artifacts import CARD_FILE, HISTORY_PLOT, ONNX_FILE, PIPELINE_FILE, ModelCard
from app.encoding import TabularPipeline, load_pipeline
from app.serving.inference import Rows
from app.serving.model import ServedModel
from training.__main__ import main as training_main
from training.export import onnx_outputs
from training.recipes import RECIPES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m training`` on the synthetic files, 2 epochs, every tabular model + CNN."""
    out = tmp_path_factory.mktemp("models")
    code = training_main(
        [
            "income",
            "salary",
            "digits",
            "--data-dir",
            str(synthetic_dir),
            "--output-dir",
            str(out),
            "--epochs",
            "2",
            "--versions",
            "1",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    return out


@pytest.mark.parametrize(("name", "version"), [("income", 1), ("salary", 1), ("digits", 2)])
def test_artifact_is_complete(trained: Path, name: str, version: int) -> None:
    folder = trained / name / str(version)
    for file in ("model.keras", ONNX_FILE, PIPELINE_FILE, CARD_FILE, HISTORY_PLOT):
        assert (folder / file).is_file(), file
    assert (folder / "saved_model" / "saved_model.pb").is_file()
    card = ModelCard.model_validate(json.loads((folder / CARD_FILE).read_text()))
    assert card.epochs_run <= 2 and card.seed == 0
    assert set(card.metrics) == {"test", "validation", "baseline"}
    test = card.metrics["test"]
    assert test.confusion_matrix is not None
    assert sum(map(sum, test.confusion_matrix)) == test.rows
    assert card.parameters > 0 and card.training_seconds > 0
    assert {"keras", "numpy"} <= set(card.libraries)
    assert all(len(d.sha256) == 64 for d in card.data)
    if card.task == "binary":
        assert test.roc_auc is not None
    assert (folder / HISTORY_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("name", "version"), [("income", 1), ("salary", 1), ("digits", 2)])
def test_onnx_export_agrees_with_keras(trained: Path, name: str, version: int) -> None:
    import keras

    folder = trained / name / str(version)
    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, *model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(onnx_outputs(folder / ONNX_FILE, x), model(x), atol=1e-5)


def test_income_pipeline_learned_adult_quirks(trained: Path) -> None:
    pipeline = load_pipeline(trained / "income" / "1" / PIPELINE_FILE)
    assert isinstance(pipeline, TabularPipeline)
    by_name = {f["name"]: f for f in pipeline.features}
    assert by_name["workclass"]["allow_missing"]  # '?' rows in the synthetic training file
    assert not by_name["sex"]["allow_missing"]
    assert "fnlwgt" not in pipeline.columns  # validated but not used
    assert f"workclass={'__missing__'}" in pipeline.columns


@pytest.mark.parametrize("runtime", ["onnx", "tensorflow"])
def test_service_loads_the_new_artifact(trained: Path, runtime: str) -> None:
    model = ServedModel.load(trained / "income" / "1", runtime)  # type: ignore[arg-type]
    probabilities = model.predict(model.encode(Rows([model.card.example])).matrix)
    assert probabilities.shape == (1, 2)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)


def test_every_recipe_has_a_valid_example() -> None:
    for recipes in RECIPES.values():
        for recipe in recipes:
            if recipe.features:
                names = [f.name for f in recipe.features]
                assert list(recipe.example) == names, recipe.name


@pytest.mark.parametrize(("name", "version"), [("income", 1), ("salary", 1), ("digits", 2)])
def test_training_writes_the_insight_reference(trained: Path, name: str, version: int) -> None:
    from app.insight.reference import CALIBRATION_PLOT, read_reference

    folder = trained / name / str(version)
    reference = read_reference(folder)
    assert reference is not None and (folder / CALIBRATION_PLOT).is_file()
    assert reference["calibration"]["temperature"] > 0
    assert ("background" in reference) == (name != "digits")
    assert ("threshold" in reference) == (name != "digits")


def test_existing_versions_are_not_replaced_without_overwrite(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (trained / "income" / "1" / CARD_FILE).read_bytes()
    code = training_main(["income", "--output-dir", str(trained), "--epochs", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(trained / "income" / "1") in err
    assert (trained / "income" / "1" / CARD_FILE).read_bytes() == before


def test_help_is_plain_text_and_explains_every_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        training_main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text
    for option in ("--data-dir", "--output-dir", "--overwrite", "--epochs", "--seed"):
        assert option in text
    assert "models/" in text and "default: 0" in text


def test_summary_gives_figures_baseline_target_and_place(trained: Path) -> None:
    from training.fit import Outcome

    folder = trained / "income" / "1"
    card = ModelCard.model_validate(json.loads((folder / CARD_FILE).read_text()))
    text = Outcome(card, folder).summary()
    assert f"test accuracy {card.metrics['test'].accuracy:.4f}" in text
    assert f"baseline {card.metrics['baseline'].accuracy:.4f}" in text
    assert "target accuracy >= 0.86, ROC AUC >= 0.912:" in text
    assert str(folder) in text
    assert card.target_met is not None and card.ceiling is not None and card.tuning


def test_digits_card_carries_augmentation_and_robustness(trained: Path) -> None:
    card = ModelCard.model_validate(json.loads((trained / "digits" / "2" / CARD_FILE).read_text()))
    assert card.augmentation is not None and card.augmentation["rotation_degrees"] > 0
    assert card.robustness is not None
    assert {"clean", "rotate +20", "inverted, uploaded", "canvas strokes, uploaded"} <= set(
        card.robustness
    )
    assert all(0 <= v <= 1 for v in card.robustness.values())


def test_exported_graph_holds_no_augmentation_and_matches_keras_on_clean_images(
    trained: Path,
) -> None:
    """Augmentation lives in the input pipeline: the served graph is the plain network."""
    import keras
    import onnx

    folder = trained / "digits" / "2"
    ops = {node.op_type for node in onnx.load(str(folder / ONNX_FILE)).graph.node}
    assert not {o for o in ops if "Random" in o or "Transform" in o or "Dropout" in o}
    model = keras.saving.load_model(folder / "model.keras", safe_mode=True)
    assert not any("random" in layer.name for layer in model.layers)
    clean = np.zeros((16, 28, 28, 1), dtype=np.float32)
    clean[:, 6:22, 12:16, 0] = 1.0  # an unaugmented "1"
    np.testing.assert_allclose(onnx_outputs(folder / ONNX_FILE, clean), model(clean), atol=1e-5)
