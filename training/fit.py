"""Train one recipe honestly: validation from training data, early stopping on
validation loss with the best weights restored, and the test split scored once."""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from app.artifacts import InputField, Metrics, ModelCard
from app.encoding import ImagePipeline, Pipeline
from training.evaluate import BASELINE, CEILING, baseline, class_probabilities, score
from training.export import write_version
from training.recipes.base import ImageData, Recipe, encode

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "onnx", "onnxruntime", "tf2onnx", "numpy")


@dataclass
class Outcome:
    card: ModelCard
    path: Path

    def summary(self) -> str:
        test = self.card.metrics["test"]
        base = self.card.metrics["baseline"]
        auc = f", ROC AUC {test.roc_auc:.4f}" if test.roc_auc is not None else ""
        base_auc = f", ROC AUC {base.roc_auc:.4f}" if base.roc_auc is not None else ""
        lines = [
            f"{self.card.name} v{self.card.version}: test accuracy {test.accuracy:.4f}{auc} "
            f"(baseline {base.accuracy:.4f}{base_auc}); "
            f"{self.card.epochs_run} epochs, {self.card.training_seconds:.1f} s",
        ]
        if self.card.target:
            verdict = "met" if self.card.target_met else "NOT met"
            lines.append(f"  target {self.card.target}: {verdict}")
        if self.card.robustness:
            worst = min(self.card.robustness, key=lambda k: self.card.robustness[k])  # type: ignore[index]
            lines.append(
                f"  robustness: worst {worst} {self.card.robustness[worst]:.4f} "
                f"over {len(self.card.robustness)} shifts (all in the card)"
            )
        lines.append(f"  artifacts: {self.path}")
        return "\n".join(lines)


def input_fields(pipeline: Pipeline) -> list[InputField]:
    """The raw input schema a client sees, derived from the fitted pipeline."""
    if isinstance(pipeline, ImagePipeline):
        return [
            InputField(
                name="image",
                type="image",
                description="Raw intensities 0-255, white on black, 28x28 (or 784 flat)",
                minimum=0,
                maximum=255,
                shape=[pipeline.height, pipeline.width],
            )
        ]
    return tabular_fields(pipeline.features)


def tabular_fields(features: Sequence[Mapping[str, Any]]) -> list[InputField]:
    """The card's raw fields of a tabular pipeline's features (training and import).
    Categories list every value training saw, rare ones included; whole-number
    categories (an ``IntegerLookup``'s) sort as numbers."""
    fields = []
    for f in features:
        common = {
            "name": f["name"],
            "description": f["description"],
            "nullable": f["allow_missing"],
        }
        if f["type"] == "numeric":
            fields.append(
                InputField(
                    type="integer" if f["integer"] else "number",
                    minimum=f["minimum"],
                    maximum=f["maximum"],
                    seen_min=f["seen_min"],
                    seen_max=f["seen_max"],
                    **common,
                )
            )
        elif f["type"] == "ordinal":
            fields.append(InputField(type="ordinal", allowed=f["order"], **common))
        else:
            key = int if f.get("integer") else None
            allowed = sorted([*f["vocabulary"], *f.get("rare", [])], key=key)
            fields.append(InputField(type="category", allowed=allowed, **common))
    return fields


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def train(
    recipe: Recipe,
    data_dir: Path | None,
    output_dir: Path,
    seed: int,
    epochs: int | None = None,
    verbose: int | str = "auto",
) -> Outcome:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    raw = recipe.load(data_dir, seed)
    pipeline = recipe.fit_pipeline(raw.train)
    x_train, x_val, x_test = (encode(pipeline, d) for d in (raw.train, raw.validation, raw.test))
    y_train, y_val, y_test = raw.train.labels, raw.validation.labels, raw.test.labels

    model = recipe.build(tuple(x_train.shape[1:]))
    binary = recipe.output == "sigmoid"
    model.compile(
        optimizer=keras.optimizers.Adam(recipe.learning_rate),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=recipe.patience, restore_best_weights=True
    )
    callbacks: list[keras.callbacks.Callback] = [stop]
    if recipe.reduce_lr_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=1 / 3, patience=recipe.reduce_lr_patience, min_lr=1e-5
            )
        )
    started = time.perf_counter()
    if recipe.augmentation.active:
        from training.augment import training_dataset

        history = model.fit(
            training_dataset(x_train, y_train, recipe.batch_size, seed, recipe.augmentation),
            steps_per_epoch=-(-len(x_train) // recipe.batch_size),
            validation_data=(x_val, y_val),
            epochs=epochs or recipe.max_epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
    else:
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_val, y_val),
            epochs=epochs or recipe.max_epochs,
            batch_size=recipe.batch_size,
            callbacks=callbacks,
            verbose=verbose,
        )
    seconds = time.perf_counter() - started

    def probabilities(x: np.ndarray) -> np.ndarray:
        return class_probabilities(model.predict(x, batch_size=2048, verbose=0))

    metrics: dict[str, Metrics] = {
        "test": score(probabilities(x_test), y_test),  # the one look at the test split
        "validation": score(probabilities(x_val), y_val),
        "baseline": baseline(x_train, y_train, x_test, y_test, seed),
    }
    ceiling = None
    if recipe.ceiling:
        from training.evaluate import gradient_boosted

        ceiling = gradient_boosted(x_train, y_train, x_test, y_test, seed)
    robustness = None
    if isinstance(pipeline, ImagePipeline):
        from training.robustness import evaluate

        def labels_of(images: np.ndarray) -> np.ndarray:
            return probabilities(pipeline.encode(images)).argmax(axis=1)

        assert isinstance(raw.test, ImageData)
        robustness = evaluate(labels_of, raw.test.images, raw.test.labels, seed)
    card = ModelCard(
        name=recipe.name,
        version=recipe.version,
        title=recipe.title,
        description=recipe.description,
        task="binary" if binary else "multiclass",
        output="sigmoid" if binary else "softmax",
        classes=list(recipe.classes),
        inputs=input_fields(pipeline),
        example=recipe.example,
        architecture=recipe.architecture,
        parameters=int(model.count_params()),
        metrics=metrics,
        baseline=BASELINE,
        data=raw.data_files(),
        seed=seed,
        epochs_run=len(history.history["loss"]),
        training_seconds=round(seconds, 2),
        libraries=library_versions(),
        target=recipe.target,
        target_met=recipe.target_met(metrics["test"], robustness),
        augmentation=recipe.augmentation.describe() if recipe.augmentation.active else None,
        robustness=robustness,
        tuning=list(recipe.tuning) or None,
        ceiling=ceiling,
        ceiling_method=CEILING if ceiling is not None else None,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    check_rows = x_test[:256]
    path = write_version(model, pipeline, card, history.history, check_rows, output_dir)
    return Outcome(card, path)
