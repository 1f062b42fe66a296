"""Training and serving agree: (a) the same raw rows get the same encoding, (b) the
probabilities served over HTTP are the Keras model's to 1e-5, and (c) the ONNX and
TensorFlow runtimes give the same probabilities to 1e-5, for every model version."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.artifacts import KERAS_FILE
from app.encoding import ImagePipeline, Pipeline, TabularPipeline
from app.runtimes import open_runtime
from app.serving.inference import Rows
from tests.model_rows import (
    as_class_probabilities,
    calibrated,
    card,
    committed,
    folder,
    pipeline,
    served_probabilities,
    synthetic_rows,
)
from training.loaders import TabularData
from training.recipes import RECIPES
from training.recipes.base import ImageData, RawData, Recipe, encode

VERSIONS = committed()
TOLERANCE = 1e-5
REAL_ROWS = {"digits": 300}  # images are large; every other model sends this many rows:
DEFAULT_REAL_ROWS = 1000


def recipe_for(name: str, version: int) -> Recipe:
    return next(r for r in RECIPES[name] if r.version == version)


def as_raw_data(rows: list[dict[str, Any]]) -> RawData:
    """Rows as training holds them after loading: a DataFrame, or a uint8 image array."""
    labels = np.zeros(len(rows), dtype=np.int64)
    if "image" in rows[0]:
        return ImageData(np.asarray([r["image"] for r in rows], dtype=np.uint8), labels)
    return TabularData(pd.DataFrame(rows), labels)


def as_rows(data: RawData, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rows of a split, as a client would send them (JSON values)."""
    if isinstance(data, ImageData):
        return [{"image": image.tolist()} for image in data.images[:limit]]
    columns = data.columns()
    count = min(limit, len(data))
    return [{name: values[i] for name, values in columns.items()} for i in range(count)]


def service_encoding(client: TestClient, name: str, version: int, rows: list[Any]) -> np.ndarray:
    """What the service feeds the network: the loaded version's own validation and
    encoding, the step the data plane runs for every protocol."""
    model = client.app.state.dataplane.model(name, version)  # type: ignore[attr-defined]
    chunk = model.max_instances  # as requests would carry them: under the instance cap
    return np.vstack(
        [model.encode(Rows(rows[i : i + chunk])).matrix for i in range(0, len(rows), chunk)]
    )


def http_probabilities(
    client: TestClient, name: str, version: int, rows: list[dict[str, Any]]
) -> np.ndarray:
    """Probabilities served by the pinned version, posted in batches under the cap."""
    parts = []
    for start in range(0, len(rows), 500):
        batch = rows[start : start + 500]
        response = client.post(
            f"/models/{name}/versions/{version}/predict", json={"instances": batch}
        )
        assert response.status_code == 200, response.text
        assert response.json()["version"] == version
        parts.append(served_probabilities(response.json(), card(name, version).classes))
    return np.vstack(parts)


@cache
def keras_model(name: str, version: int) -> Any:
    import keras

    return keras.saving.load_model(folder(name, version) / KERAS_FILE, safe_mode=True)


def keras_probabilities(name: str, version: int, x: np.ndarray) -> np.ndarray:
    raw = np.asarray(keras_model(name, version)(x, training=False))
    return calibrated(name, version, as_class_probabilities(raw, card(name, version).output))


def assert_same_probabilities(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE)


def real_split(data_dir: Path, name: str, version: int) -> Any:
    return recipe_for(name, version).load(data_dir, card(name, version).seed)


# ------------------------------------------------------------- (a) encoding
@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_service_encodes_rows_as_training_does(client: TestClient, name: str, version: int) -> None:
    rows = synthetic_rows(card(name, version), 200, seed=version)
    training = encode(pipeline(name, version), as_raw_data(rows))
    served = service_encoding(client, name, version, rows)
    assert training.dtype == served.dtype == np.float32
    np.testing.assert_array_equal(served, training)


@pytest.mark.real_data
@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_training_split_refits_to_the_served_encoding(
    client: TestClient, data_dir: Path, name: str, version: int
) -> None:
    """Refitting the recipe's encoding on the real training split reproduces the
    artifact's, and the service encodes real test rows exactly as training does."""
    raw = real_split(data_dir, name, version)
    refit: Pipeline = recipe_for(name, version).fit_pipeline(raw.train)
    artifact = pipeline(name, version)
    if isinstance(artifact, TabularPipeline):
        assert isinstance(refit, TabularPipeline)
        assert refit.columns == artifact.columns
    else:
        assert isinstance(refit, ImagePipeline)
        assert refit.to_json() == artifact.to_json()
    training = encode(artifact, raw.test)
    np.testing.assert_array_equal(encode(refit, raw.test), training)

    rows = as_rows(raw.test, 2000)
    served = service_encoding(client, name, version, rows)
    np.testing.assert_array_equal(served, training[: len(rows)])


# ------------------------------------------------------- (b) HTTP vs Keras
@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_served_probabilities_equal_keras(client: TestClient, name: str, version: int) -> None:
    rows = synthetic_rows(card(name, version), 64, seed=10 + version)
    rows.append(dict(card(name, version).example))
    expected = keras_probabilities(
        name, version, encode(pipeline(name, version), as_raw_data(rows))
    )
    assert_same_probabilities(http_probabilities(client, name, version, rows), expected)


@pytest.mark.real_data
@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_served_probabilities_equal_keras_on_the_test_split(
    client: TestClient, data_dir: Path, name: str, version: int
) -> None:
    raw = real_split(data_dir, name, version)
    rows = as_rows(raw.test, REAL_ROWS.get(name, DEFAULT_REAL_ROWS))
    x = encode(pipeline(name, version), raw.test)[: len(rows)]
    expected = keras_probabilities(name, version, x)
    served = http_probabilities(client, name, version, rows)
    assert_same_probabilities(served, expected)
    # the served labels score like the card says (same rows, same answers)
    labels = np.asarray(raw.test.labels[: len(rows)])
    assert (served.argmax(1) == labels).mean() == (expected.argmax(1) == labels).mean()


# --------------------------------------------------- (c) ONNX vs TensorFlow
def assert_runtimes_agree(name: str, version: int, x: np.ndarray) -> None:
    model = card(name, version)
    width = 1 if model.output == "sigmoid" else len(model.classes)
    onnx = open_runtime("onnx", folder(name, version))
    tensorflow = open_runtime("tensorflow", folder(name, version))
    try:
        for batch in (x[:1], x):  # a lone request and a merged batch
            a, b = onnx.run(batch), tensorflow.run(batch)
            assert a.shape == b.shape == (len(batch), width)
            assert_same_probabilities(
                as_class_probabilities(a, model.output), as_class_probabilities(b, model.output)
            )
    finally:
        onnx.close()
        tensorflow.close()


@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_onnx_and_tensorflow_runtimes_agree(name: str, version: int) -> None:
    rows = synthetic_rows(card(name, version), 64, seed=20 + version)
    assert_runtimes_agree(name, version, encode(pipeline(name, version), as_raw_data(rows)))


@pytest.mark.real_data
@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_onnx_and_tensorflow_runtimes_agree_on_the_test_split(
    data_dir: Path, name: str, version: int
) -> None:
    raw = real_split(data_dir, name, version)
    assert_runtimes_agree(name, version, encode(pipeline(name, version), raw.test)[:2000])
