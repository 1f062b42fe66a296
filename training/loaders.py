"""Parsers for the raw data files, each returning raw records and labels.

Parsers take explicit paths so tests can feed them tiny synthetic files written in
the real formats; :mod:`training.datasets` decides where the real files live.
Missing values come out as ``None`` (never as a fill value): deciding what a
missing value *means* is the encoding pipeline's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
ADULT_POSITIVE = ">50K"

SALARY_SOURCE_COLUMNS = {
    "age": "age",
    "professional_experience_years": "experience",
    "highest_edu_level": "education",
    "gender": "gender",
}
SALARY_THRESHOLD = 100_000

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass
class TabularData:
    """Raw feature columns (``None`` = missing) and 0/1/... integer labels."""

    frame: pd.DataFrame
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def columns(self) -> dict[str, list[object]]:
        return {
            str(c): [None if pd.isna(v) else v for v in self.frame[c].tolist()]
            for c in self.frame.columns
        }

    def take(self, index: np.ndarray) -> TabularData:
        return TabularData(self.frame.iloc[index].reset_index(drop=True), self.labels[index])


def read_adult(path: Path) -> TabularData:
    """Parse ``adult.data`` or ``adult.test`` (junk first line, labels ending in '.')."""
    frame = pd.read_csv(
        path,
        header=None,
        names=ADULT_COLUMNS,
        sep=",",
        skipinitialspace=True,
        na_values=["?"],
        keep_default_na=False,
        comment="|",
        skip_blank_lines=True,
    )
    frame = frame.dropna(subset=["income"])
    labels = frame.pop("income").astype(str).str.strip().str.rstrip(".")
    unexpected = set(labels) - {ADULT_POSITIVE, "<=50K"}
    if unexpected:
        raise ValueError(f"{path}: unexpected income labels {sorted(unexpected)}")
    y = (labels == ADULT_POSITIVE).to_numpy(dtype=np.int64)
    return TabularData(frame.reset_index(drop=True), y)


def read_salary(path: Path) -> TabularData:
    """Parse the cleaned Ask-a-Manager survey; label is ``annual_salary > 100000``."""
    raw = pd.read_csv(path)
    salary = pd.to_numeric(raw["annual_salary"], errors="raise")
    frame = raw[list(SALARY_SOURCE_COLUMNS)].rename(columns=SALARY_SOURCE_COLUMNS)
    frame = frame.apply(lambda c: c.str.strip())
    y = (salary > SALARY_THRESHOLD).to_numpy(dtype=np.int64)
    return TabularData(frame.reset_index(drop=True), y)


def read_iris() -> tuple[TabularData, Path]:
    """scikit-learn's bundled iris, plus the path of the CSV it was read from."""
    from importlib import resources

    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame.columns = IRIS_FEATURES
    csv = Path(str(resources.files("sklearn.datasets") / "data" / "iris.csv"))
    return TabularData(frame, bunch.target.to_numpy(dtype=np.int64)), csv


def read_mnist(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` as uint8 images and int64 labels."""
    with np.load(path) as data:
        return (
            data["x_train"],
            data["y_train"].astype(np.int64),
            data["x_test"],
            data["y_test"].astype(np.int64),
        )
