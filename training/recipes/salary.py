"""salary: Ask a Manager 2021 survey (US), predict an annual salary above $100K."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.encoding import FeatureSpec
from training.datasets import fetch
from training.loaders import read_salary
from training.recipes.base import RawSplits, Recipe, stratified_split

if TYPE_CHECKING:
    import keras

TEST_FRACTION = 0.30
VALIDATION_FRACTION = 0.15

AGE_BANDS = ("under 18", "18-24", "25-34", "35-44", "45-54", "55-64", "65 or over")
EXPERIENCE_BANDS = (
    "1 year or less",
    "2 - 4 years",
    "5-7 years",
    "8 - 10 years",
    "11 - 20 years",
    "21 - 30 years",
    "31 - 40 years",
    "41 years or more",
)
EDUCATION_LEVELS = (
    "High School",
    "College degree",
    "Master's degree",
    "Professional degree (MD, JD, etc.)",
    "PhD",
)
GENDERS = ("Man", "Woman")  # the cleaned survey holds these two answers only

FEATURES = (
    FeatureSpec("age", "ordinal", "Age band", order=AGE_BANDS),
    FeatureSpec(
        "experience", "ordinal", "Years of professional experience", order=EXPERIENCE_BANDS
    ),
    FeatureSpec("education", "ordinal", "Highest level of education", order=EDUCATION_LEVELS),
    FeatureSpec("gender", "ordinal", "Gender (a binary indicator)", order=GENDERS),
)

EXAMPLE = {
    "age": "35-44",
    "experience": "11 - 20 years",
    "education": "Master's degree",
    "gender": "Man",
}


def load(data_dir: Path | None, seed: int) -> RawSplits:
    """A fixed, seeded, stratified 70/30 split; validation is carved from the 70%."""
    path = fetch("salary_data_cleaned.csv", data_dir)
    data = read_salary(path)
    rest, test = stratified_split(data.labels, TEST_FRACTION, seed)
    train_part = data.take(rest)
    keep, held = stratified_split(train_part.labels, VALIDATION_FRACTION, seed)
    return RawSplits(train_part.take(keep), train_part.take(held), data.take(test), [path])


def build(input_shape: tuple[int, ...]) -> keras.Model:
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="features"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(1, activation="sigmoid"),
        ],
        name="salary",
    )


RECIPE = Recipe(
    name="salary",
    version=1,
    title="Ask a Manager salary survey",
    description="Predicts whether a US respondent of the 2021 Ask a Manager survey earns "
    "more than $100,000 a year, from age band, experience band, education and gender.",
    classes=("<=100K", ">100K"),
    architecture="ordinal encodings -> Dense(32, relu) -> Dropout(0.2) -> Dense(16, relu) "
    "-> Dropout(0.2) -> Dense(1, sigmoid)",
    load=load,
    build=build,
    example=EXAMPLE,
    features=FEATURES,
    max_epochs=100,
    batch_size=128,
    patience=8,
    learning_rate=1e-3,
    target_accuracy=0.71,
    target_roc_auc=0.69,
    ceiling=True,
)
