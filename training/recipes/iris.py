"""iris: Fisher's iris flowers, 4 measurements to 3 species; v2 adds dropout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.encoding import FeatureSpec
from training.loaders import IRIS_FEATURES, read_iris
from training.recipes.base import RawSplits, Recipe, stratified_split

if TYPE_CHECKING:
    import keras

TEST_FRACTION = 0.30
VALIDATION_FRACTION = 0.2

FEATURES = tuple(
    FeatureSpec(name, "numeric", f"{name.replace('_', ' ').capitalize()} in cm", 0.0, 30.0)
    for name in IRIS_FEATURES
)

EXAMPLE = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}


def load(data_dir: Path | None, seed: int) -> RawSplits:
    """scikit-learn's bundled copy; seeded stratified 70/30, validation from the 70%."""
    data, csv = read_iris()
    rest, test = stratified_split(data.labels, TEST_FRACTION, seed)
    train_part = data.take(rest)
    keep, held = stratified_split(train_part.labels, VALIDATION_FRACTION, seed)
    return RawSplits(train_part.take(keep), train_part.take(held), data.take(test), [csv])


def _build(input_shape: tuple[int, ...], dropout: float) -> keras.Model:
    import keras

    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape, name="features")]
    for width in (16, 16):
        layers.append(keras.layers.Dense(width, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(3, activation="softmax"))
    return keras.Sequential(layers, name="iris")


def build_plain(input_shape: tuple[int, ...]) -> keras.Model:
    return _build(input_shape, 0.0)


def build_dropout(input_shape: tuple[int, ...]) -> keras.Model:
    return _build(input_shape, 0.2)


_COMMON: dict[str, Any] = dict(  # noqa: C408 - keyword names read as Recipe's
    name="iris",
    title="Iris species",
    description="Predicts the iris species (setosa, versicolor, virginica) from sepal and "
    "petal measurements in centimetres.",
    classes=("setosa", "versicolor", "virginica"),
    load=load,
    example=EXAMPLE,
    features=FEATURES,
    max_epochs=500,
    batch_size=16,
    patience=50,
    learning_rate=1e-2,
)

RECIPES = (
    Recipe(
        version=1,
        architecture="scaling -> Dense(16, relu) -> Dense(16, relu) -> Dense(3, softmax)",
        build=build_plain,
        **_COMMON,
    ),
    Recipe(
        version=2,
        architecture="scaling -> Dense(16, relu) -> Dropout(0.2) -> Dense(16, relu) "
        "-> Dropout(0.2) -> Dense(3, softmax)",
        build=build_dropout,
        **_COMMON,
    ),
)
