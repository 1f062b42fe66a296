"""Model insight: explanations, drift, calibration and thresholds, feedback and live accuracy.

The explanation properties are checked on every committed tabular version against
an independent brute force (raw records mixed field by field, encoded by the
pipeline, Shapley values by the textbook subset formula). Drift and live accuracy
on real data use the ``data_dir`` fixture.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.encoding import TabularPipeline
from app.insight.calibration import apply_temperature, fit_temperature, nll
from app.insight.drift import PSI_WATCH, DriftWindow, psi
from app.insight.explain import TabularExplainer, shapley_from_values
from app.insight.feedback import roc_auc
from app.insight.layout import SMALL_BATCH, Layout
from app.insight.reference import REFERENCE_FILE, read_reference
from app.main import create_app
from app.serving.errors import InvalidInput
from app.serving.inference import Rows
from app.serving.model import ServedModel
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import card, committed, folder, synthetic_rows
from tests.repository_copies import copy_version

TABULAR = [(n, v) for n, v in committed() if n != "digits"]
BINARY = [
    (n, v)
    for n, v in TABULAR
    if len(json.loads((folder(n, v) / "model_card.json").read_text())["classes"]) == 2
]


def real_split(data_dir: Path, name: str, version: int) -> Any:
    from training.recipes import RECIPES

    recipe = next(r for r in RECIPES[name] if r.version == version)
    return recipe.load(data_dir, card(name, version).seed)


def load(name: str, version: int) -> ServedModel:
    return ServedModel.load(folder(name, version), "onnx")


def app_client(tmp_path: Path, models_dir: Path = MODELS_DIR, **settings: Any) -> TestClient:
    config = Settings(
        models_dir=models_dir,
        runtime="onnx",
        watch_interval_s=0,
        database_url=f"sqlite:///{tmp_path / 'predictions.db'}",
        access_log=False,
        **{"feedback": True, **settings},  # live accuracy is opt-in (FEEDBACK=true)
    )
    return TestClient(create_app(config))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with app_client(tmp_path_factory.mktemp("insight"), drift_window=2000) as c:
        yield c


# ----------------------------------------------------------------- explanations
def brute_force(
    model: ServedModel,
    row: dict[str, Any],
    background: list[dict[str, Any]],
    weights: list[float],
    target: int,
) -> dict[str, float]:
    """Shapley values by the subset formula over *raw* records, every field a player."""
    names = [f.name for f in model.card.inputs]
    m = len(names)
    subsets = list(itertools.product([False, True], repeat=m))
    records = [
        {n: (row[n] if take else b.get(n)) for n, take in zip(names, subset, strict=True)}
        for b in background
        for subset in subsets
    ]
    assert isinstance(model.pipeline, TabularPipeline)
    p = model.predict(model.pipeline.encode_rows(records).matrix)[:, target].astype(np.float64)
    v = np.asarray(weights) @ p.reshape(len(background), len(subsets))
    value = {s: v[i] for i, s in enumerate(subsets)}
    phi = {}
    for j, name in enumerate(names):
        total = 0.0
        for s in subsets:
            if s[j]:
                continue
            size = sum(s)
            with_j = tuple(True if k == j else t for k, t in enumerate(s))
            w = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            total += w * (value[with_j] - value[s])
        phi[name] = total
    return phi


@pytest.mark.parametrize(("name", "version"), TABULAR)
def test_shapley_efficiency_and_agreement_with_brute_force(name: str, version: int) -> None:
    model = load(name, version)
    explainer = model.insight.tabular
    assert explainer is not None
    reference = read_reference(folder(name, version))
    assert reference is not None
    rows = [*synthetic_rows(model.card, 6, seed=3), model.card.example]
    assert isinstance(model.pipeline, TabularPipeline)
    x = model.pipeline.encode_rows(rows).matrix
    probabilities = model.predict(x)
    for i, row in enumerate(rows):
        target = int(probabilities[i].argmax())
        plan = explainer.plan(x[i])
        e = explainer.combine(plan, model.predict(plan.rows), target)
        assert list(e.attributions) == [f.name for f in model.card.inputs]
        # efficiency: attributions add up to the prediction minus the background expectation
        assert abs(sum(e.attributions.values()) - (e.value - e.base)) < 1e-5
        assert abs(e.value - probabilities[i, target]) < 1e-6
        background = model.pipeline.encode_rows(reference["background"]["rows"]).matrix
        expected_base = float(explainer.weights @ model.predict(background)[:, target])
        assert abs(e.base - expected_base) < 1e-6
    # agreement with the brute force on small cases: the 4-field models on every row,
    # income on one row against a two-prototype background (2^14 x 2 raw records)
    small = len(model.card.inputs) <= 6
    background_rows = reference["background"]["rows"][: None if small else 2]
    weights = reference["background"]["weights"][: len(background_rows)]
    tiny = TabularExplainer(
        explainer.layout, model.pipeline.encode_rows(background_rows).matrix, np.asarray(weights)
    )
    for i, row in enumerate(rows if small else rows[-1:]):
        i = i if small else len(rows) - 1
        target = int(probabilities[i].argmax())
        plan = tiny.plan(x[i])
        fast = tiny.combine(plan, model.predict(plan.rows), target).attributions
        slow = brute_force(model, row, background_rows, weights, target)
        for field in slow:
            assert fast[field] == pytest.approx(slow[field] / sum(weights), abs=1e-5), field


def test_shapley_dummy_fields_get_zero() -> None:
    model = load("income", 1)
    explainer = model.insight.tabular
    assert explainer is not None and isinstance(model.pipeline, TabularPipeline)
    for row in synthetic_rows(model.card, 5, seed=7):
        x = model.pipeline.encode_rows([row]).matrix[0]
        plan = explainer.plan(x)
        e = explainer.combine(plan, model.predict(plan.rows), 1)
        assert e.attributions["fnlwgt"] == 0.0  # accepted, never fed to the network
    # a field equal in the instance and in every background row is a dummy too
    reference = read_reference(folder("income", 1))
    assert reference is not None
    background = reference["background"]["rows"]
    shared = {k: background[0][k] for k in background[0] if len({b[k] for b in background}) == 1}
    shared.pop("fnlwgt", None)
    assert shared, "no field is the same in every prototype"
    row = dict(model.card.example, **shared)
    x = model.pipeline.encode_rows([row]).matrix[0]
    plan = explainer.plan(x)
    e = explainer.combine(plan, model.predict(plan.rows), 1)
    assert all(e.attributions[k] == 0.0 for k in shared), shared
    assert any(e.attributions[k] != 0.0 for k in row if k not in shared)


def test_shapley_from_values_matches_a_known_game() -> None:
    # v(S) = 3*[0 in S] + 2*[1 in S] + 4*[0 in S and 1 in S]: phi = (5, 4), player 2 dummy
    v = np.array([3 * (s & 1 > 0) + 2 * (s & 2 > 0) + 4 * (s & 3 == 3) for s in range(8)], float)
    np.testing.assert_allclose(shapley_from_values(v, 3), [5.0, 4.0, 0.0])


def test_explain_routes_and_parameters(client: TestClient) -> None:
    example = client.get("/models/income").json()["card"]["example"]
    answer = client.post("/models/income/versions/1/explain", json=example)
    assert answer.status_code == 200
    explanation = answer.json()["predictions"][0]["explanation"]
    assert explanation["method"] == "shapley"
    assert set(explanation["attributions"]) == set(example)
    total = sum(explanation["attributions"].values())
    assert total == pytest.approx(explanation["value"] - explanation["base"], abs=1e-5)
    # the same through predict: in the body beside instances, or as a query parameter
    body = client.post("/models/income/predict", json={"instances": [example], "explain": True})
    assert body.json()["predictions"][0]["explanation"] == explanation
    query = client.post("/models/income/predict?explain=true", json=example)
    assert query.json()["predictions"][0]["explanation"] == explanation
    plain = client.post("/models/income/predict", json=example).json()["predictions"][0]
    assert "explanation" not in plain
    # OIP v2: the parameter explain; explanations come back in the response parameters
    inputs = [
        {
            "name": k,
            "shape": [1],
            "datatype": "BYTES" if isinstance(v, str) else "INT64",
            "data": [v],
        }
        for k, v in example.items()
    ]
    v2 = client.post(
        "/v2/models/income/infer", json={"inputs": inputs, "parameters": {"explain": True}}
    )
    assert v2.status_code == 200
    assert v2.json()["parameters"]["explanations"][0]["attributions"] == pytest.approx(
        explanation["attributions"]
    )


def test_explain_refusals_are_4xx(client: TestClient) -> None:
    example = client.get("/models/income").json()["card"]["example"]
    bad = client.post("/models/income/predict", json={"instances": [example], "explain": "yes"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "parameters.explain"
    many = client.post("/models/income/explain", json={"instances": [example] * 17})
    assert many.status_code == 422 and "at most 16" in many.json()["error"]
    v2 = client.post(
        "/v2/models/iris/infer",
        json={
            "inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP32", "data": [5]}],
            "parameters": {"explain": 1},
        },
    )
    assert v2.status_code == 400
    assert v2.json()["error"].startswith("parameters.explain: must be true or false")


def test_digits_occlusion_saliency(client: TestClient) -> None:
    image = np.zeros((28, 28), dtype=int)
    image[4:24, 13:16] = 255  # a one
    answer = client.post("/models/digits/explain", json={"image": image.tolist()})
    assert answer.status_code == 200
    explanation = answer.json()["predictions"][0]["explanation"]
    saliency = np.asarray(explanation["saliency"])
    assert explanation["method"] == "occlusion" and saliency.shape == (28, 28)
    # hiding the stroke matters; hiding the empty corners changes nothing
    assert saliency[4:24, 12:17].max() > 1e-3
    assert abs(saliency[:, :8]).max() == 0.0 and abs(saliency[:, 21:]).max() == 0.0
    assert explanation["value"] == max(answer.json()["predictions"][0]["probabilities"].values())


# ------------------------------------------------------------ calibration, threshold
@pytest.mark.parametrize(("name", "version"), committed())
def test_calibration_is_served_and_never_worse_on_validation_nll(
    client: TestClient, name: str, version: int
) -> None:
    reference = read_reference(folder(name, version))
    assert reference is not None
    calibration = reference["calibration"]
    assert calibration["nll_calibrated"] <= calibration["nll"]
    answer = client.get(f"/models/{name}/versions/{version}/calibration")
    assert answer.status_code == 200 and answer.json()["calibration"]["ece"] >= 0
    png = client.get(f"/models/{name}/versions/{version}/calibration.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_temperature_scaling() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, 3)) * 3
    labels = np.array([rng.choice(3, p=np.exp(z / 3) / np.exp(z / 3).sum()) for z in logits])
    overconfident = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = fit_temperature(overconfident, labels)
    assert 2.5 < t < 3.6  # the data were made with T = 3
    assert nll(apply_temperature(overconfident, t), labels) < nll(overconfident, labels)
    assert (apply_temperature(overconfident, t).argmax(1) == overconfident.argmax(1)).all()


@pytest.mark.parametrize(("name", "version"), BINARY)
def test_threshold_changes_the_label(client: TestClient, name: str, version: int) -> None:
    example = client.get(f"/models/{name}").json()["card"]["example"]
    url = f"/models/{name}/versions/{version}/predict"
    prediction = client.post(url, json=example).json()["predictions"][0]
    classes = list(prediction["probabilities"])
    p = prediction["probabilities"][classes[1]]
    above = client.post(f"{url}?threshold={min(1.0, p + 0.01)}", json=example).json()
    below = client.post(url, json={"instances": [example], "threshold": max(0.0, p - 0.01)}).json()
    assert above["predictions"][0]["label"] == classes[0]
    assert below["predictions"][0]["label"] == classes[1]
    threshold = client.get(f"/models/{name}/versions/{version}/calibration").json()["threshold"]
    assert threshold["default"] == 0.5 and 0 < threshold["max_f1"]["threshold"] < 1
    for bad in (1.5, "high", True):
        refused = client.post(url, json={"instances": [example], "threshold": bad})
        assert refused.status_code == 422, bad
        assert refused.json()["detail"][0]["field"] == "parameters.threshold"


def test_threshold_on_a_multiclass_model_is_refused(client: TestClient) -> None:
    example = client.get("/models/iris").json()["card"]["example"]
    refused = client.post("/models/iris/predict?threshold=0.3", json=example)
    assert refused.status_code == 422 and "binary" in refused.json()["error"]


# ------------------------------------------------------------------------ drift
def test_out_of_range_is_listed_per_prediction(client: TestClient) -> None:
    example = client.get("/models/income").json()["card"]["example"]
    inside = client.post("/models/income/predict", json=example).json()["predictions"][0]
    assert inside["out_of_range"] == []
    fields = {f["name"]: f for f in client.get("/models/income").json()["inputs"]}
    edge = dict(
        example, age=fields["age"]["seen_max"], hours_per_week=fields["hours_per_week"]["seen_min"]
    )
    old = dict(example, age=fields["age"]["seen_max"] + 1, hours_per_week=0)
    answer = client.post("/models/income/predict", json={"instances": [edge, old]}).json()
    assert [p["out_of_range"] for p in answer["predictions"]] == [[], ["age", "hours_per_week"]]


def test_out_of_range_is_the_same_for_a_few_rows_and_for_a_batch() -> None:
    """A few rows are checked in plain Python, a batch with numpy: the same answer."""
    model = load("income", 1)
    layout = model.insight.layout
    assert layout is not None
    example = model.card.example
    rows = [
        dict(example, age=age, hours_per_week=hours, capital_gain=gain)
        for age, hours, gain in itertools.product((0, 40, 120), (0, 40, 99), (0, 10**6))
    ]
    x = model.encode(Rows(rows)).matrix
    assert len(x) > SMALL_BATCH
    batch = layout.out_of_range(x)
    one_by_one = [layout.out_of_range(x[i : i + 1])[0] for i in range(len(x))]
    assert batch == one_by_one
    flagged = [set(fields) for fields in batch]
    assert set() in flagged and {"age", "hours_per_week", "capital_gain"} in flagged


def test_psi_and_window() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    assert psi(np.array([0.9, 0.1]), np.array([0.5, 0.5])) > 0.25
    window = DriftWindow(5)
    for i in range(4):
        window.observe(np.full((2, 1), i, dtype=np.float32), [[], []])
    x, unknown = window.snapshot()
    assert x is not None and x[:, 0].tolist() == [1, 2, 2, 3, 3] and len(unknown) == 5


def rows_of(data: Any) -> list[dict[str, Any]]:
    columns = data.columns()
    return [{k: columns[k][i] for k in columns} for i in range(len(data))]


def stream(client: TestClient, url: str, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 200):
        answer = client.post(url, json={"instances": rows[start : start + 200]})
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("name", "version"), TABULAR)
def test_test_split_shows_no_drift(data_dir: Path, tmp_path: Path, name: str, version: int) -> None:
    rows = rows_of(real_split(data_dir, name, version).test)[:2000]
    with app_client(tmp_path, drift_window=2000) as c:
        stream(c, f"/models/{name}/versions/{version}/predict", rows)
        report = c.get(f"/models/{name}/versions/{version}/drift").json()
    assert report["rows"] == len(rows)
    assert report["flagged"] == [], {k: v["psi"] for k, v in report["fields"].items()}
    if len(rows) >= report["min_rows"]:  # iris' test split is 30 rows: too few to judge
        assert all(entry["psi"] < PSI_WATCH for entry in report["fields"].values())
    else:
        assert {e["status"] for e in report["fields"].values()} == {"too_few_rows"}


def test_shifted_stream_flags_exactly_the_shifted_fields(data_dir: Path, tmp_path: Path) -> None:
    rows = rows_of(real_split(data_dir, "income", 1).test)[:1000]
    shifted = [dict(r, age=81 + i % 9, workclass="State-gov") for i, r in enumerate(rows)]
    with app_client(tmp_path, drift_window=1000) as c:
        stream(c, "/models/income/versions/1/predict", shifted)
        report = c.get("/models/income/versions/1/drift").json()
        metrics = c.get("/metrics").text
    assert sorted(report["flagged"]) == ["age", "workclass"]
    assert report["fields"]["age"]["status"] == "drift"
    assert 'keras_serve_drift_psi{field="age",model="income",version="1"}' in metrics


# ------------------------------------------------------------ feedback, accuracy
def test_feedback_gives_back_the_cards_test_accuracy(data_dir: Path, tmp_path: Path) -> None:
    test = real_split(data_dir, "income", 1).test
    n = 3000
    rows = rows_of(test)[:n]
    truth = [["<=50K", ">50K"][y] for y in test.labels[:n]]
    with app_client(tmp_path) as c:
        feedback = []
        for start in range(0, n, 250):
            answer = c.post("/models/income/predict", json={"instances": rows[start : start + 250]})
            rid = answer.headers["x-request-id"]
            feedback += [
                {"id": rid, "index": i, "label": truth[start + i]}
                for i in range(len(answer.json()["predictions"]))
            ]
        accepted = c.post("/feedback", json={"feedback": feedback})
        assert accepted.status_code == 200 and accepted.json() == {"accepted": n}
        found = c.get("/models/income/versions/1/performance").json()
        metrics = c.get("/metrics").text
    card, live = found["card_test"], found["live"]
    assert found["labelled"] == n
    error = math.sqrt(card["accuracy"] * (1 - card["accuracy"]) / n)
    assert abs(live["accuracy"] - card["accuracy"]) < 4 * error
    assert abs(live["roc_auc"] - card["roc_auc"]) < 0.03
    assert 'keras_serve_labelled_predictions{model="income",version="1"} 3000.0' in metrics


def test_feedback_refusals(client: TestClient) -> None:
    example = client.get("/models/iris").json()["card"]["example"]
    rid = client.post("/models/iris/predict", json=example).headers["x-request-id"]
    unknown = client.post("/feedback", json={"id": "never-seen", "label": "setosa"})
    assert unknown.status_code == 404 and "never-seen" in unknown.json()["error"]
    wrong = client.post("/feedback", json={"id": rid, "label": "rose"})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["field"] == "label"
    index = client.post("/feedback", json={"id": rid, "label": "setosa", "index": 3})
    assert index.status_code == 404
    shape = client.post("/feedback", json={"feedback": [{"id": 5, "label": None, "x": 1}]})
    assert shape.status_code == 422
    assert {d["field"] for d in shape.json()["detail"]} == {
        "feedback[0].x",
        "feedback[0].id",
        "feedback[0].label",
    }
    ok = client.post("/feedback", json={"id": rid, "label": "setosa"})
    assert ok.status_code == 200


def test_roc_auc_matches_the_definition() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 300).astype(float)
    positive = rng.random(300) < 0.4
    pairs = [(s, t) for s in scores[positive] for t in scores[~positive]]
    expected = np.mean([1.0 if s > t else 0.5 if s == t else 0.0 for s, t in pairs])
    assert roc_auc(scores, positive) == pytest.approx(expected)


# ---------------------------------------------------------- a model added later
def test_a_model_added_at_run_time_gets_insight(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with app_client(tmp_path, models_dir=models) as c:
        target = copy_version(models, ("income", 1), "census", 3)
        (target / REFERENCE_FILE).write_text((folder("income", 1) / REFERENCE_FILE).read_text())
        c.app.state.dataplane.repository.load_all()
        example = c.get("/models/census").json()["card"]["example"]
        answer = c.post("/models/census/versions/3/explain", json=example)
        assert answer.status_code == 200
        attributions = answer.json()["predictions"][0]["explanation"]["attributions"]
        assert attributions["fnlwgt"] == 0.0
        assert c.get("/models/census/versions/3/drift").json()["rows"] == 1
        assert c.get("/models/census/versions/3/calibration").status_code == 200
        # without reference.json: explanations against the card's example, no drift
        copy_version(models, ("salary", 1), "pay", 1)
        c.app.state.dataplane.repository.load_all()
        pay = c.get("/models/pay").json()["card"]["example"]
        explained = c.post("/models/pay/explain", json=pay)
        assert explained.status_code == 200
        assert c.get("/models/pay/versions/1/drift").status_code == 404


def test_layout_reads_back_what_the_pipeline_encoded() -> None:
    model = load("income", 1)
    assert isinstance(model.pipeline, TabularPipeline)
    layout = Layout.of(model.pipeline)
    rows = synthetic_rows(model.card, 50, seed=5)
    x = model.pipeline.encode_rows(rows).matrix
    for block in layout.active:
        if block.kind == "numeric":
            values, missing = layout.numbers(block, x)
            raw = block.to_raw(values)
            for r, v, m in zip(rows, raw, missing, strict=True):
                if not m:
                    assert v == pytest.approx(float(r[block.name]), rel=1e-4, abs=1e-3)
        else:
            for r, label in zip(rows, layout.categories(block, x), strict=True):
                given = r[block.name]
                if given is None or given == "?":
                    assert label == "(missing)"
                elif given in block.levels:
                    assert label == given


def test_the_store_keeps_predictions_by_age_and_count(tmp_path: Path) -> None:
    import time

    from app.insight.feedback import FeedbackStore, Label, Record

    store = FeedbackStore(f"sqlite:///{tmp_path / 'p.db'}", max_age_s=3600, max_rows=5)
    now = time.time()
    store.record(Record("old", "m", 1, ["a"], None, now - 7200))
    for i in range(7):
        store.record(Record(f"r{i}", "m", 1, ["a", "b"], None, now))
    store.flush()
    store.retain()
    with pytest.raises(InvalidInput):
        store.label([Label("old", 0, "a")], lambda *_: ["a", "b"])  # past its age
    with pytest.raises(InvalidInput):
        store.label([Label("r3", 1, "b")], lambda *_: ["a", "b"])  # past the count
    assert store.label([Label("r6", 1, "b")], lambda *_: ["a", "b"]) == 1
    assert store.performance("m", 1, 10) == {
        "labelled": 1,
        "stored_predictions": 5,
        "accuracy": 1.0,
    }
    store.close()
