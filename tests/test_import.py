"""``keras-serve import``: a user's own Keras model, built and trained here on synthetic
data in seconds, served on every protocol with the answers Keras gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.artifacts import CARD_FILE, HISTORY_PLOT, ONNX_FILE, PIPELINE_FILE, ModelCard, read_card
from app.main import create_app
from app.pipeline_format import PipelineFile
from app.settings import Settings

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from training.importer import ImportProblem, import_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLANS = ["basic", "pro", "team"]


def churn_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n).astype("float32")
    plan = rng.choice(PLANS, n)
    y = ((age > 45) ^ (plan == "pro")).astype("float32")
    return age, plan, y


def preprocessing_model(classes: int = 1, lookup_then_encoding: bool = False) -> Any:
    """Normalization on a number, StringLookup on a category, one Concatenate, a body."""
    age, plan, y = churn_data(300)
    a = keras.Input(shape=(1,), name="age")
    p = keras.Input(shape=(1,), name="plan", dtype="string")
    norm = keras.layers.Normalization(name="age_norm")
    norm.adapt(age.reshape(-1, 1))
    if lookup_then_encoding:
        lookup = keras.layers.StringLookup(vocabulary=PLANS, output_mode="int", name="plan_ids")
        encoded = keras.layers.CategoryEncoding(num_tokens=4, output_mode="one_hot")(lookup(p))
    else:
        lookup = keras.layers.StringLookup(vocabulary=PLANS, output_mode="one_hot", name="plan_1h")
        encoded = lookup(p)
    x = keras.layers.Concatenate(name="concat")([norm(a), encoded])
    x = keras.layers.Dense(8, activation="relu")(x)
    if classes == 1:
        out = keras.layers.Dense(1, activation="sigmoid")(x)
        loss, target = "binary_crossentropy", y
    elif classes == 0:  # regression
        out = keras.layers.Dense(1)(x)
        loss, target = "mse", age * 0.5 + (plan == "pro") * 10
    else:
        out = keras.layers.Dense(classes, activation="softmax")(x)
        loss, target = "sparse_categorical_crossentropy", y
    model = keras.Model({"age": a, "plan": p}, out)
    model.compile("adam", loss)
    inputs = {"age": age.reshape(-1, 1), "plan": tf.constant(plan.reshape(-1, 1))}
    model.fit(inputs, target, epochs=2, verbose=0, batch_size=64)
    return model


def keras_answer(model: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    inputs = {
        "age": tf.constant(np.asarray([[r["age"]] for r in rows], dtype=np.float32)),
        "plan": tf.constant(np.asarray([[r["plan"]] for r in rows])),
    }
    return np.asarray(model(inputs, training=False))


ROWS = [
    {"age": 23.0, "plan": "pro"},
    {"age": 61.5, "plan": "basic"},
    {"age": 44.0, "plan": "team"},
    {"age": 35.0, "plan": "enterprise"},  # never seen: the out-of-vocabulary column
]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def serve(models_dir: Path, watch_interval_s: float = 0) -> TestClient:
    settings = Settings(models_dir=models_dir, runtime="onnx", watch_interval_s=watch_interval_s)
    return TestClient(create_app(settings))


def v2_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "age",
                "shape": [len(rows)],
                "datatype": "FP32",
                "data": [r["age"] for r in rows],
            },
            {
                "name": "plan",
                "shape": [len(rows)],
                "datatype": "BYTES",
                "data": [r["plan"] for r in rows],
            },
        ]
    }


@pytest.mark.parametrize("lookup_then_encoding", [False, True])
def test_keras_model_with_preprocessing_layers_answers_like_keras_on_every_protocol(
    models_dir: Path, tmp_path: Path, lookup_then_encoding: bool
) -> None:
    model = preprocessing_model(lookup_then_encoding=lookup_then_encoding)
    path = tmp_path / "churn.keras"
    model.save(path)
    history = tmp_path / "history.json"
    history.write_text(
        json.dumps(
            {
                "loss": [0.7, 0.6],
                "val_loss": [0.7, 0.65],
                "accuracy": [0.5, 0.6],
                "val_accuracy": [0.5, 0.55],
            }
        )
    )
    card, destination, notes = import_model(
        path, "churn", models_dir, description_path=None, history_path=history
    )
    assert card.task == "binary" and card.output == "sigmoid" and card.runtime is None
    assert [(f.name, f.type) for f in card.inputs] == [("age", "number"), ("plan", "category")]
    assert card.inputs[1].allowed == PLANS
    assert (destination / ONNX_FILE).is_file() and (destination / HISTORY_PLOT).is_file()
    ModelCard.model_validate_json((destination / CARD_FILE).read_text())  # the documented
    PipelineFile.model_validate_json((destination / PIPELINE_FILE).read_text())  # format
    assert any("age_norm" in note for note in notes)

    expected = keras_answer(model, ROWS)[:, 0]
    with serve(models_dir) as client:
        native = client.post("/models/churn/predict", json={"instances": ROWS}).json()
        got = [p["probabilities"]["1"] for p in native["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert native["predictions"][3]["unknown_categories"] == ["plan"]

        v2 = client.post("/v2/models/churn/versions/1/infer", json=v2_body(ROWS)).json()
        probabilities = np.asarray(v2["outputs"][0]["data"]).reshape(-1, 2)[:, 1]
        np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)

        tfs = client.post("/v1/models/churn:predict", json={"instances": ROWS}).json()
        np.testing.assert_allclose(
            [p["probabilities"][1] for p in tfs["predictions"]], expected, atol=1e-5, rtol=0
        )

        # validation errors name the imported model's own fields
        bad = client.post("/models/churn/predict", json={"age": "old", "plan": 3})
        assert bad.status_code == 422
        assert {d["field"] for d in bad.json()["detail"]} == {"age", "plan"}
        missing = client.post("/models/churn/predict", json={"agee": 30, "plan": "pro"})
        assert missing.status_code == 422 and "age" in missing.json()["error"]
        v2_bad = client.post(
            "/v2/models/churn/infer",
            json={"inputs": [{"name": "age", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        )
        assert v2_bad.status_code == 400 and "age" in v2_bad.json()["error"]
        assert client.get("/models/churn/versions/1/history.png").status_code == 200


def test_plain_model_with_a_yaml_description_and_a_csv_sample(
    models_dir: Path, tmp_path: Path
) -> None:
    age, plan, y = churn_data(300, seed=1)
    # the documented convention: numbers standardised with the sample's mean and
    # (population) std, categories one-hot in the description's order
    sample = tmp_path / "sample.csv"
    lines = ["age,plan,churned"] + [
        f"{a:.3f},{p},{'yes' if t else 'no'}" for a, p, t in zip(age, plan, y, strict=True)
    ]
    sample.write_text("\n".join(lines) + "\n")
    written = np.asarray([float(line.split(",")[0]) for line in lines[1:]])
    mean, std = written.mean(), written.std()
    onehot = (plan[:, None] == np.asarray(PLANS)[None, :]).astype("float32")
    x = np.hstack([((written - mean) / std)[:, None], onehot]).astype("float32")
    model = keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "plain.keras"
    model.save(path)
    description = tmp_path / "inputs.yaml"
    description.write_text(
        "title: Churn\n"
        "classes: ['no', 'yes']\n"
        "target: churned\n"
        "inputs:\n"
        "  - {name: age, type: number, minimum: 0, maximum: 120}\n"
        f"  - {{name: plan, type: category, values: {PLANS}}}\n"
    )
    card, _, _ = import_model(path, "plain", models_dir, None, description, sample)
    assert card.task == "binary" and card.classes == ["no", "yes"]
    assert card.metrics["sample"].accuracy is not None and card.metrics["sample"].rows == 256
    assert card.inputs[0].seen_min == pytest.approx(written.min())

    rows = [{"age": 23.0, "plan": "pro"}, {"age": 70.0, "plan": "team"}]
    encoded = np.asarray(
        [[(r["age"] - mean) / std, *(float(r["plan"] == p) for p in PLANS)] for r in rows],
        dtype="float32",
    )
    expected = np.asarray(model(encoded))
    with serve(models_dir) as client:
        native = client.post("/models/plain/predict", json={"instances": rows}).json()
        got = [[p["probabilities"][c] for c in ("no", "yes")] for p in native["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        v2 = client.post("/v2/models/plain/infer", json=v2_body(rows)).json()
        np.testing.assert_allclose(
            np.asarray(v2["outputs"][0]["data"]).reshape(-1, 2), expected, atol=1e-5, rtol=0
        )
        tfs = client.post("/v1/models/plain:predict", json={"instances": rows}).json()
        assert [p["label"] for p in tfs["predictions"]] == [
            ["no", "yes"][i] for i in expected.argmax(axis=1)
        ]
        too_old = client.post("/models/plain/predict", json={"age": 300, "plan": "pro"})
        assert too_old.status_code == 422 and too_old.json()["detail"][0]["field"] == "age"
        wrong = client.post("/models/plain/predict", json={"age": 30, "plan": "gold"})
        assert wrong.status_code == 200  # an unseen category is flagged, not refused
        assert wrong.json()["predictions"][0]["unknown_categories"] == ["plan"]

    # the same network as a SavedModel directory: it does not say its last activation,
    # so the description must give the task
    model.export(str(tmp_path / "plain_sm"), format="tf_saved_model", verbose=False)
    with pytest.raises(ImportProblem, match="give task"):
        import_model(tmp_path / "plain_sm", "saved", models_dir, None, description, sample)
    description.write_text(description.read_text() + "task: binary\n")
    card, _, _ = import_model(tmp_path / "plain_sm", "saved", models_dir, None, description, sample)
    assert (card.task, card.output, card.classes) == ("binary", "softmax", ["no", "yes"])
    with serve(models_dir) as client:
        native = client.post("/models/saved/predict", json={"instances": rows}).json()
        got = [[p["probabilities"][c] for c in ("no", "yes")] for p in native["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_regression_model_is_served_and_documented(models_dir: Path, tmp_path: Path) -> None:
    model = preprocessing_model(classes=0)
    path = tmp_path / "price.keras"
    model.save(path)
    card, _, _ = import_model(path, "price", models_dir)
    assert (card.task, card.output, card.classes) == ("regression", "linear", [])
    expected = keras_answer(model, ROWS)[:, 0]
    with serve(models_dir) as client:
        native = client.post("/models/price/predict", json={"instances": ROWS}).json()
        np.testing.assert_allclose(
            [p["prediction"] for p in native["predictions"]], expected, atol=1e-5, rtol=0
        )
        v2 = client.post("/v2/models/price/infer", json=v2_body(ROWS)).json()
        assert [o["name"] for o in v2["outputs"]] == ["prediction"]
        np.testing.assert_allclose(v2["outputs"][0]["data"], expected, atol=1e-5, rtol=0)
        tfs = client.post("/v1/models/price:predict", json={"instances": ROWS}).json()
        np.testing.assert_allclose(
            [p["prediction"] for p in tfs["predictions"]], expected, atol=1e-5, rtol=0
        )
        metadata = client.get("/v2/models/price").json()
        assert [o["name"] for o in metadata["outputs"]] == ["prediction"]
        assert metadata["outputs"][0]["datatype"] == "FP32"
        signature = client.get("/v1/models/price/metadata").json()["metadata"]["signature_def"]
        assert list(signature["signature_def"]["serving_default"]["outputs"]) == ["prediction"]
        document = client.get("/openapi.json").json()
        assert "ValuePrediction" in document["components"]["schemas"]
        explained = client.post("/models/price/predict?explain=true", json=ROWS[0])
        assert explained.status_code == 422 and "classifiers" in explained.text
        label = client.post(
            "/v2/models/price/infer", json={**v2_body(ROWS), "outputs": [{"name": "label"}]}
        )
        assert label.status_code == 400 and "prediction" in label.json()["error"]


def test_overwrite_is_required_and_the_watcher_serves_the_replacement(
    models_dir: Path, tmp_path: Path
) -> None:
    first = preprocessing_model()
    first.save(tmp_path / "a.keras")
    import_model(tmp_path / "a.keras", "churn", models_dir, version=1)
    second = preprocessing_model(classes=2)
    second.save(tmp_path / "b.keras")
    with pytest.raises(ImportProblem, match="--overwrite"):
        import_model(tmp_path / "b.keras", "churn", models_dir, version=1)
    with serve(models_dir, watch_interval_s=0.1) as client:
        before = client.post("/models/churn/predict", json=ROWS[0]).json()
        import_model(tmp_path / "b.keras", "churn", models_dir, version=1, overwrite=True)
        expected = keras_answer(second, ROWS[:1])[0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = client.post("/models/churn/predict", json=ROWS[0]).json()
            if answer != before:
                break
            time.sleep(0.1)
        got = [answer["predictions"][0]["probabilities"][c] for c in ("0", "1")]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert read_card(models_dir / "churn" / "1").output == "softmax"


def test_unsupported_layers_and_bad_descriptions_are_named(
    models_dir: Path, tmp_path: Path
) -> None:
    a = keras.Input(shape=(1,), name="income")
    hashed = keras.layers.Hashing(num_bins=3, output_mode="one_hot", name="income_bins")(a)
    b = keras.Input(shape=(1,), name="size")
    x = keras.layers.Concatenate()([hashed, b])
    model = keras.Model({"income": a, "size": b}, keras.layers.Dense(1, activation="sigmoid")(x))
    model.save(tmp_path / "bins.keras")
    with pytest.raises(ImportProblem, match=r"income_bins.*Hashing"):
        import_model(tmp_path / "bins.keras", "bins", models_dir)

    plain = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1, activation="sigmoid")])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(ImportProblem, match="--description"):
        import_model(tmp_path / "plain.keras", "plain", models_dir)
    description = tmp_path / "inputs.json"
    description.write_text(
        json.dumps({"inputs": [{"name": "x", "type": "number", "mean": 0, "std": 1}]})
    )
    with pytest.raises(ImportProblem, match="takes 3 values, but the description encodes 1"):
        import_model(tmp_path / "plain.keras", "plain", models_dir, None, description)
    description.write_text(json.dumps({"inputs": [{"name": "x", "type": "numbr"}]}))
    with pytest.raises(ImportProblem, match=r"inputs\.0\.type"):
        import_model(tmp_path / "plain.keras", "plain", models_dir, None, description)
    assert not (models_dir / "plain").exists() or not any((models_dir / "plain").iterdir())

    # the command line: one clear line, exit status 2, never a traceback
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "import",
            str(tmp_path / "bins.keras"),
            "--name",
            "bins",
            "--models-dir",
            str(models_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 2, result.stderr
    assert "income_bins" in result.stderr and "Traceback" not in result.stderr
    assert CARD_FILE not in result.stdout


def test_a_sample_gives_the_imported_version_its_reference_for_insight(
    models_dir: Path, tmp_path: Path
) -> None:
    model = preprocessing_model()
    model.save(tmp_path / "churn.keras")
    age, plan, y = churn_data(200, seed=3)
    sample = tmp_path / "sample.csv"
    sample.write_text(
        "age,plan,churned\n"
        + "".join(f"{a:.2f},{p},{int(t)}\n" for a, p, t in zip(age, plan, y, strict=True))
    )
    description = tmp_path / "about.yaml"
    description.write_text("target: churned\n")
    _, destination, notes = import_model(
        tmp_path / "churn.keras", "churn", models_dir, None, description, sample
    )
    assert any("reference.json from 200 sample rows" in n for n in notes), notes
    reference = json.loads((destination / "reference.json").read_text())
    assert set(reference["drift"]["fields"]) == {"age", "plan"}
    assert reference["calibration"]["temperature"] == 1.0  # the model's own probabilities

    # without a sample the summary says what insight is missing, and drift answers 404
    _, bare, bare_notes = import_model(tmp_path / "churn.keras", "bare", models_dir)
    assert not (bare / "reference.json").exists()
    assert any("no reference.json" in n and "drift" in n for n in bare_notes), bare_notes

    with serve(models_dir) as client:
        for row in ROWS:
            assert client.post("/models/churn/predict", json=row).status_code == 200
        drift = client.get("/models/churn/versions/1/drift")
        assert drift.status_code == 200, drift.text
        assert set(drift.json()["fields"]) == {"age", "plan"}
        assert client.get("/models/bare/versions/1/drift").status_code == 404
        assert client.get("/models/churn/versions/1/calibration").status_code == 200
        explained = client.post("/models/churn/predict?explain=true", json=ROWS[0])
        assert explained.status_code == 200, explained.text
        explanation = explained.json()["predictions"][0]["explanation"]
        assert set(explanation["attributions"]) == {"age", "plan"}
        # the background is the sample's prototypes: attributions add up to value - base
        total = sum(explanation["attributions"].values())
        assert total == pytest.approx(explanation["value"] - explanation["base"], abs=1e-4)


ROOMS = [1, 2, 3, 5]


def house_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rooms = rng.choice(ROOMS, n).astype("int64")
    income = rng.uniform(0, 40, n).astype("float32")
    y = ((income > 18) ^ (rooms > 2)).astype("float32")
    return rooms, income, y


def binned_model(discretize: bool) -> Any:
    """IntegerLookup on whole-number rooms and, optionally, Discretization on income."""
    rooms, income, y = house_data(200)
    r = keras.Input(shape=(1,), name="rooms", dtype="int64")
    i = keras.Input(shape=(1,), name="income")
    lookup = keras.layers.IntegerLookup(vocabulary=ROOMS, output_mode="int", name="rooms_ids")
    pieces = [keras.layers.CategoryEncoding(num_tokens=5, output_mode="one_hot")(lookup(r))]
    if discretize:
        bins = keras.layers.Discretization(bin_boundaries=[10.0, 20.0, 30.0], name="income_bins")
        pieces.append(keras.layers.CategoryEncoding(num_tokens=4, output_mode="one_hot")(bins(i)))
    else:
        norm = keras.layers.Normalization(name="income_norm")
        norm.adapt(income.reshape(-1, 1))
        pieces.append(norm(i))
    x = keras.layers.Concatenate()(pieces)
    x = keras.layers.Dense(8, activation="relu")(x)
    model = keras.Model({"rooms": r, "income": i}, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile("adam", "binary_crossentropy")
    inputs = {"rooms": rooms.reshape(-1, 1), "income": income.reshape(-1, 1)}
    model.fit(inputs, y, epochs=1, verbose=0, batch_size=64)
    return model


HOUSES = [
    {"rooms": 1, "income": 5.0},
    {"rooms": 3, "income": 15.0},
    {"rooms": 5, "income": 20.0},  # on a bin boundary: the upper bin, as in Keras
    {"rooms": 7, "income": 39.0},  # 7 rooms never seen: the out-of-vocabulary column
]


def keras_predict(model: Any, rows: list[dict[str, Any]]) -> np.ndarray:
    inputs = {
        "rooms": np.asarray([[r["rooms"]] for r in rows], dtype="int64"),
        "income": np.asarray([[r["income"]] for r in rows], dtype="float32"),
    }
    return np.asarray(model.predict(inputs, verbose=0))[:, 0]


@pytest.mark.parametrize("discretize", [False, True])
def test_integer_lookup_and_discretization_are_read_from_the_layers(
    models_dir: Path, tmp_path: Path, discretize: bool
) -> None:
    model = binned_model(discretize)
    model.save(tmp_path / "houses.keras")
    card, destination, notes = import_model(tmp_path / "houses.keras", "houses", models_dir)
    assert [(f.name, f.type, f.allowed) for f in card.inputs] == [
        ("rooms", "category", ["1", "2", "3", "5"]),
        ("income", "number", None),
    ]
    assert isinstance(card.example["rooms"], int)
    pipeline = json.loads((destination / PIPELINE_FILE).read_text())
    PipelineFile.model_validate(pipeline)
    assert pipeline["features"][0]["integer"] is True
    if discretize:  # ONNX has no Bucketize: the bins stay in the network, on TensorFlow
        assert card.runtime == "tensorflow" and "10.0, 20.0, 30.0" in card.inputs[1].description
        assert any("income_bins" in n and "inside the served network" in n for n in notes)
    else:
        assert card.runtime is None and (destination / ONNX_FILE).is_file()

    expected = keras_predict(model, HOUSES)
    with serve(models_dir) as client:
        native = client.post("/models/houses/predict", json={"instances": HOUSES}).json()
        got = [p["probabilities"]["1"] for p in native["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        assert native["predictions"][3]["unknown_categories"] == ["rooms"]
        as_text = client.post("/models/houses/predict", json={"rooms": "3", "income": 15.0})
        assert as_text.json()["predictions"][0]["probabilities"]["1"] == pytest.approx(
            expected[1], abs=1e-5
        )
        body = {
            "inputs": [
                {
                    "name": "rooms",
                    "shape": [4],
                    "datatype": "BYTES",
                    "data": [str(r["rooms"]) for r in HOUSES],
                },
                {
                    "name": "income",
                    "shape": [4],
                    "datatype": "FP32",
                    "data": [r["income"] for r in HOUSES],
                },
            ]
        }
        v2 = client.post("/v2/models/houses/infer", json=body).json()
        np.testing.assert_allclose(
            np.asarray(v2["outputs"][0]["data"]).reshape(-1, 2)[:, 1], expected, atol=1e-5
        )
        metadata = client.get("/v2/models/houses").json()
        assert [i["name"] for i in metadata["inputs"]] == ["rooms", "income"]
        platform = "tensorflow_savedmodel" if discretize else "onnxruntime_onnx"
        assert metadata["platform"] == platform  # the metadata says which runtime serves
        bad = client.post("/models/houses/predict", json={"rooms": 2.5, "income": 1.0})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "rooms"


def test_a_model_built_from_a_feature_space_is_read_layer_by_layer(
    models_dir: Path, tmp_path: Path
) -> None:
    rooms, income, _ = house_data(120, seed=2)
    data = {"rooms": rooms, "income": income}
    space = keras.utils.FeatureSpace(
        features={
            "rooms": keras.utils.FeatureSpace.integer_categorical(num_oov_indices=1),
            "income": keras.utils.FeatureSpace.float_normalized(),
        },
        output_mode="concat",
    )
    space.adapt(tf.data.Dataset.from_tensor_slices(data).batch(32))
    encoded = space.get_encoded_features()
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(4)(encoded))
    model = keras.Model(space.get_inputs(), out)
    model.save(tmp_path / "space.keras")
    card, _, _ = import_model(tmp_path / "space.keras", "space", models_dir)
    assert {(f.name, f.type) for f in card.inputs} == {("rooms", "category"), ("income", "number")}
    rows = HOUSES[:3]
    inputs = {
        "rooms": np.asarray([[r["rooms"]] for r in rows], dtype="int32"),
        "income": np.asarray([[r["income"]] for r in rows], dtype="float32"),
    }
    expected = np.asarray(model.predict(inputs, verbose=0))[:, 0]
    with serve(models_dir) as client:
        native = client.post("/models/space/predict", json={"instances": rows}).json()
        got = [p["probabilities"]["1"] for p in native["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def two_output_model() -> Any:
    """One body, two named Keras outputs: a churn classifier and a spend regression."""
    age, plan, y = churn_data(300, seed=4)
    a = keras.Input(shape=(1,), name="age")
    p = keras.Input(shape=(1,), name="plan", dtype="string")
    norm = keras.layers.Normalization(name="age_norm")
    norm.adapt(age.reshape(-1, 1))
    lookup = keras.layers.StringLookup(vocabulary=PLANS, output_mode="one_hot")
    x = keras.layers.Concatenate()([norm(a), lookup(p)])
    x = keras.layers.Dense(8, activation="relu")(x)
    churn = keras.layers.Dense(1, activation="sigmoid", name="churn_head")(x)
    spend = keras.layers.Dense(1, name="spend_head")(x)
    model = keras.Model({"age": a, "plan": p}, {"churn": churn, "spend": spend})
    model.compile("adam", {"churn": "binary_crossentropy", "spend": "mse"})
    inputs = {"age": age.reshape(-1, 1), "plan": tf.constant(plan.reshape(-1, 1))}
    model.fit(inputs, {"churn": y, "spend": age * 0.1}, epochs=1, verbose=0, batch_size=64)
    return model


def test_a_two_output_model_serves_each_output_under_its_name(
    models_dir: Path, tmp_path: Path
) -> None:
    model = two_output_model()
    model.save(tmp_path / "two.keras")
    description = tmp_path / "two.yaml"
    description.write_text("outputs:\n  churn: {classes: [stay, leave]}\n")
    card, _, notes = import_model(tmp_path / "two.keras", "two", models_dir, None, description)
    assert card.heads is not None
    assert [(h.name, h.task, h.output, h.classes) for h in card.heads] == [
        ("churn", "binary", "sigmoid", ["stay", "leave"]),
        ("spend", "regression", "linear", []),
    ]
    assert any("'churn_label'" in n for n in notes)
    answer = model(
        {
            "age": tf.constant([[r["age"]] for r in ROWS], dtype="float32"),
            "plan": tf.constant([[r["plan"]] for r in ROWS]),
        },
        training=False,
    )
    churn = np.asarray(answer["churn"])[:, 0]
    spend = np.asarray(answer["spend"])[:, 0]
    labels = [["stay", "leave"][int(p >= 0.5)] for p in churn]

    with serve(models_dir) as client:
        native = client.post("/models/two/predict", json={"instances": ROWS}).json()
        first = native["predictions"][0]
        assert set(first) == {"churn", "spend", "unknown_categories", "out_of_range", "canonical"}
        got = [p["churn"]["probabilities"]["leave"] for p in native["predictions"]]
        np.testing.assert_allclose(got, churn, atol=1e-5, rtol=0)
        assert [p["churn"]["label"] for p in native["predictions"]] == labels
        np.testing.assert_allclose(
            [p["spend"]["prediction"] for p in native["predictions"]], spend, atol=1e-5, rtol=0
        )

        v2 = client.post("/v2/models/two/infer", json=v2_body(ROWS)).json()
        outputs = {o["name"]: o for o in v2["outputs"]}
        assert list(outputs) == ["churn", "churn_label", "spend"]
        assert outputs["churn"]["shape"] == [4, 2] and outputs["spend"]["shape"] == [4]
        assert json.loads(outputs["churn"]["parameters"]["classes"]) == ["stay", "leave"]
        probabilities = np.asarray(outputs["churn"]["data"]).reshape(-1, 2)[:, 1]
        np.testing.assert_allclose(probabilities, churn, atol=1e-5, rtol=0)
        np.testing.assert_allclose(outputs["spend"]["data"], spend, atol=1e-5, rtol=0)
        assert outputs["churn_label"]["data"] == labels
        only = client.post(
            "/v2/models/two/infer", json={**v2_body(ROWS), "outputs": [{"name": "spend"}]}
        ).json()
        assert [o["name"] for o in only["outputs"]] == ["spend"]
        wrong = client.post(
            "/v2/models/two/infer", json={**v2_body(ROWS), "outputs": [{"name": "label"}]}
        )
        assert wrong.status_code == 400 and "churn_label" in wrong.json()["error"]
        metadata = client.get("/v2/models/two").json()
        assert [o["name"] for o in metadata["outputs"]] == ["churn", "churn_label", "spend"]
        assert "parameters" in metadata["outputs"][0]

        tfs = client.post("/v1/models/two:predict", json={"instances": ROWS}).json()
        assert set(tfs["predictions"][0]) == {"churn", "churn_label", "spend"}
        np.testing.assert_allclose(
            [p["spend"] for p in tfs["predictions"]], spend, atol=1e-5, rtol=0
        )
        signature = client.get("/v1/models/two/metadata").json()["metadata"]["signature_def"]
        outputs_def = signature["signature_def"]["serving_default"]["outputs"]
        assert list(outputs_def) == ["churn", "churn_label", "spend"]
        explained = client.post("/models/two/predict?explain=true", json=ROWS[0])
        assert explained.status_code == 422 and "single-output" in explained.text
        document = client.get("/openapi.json").json()  # its documented example answers
        shown = document["paths"]["/models/two/predict"]["post"]["responses"]["200"]
        assert "spend" in json.dumps(shown)

    # gRPC, through a running service: the same named tensors
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import deserialize_bytes_tensor

    from tests.live_server import grpc_address, service_process

    with (
        service_process(models_dir) as service,
        grpc.insecure_channel(grpc_address(service.url)) as channel,
    ):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="two")
        age = request.inputs.add(name="age", datatype="FP32", shape=[len(ROWS)])
        age.contents.fp32_contents.extend(r["age"] for r in ROWS)
        plan = request.inputs.add(name="plan", datatype="BYTES", shape=[len(ROWS)])
        plan.contents.bytes_contents.extend(r["plan"].encode() for r in ROWS)
        reply = stub.ModelInfer(request, timeout=60)
        names = [o.name for o in reply.outputs]
        assert names == ["churn", "churn_label", "spend"]
        raw = dict(zip(names, reply.raw_output_contents, strict=True))  # raw by default
        classes = reply.outputs[0].parameters["classes"].string_param
        assert json.loads(classes) == ["stay", "leave"]
        got = np.frombuffer(raw["churn"], dtype=np.float32).reshape(-1, 2)[:, 1]
        np.testing.assert_allclose(got, churn, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.frombuffer(raw["spend"], np.float32), spend, atol=1e-5)
        decoded = deserialize_bytes_tensor(raw["churn_label"])
        assert [b.decode() for b in decoded] == labels


def test_a_plain_two_output_network_with_a_description(models_dir: Path, tmp_path: Path) -> None:
    x = keras.Input(shape=(2,), name="x")
    h = keras.layers.Dense(4, activation="relu")(x)
    kind = keras.layers.Dense(3, activation="softmax", name="kind")(h)
    size = keras.layers.Dense(1, name="size")(h)
    model = keras.Model(x, [kind, size])  # a list: the outputs are named by their layers
    model.save(tmp_path / "plain2.keras")
    description = tmp_path / "plain2.json"
    description.write_text(
        json.dumps(
            {
                "inputs": [
                    {"name": "a", "type": "number", "mean": 1.0, "std": 2.0},
                    {"name": "b", "type": "number", "scale": "none"},
                ],
                "outputs": {"kind": {"classes": ["x", "y", "z"]}},
            }
        )
    )
    card, _, _ = import_model(tmp_path / "plain2.keras", "plain2", models_dir, None, description)
    assert [h.name for h in card.heads or []] == ["kind", "size"]
    row = {"a": 3.0, "b": -1.0}
    kind_p, size_v = model(np.asarray([[(3.0 - 1.0) / 2.0, -1.0]], dtype="float32"))
    with serve(models_dir) as client:
        answer = client.post("/models/plain2/predict", json=row).json()["predictions"][0]
    got = [answer["kind"]["probabilities"][c] for c in ("x", "y", "z")]
    np.testing.assert_allclose(got, np.asarray(kind_p)[0], atol=1e-5, rtol=0)
    assert answer["size"]["prediction"] == pytest.approx(float(np.asarray(size_v)[0, 0]), abs=1e-5)

    description.write_text(json.dumps({**json.loads(description.read_text()), "outputs": {}}))
    clash = keras.Model(x, {"label": kind, "size": size})
    clash.save(tmp_path / "clash.keras")
    with pytest.raises(ImportProblem, match=r"'label'.*taken"):
        import_model(tmp_path / "clash.keras", "clash", models_dir, None, description)
