"""The native REST API against the committed models: every endpoint, and every class
of bad input answered with a 4xx JSON error that names the field and the problem."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import (
    UNSEEN,
    card,
    committed,
    folder,
    latest,
    onnx_probabilities,
    served_probabilities,
    synthetic_rows,
)

VERSIONS = committed()
LATEST = latest()
NAMES = sorted(LATEST)
TABULAR = [n for n in NAMES if card(n, LATEST[n]).inputs[0].type != "image"]
IMAGE_MODELS = [n for n in NAMES if n not in TABULAR]


def example(name: str) -> dict[str, Any]:
    return dict(card(name, LATEST[name]).example)


def post_raw(client: TestClient, url: str, text: str | bytes) -> Any:
    return client.post(url, content=text, headers={"content-type": "application/json"})


def assert_error(response: Any, status: int, field: str, *words: str) -> dict[str, Any]:
    """A JSON error with the status, naming ``field`` and saying each of ``words``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str)
    assert field in body["error"], body
    if "detail" in body:
        assert any(d["field"] == field for d in body["detail"]), body
    for word in words:
        assert word.lower() in body["error"].lower(), body
    return body


def assert_predictions_match(response: Any, name: str, version: int, rows: list[Any]) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    model = card(name, version)
    assert (body["model"], body["version"]) == (name, version)
    assert len(body["predictions"]) == len(rows)
    served = served_probabilities(body, model.classes)
    for prediction, probabilities in zip(body["predictions"], served, strict=True):
        assert set(prediction["probabilities"]) == set(model.classes)
        assert prediction["label"] == model.classes[int(probabilities.argmax())]
    assert served.sum(axis=1) == pytest.approx(np.ones(len(rows)), abs=1e-5)
    np.testing.assert_allclose(served, onnx_probabilities(name, version, rows), atol=1e-5)


def digit_png(fmt: str = "PNG") -> bytes:
    """A dark "1" on light paper, off-centre in a 200x160 canvas."""
    image = Image.new("L", (200, 160), 235)
    ImageDraw.Draw(image).line([(140, 30), (140, 130)], fill=20, width=10)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_client() -> Iterator[TestClient]:
    """A second app with small limits, to reach the caps with small requests."""
    settings = Settings(
        models_dir=MODELS_DIR,
        runtime="onnx",
        max_instances=3,
        max_body_bytes=4096,  # an image of 1-4 KiB passes this, not the image limit
        max_image_bytes=1024,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


# ------------------------------------------------------------------ health & metadata
def test_liveness(client: TestClient) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readiness_lists_every_version_as_available(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    states = {(m["name"], m["version"]): m["status"] for m in body["models"]}
    assert states == dict.fromkeys(VERSIONS, "AVAILABLE")


def test_models_lists_each_model_with_its_default_version(client: TestClient) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    listed = {m["name"]: m for m in response.json()}
    assert sorted(listed) == NAMES
    for name, summary in listed.items():
        assert summary["default_version"] == LATEST[name]
        versions = [v["version"] for v in summary["versions"]]
        assert versions == sorted(v for n, v in VERSIONS if n == name)
        assert {v["runtime"] for v in summary["versions"]} == {"onnx"}


@pytest.mark.parametrize("name", NAMES)
def test_model_metadata_describes_the_latest_version(client: TestClient, name: str) -> None:
    response = client.get(f"/models/{name}")
    assert response.status_code == 200
    body = response.json()
    model = card(name, LATEST[name])
    assert body["version"] == LATEST[name]
    assert body["classes"] == model.classes
    assert [f["name"] for f in body["inputs"]] == [f.name for f in model.inputs]
    assert body["metrics"]["test"]["accuracy"] == model.metrics["test"].accuracy
    assert all(v["status"] == "AVAILABLE" for v in body["versions"])


@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_version_metadata_and_history_plot(client: TestClient, name: str, version: int) -> None:
    body = client.get(f"/models/{name}/versions/{version}").json()
    assert body["version"] == version
    assert body["card"]["version"] == version
    assert body["title"] == card(name, version).title

    plot = client.get(f"/models/{name}/versions/{version}/history.png")
    assert plot.status_code == 200
    assert plot.headers["content-type"] == "image/png"
    assert plot.content == (folder(name, version) / "history.png").read_bytes()


# ------------------------------------------------------------------------- predict
@pytest.mark.parametrize("name", NAMES)
def test_predict_one_instance_with_the_default_version(client: TestClient, name: str) -> None:
    row = example(name)
    response = client.post(f"/models/{name}/predict", json=row)
    assert_predictions_match(response, name, LATEST[name], [row])


@pytest.mark.parametrize(("name", "version"), VERSIONS)
def test_predict_a_list_with_a_pinned_version(client: TestClient, name: str, version: int) -> None:
    rows = synthetic_rows(card(name, version), 5, seed=version)
    response = client.post(f"/models/{name}/versions/{version}/predict", json={"instances": rows})
    assert_predictions_match(response, name, version, rows)

    one = client.post(f"/models/{name}/versions/{version}/predict", json=rows[0])
    assert_predictions_match(one, name, version, rows[:1])


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_flat_and_square_pixels_give_the_same_answer(client: TestClient, name: str) -> None:
    square = synthetic_rows(card(name, LATEST[name]), 1, seed=3)[0]["image"]
    flat = [v for row in square for v in row]
    a = client.post(f"/models/{name}/predict", json={"image": square})
    b = client.post(f"/models/{name}/predict", json={"image": flat})
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()


@pytest.mark.parametrize(("name", "version"), [v for v in VERSIONS if v[0] in IMAGE_MODELS])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_upload(client: TestClient, name: str, version: int, fmt: str) -> None:
    files = {"file": (f"digit.{fmt.lower()}", digit_png(fmt), f"image/{fmt.lower()}")}
    pinned = client.post(f"/models/{name}/versions/{version}/predict/image", files=files)
    assert pinned.status_code == 200, pinned.text
    assert (pinned.json()["model"], pinned.json()["version"]) == (name, version)
    assert pinned.json()["predictions"][0]["label"] == "1"
    default = client.post(f"/models/{name}/predict/image", files=files)
    assert default.status_code == 200
    assert default.json()["version"] == LATEST[name]


# ------------------------------------------------------------------------ docs
@pytest.mark.parametrize("name", NAMES)
def test_openapi_carries_each_request_schema_with_examples(client: TestClient, name: str) -> None:
    document = client.get("/openapi.json").json()
    model = card(name, LATEST[name])
    schemas = document["components"]["schemas"]
    prefix = name.capitalize()
    instance, batch = schemas[f"{prefix}Instance"], schemas[f"{prefix}Batch"]
    assert instance["examples"] == [model.example]
    assert batch["examples"] == [{"instances": [model.example]}]
    assert set(instance["properties"]) == {f.name for f in model.inputs}
    assert instance["additionalProperties"] is False

    body = document["paths"][f"/models/{name}/predict"]["post"]["requestBody"]
    content = body["content"]["application/json"]
    refs = {s["$ref"] for s in content["schema"]["anyOf"]}
    assert refs == {f"#/components/schemas/{prefix}Instance", f"#/components/schemas/{prefix}Batch"}
    assert content["examples"]["one"]["value"] == model.example
    pinned = document["paths"][f"/models/{name}/versions/{{version}}/predict"]["post"]
    assert pinned["requestBody"] == body

    for field in model.inputs:
        prop = instance["properties"][field.name]
        text = json.dumps(prop)
        if field.type in ("number", "integer"):
            assert prop["type"] == field.type
            assert (prop["minimum"], prop["maximum"]) == (field.minimum, field.maximum)
        if field.type == "ordinal":
            assert prop["enum"] == field.allowed
        if field.type == "category":
            assert all(value in text for value in field.allowed or [])


def test_docs_page_uses_local_assets_that_load(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert "cdn" not in html.lower()
    assert "http://" not in html and "https://" not in html
    for asset, kind in [
        ("/docs-assets/swagger-ui-bundle.js", "javascript"),
        ("/docs-assets/swagger-ui.css", "css"),
    ]:
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
        assert len(response.content) > 10_000
    assert "/openapi.json" in html


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize("text", ['{"sepal_length": 6.1,', "{'a': 1}", "[1, 2", "\xff", "{}}"])
def test_malformed_json_is_a_400(client: TestClient, text: str) -> None:
    assert_error(post_raw(client, "/models/iris/predict", text.encode()), 400, "body", "JSON")


def test_empty_body_is_a_400(client: TestClient) -> None:
    assert_error(post_raw(client, "/models/iris/predict", b""), 400, "body", "empty")


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("iris", "sepal_length", "six"),
        ("iris", "sepal_length", "6.1"),
        ("iris", "petal_width", [1.2]),
        ("iris", "petal_width", {"cm": 1.2}),
        ("income", "age", True),
        ("income", "age", "45"),
        ("income", "age", 45.5),
        ("income", "workclass", 5),
        ("income", "education", ["Masters"]),
        ("salary", "age", 35),
        ("salary", "gender", None),
        ("digits", "image", "pixels"),
        ("digits", "image", [True] * 784),
        ("digits", "image", [[0] * 28] * 27 + [[0] * 27]),
        ("digits", "image", [[0] * 196] * 4),
    ],
)
def test_wrong_types_name_the_field(client: TestClient, name: str, field: str, value: Any) -> None:
    row = {**example(name), field: value}
    assert_error(client.post(f"/models/{name}/predict", json=row), 422, field)
    batch = {"instances": [example(name), row]}
    assert_error(client.post(f"/models/{name}/predict", json=batch), 422, f"instances[1].{field}")


@pytest.mark.parametrize("body", [[1, 2], "text", 7, None])
def test_a_body_that_is_not_an_object_is_rejected(client: TestClient, body: Any) -> None:
    response = post_raw(client, "/models/iris/predict", json.dumps(body))
    assert_error(response, 422, "body", "object")


def test_instances_must_be_a_list(client: TestClient) -> None:
    body = {"instances": example("iris")}
    assert_error(client.post("/models/iris/predict", json=body), 422, "instances", "list")


@pytest.mark.parametrize(
    ("name", "field"),
    [(n, f.name) for n in NAMES for f in card(n, LATEST[n]).inputs if not f.nullable],
)
def test_missing_required_field(client: TestClient, name: str, field: str) -> None:
    row = example(name)
    del row[field]
    assert_error(client.post(f"/models/{name}/predict", json=row), 422, field, "required")


@pytest.mark.parametrize(
    ("name", "field", "value", "word"),
    [
        (n, f.name, value, word)
        for n in TABULAR
        for f in card(n, LATEST[n]).inputs
        if f.type in ("number", "integer")
        for value, word in [
            ((f.maximum or 0) + 1, "less than or equal"),
            ((f.minimum or 0) - 1, "greater than or equal"),
        ]
    ],
)
def test_out_of_range_numbers(
    client: TestClient, name: str, field: str, value: float, word: str
) -> None:
    row = {**example(name), field: value}
    assert_error(client.post(f"/models/{name}/predict", json=row), 422, field, word)


@pytest.mark.parametrize("value", [256, -1, 1e300])
def test_out_of_range_pixels(client: TestClient, value: float) -> None:
    pixels = [0] * 783 + [value]
    body = client.post("/models/digits/predict", json={"image": pixels})
    assert_error(body, 422, "image", "between 0 and 255")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_are_rejected(client: TestClient, token: str) -> None:
    text = json.dumps({**example("iris"), "sepal_length": "TOKEN"}).replace('"TOKEN"', token)
    assert_error(post_raw(client, "/models/iris/predict", text), 422, "sepal_length", "finite")

    income = json.dumps(example("income")).replace(
        '"hours_per_week": 50', f'"hours_per_week": {token}'
    )
    assert token in income
    assert_error(post_raw(client, "/models/income/predict", income), 422, "hours_per_week")

    pixels = "[" + ", ".join(["0"] * 783 + [token]) + "]"
    image = post_raw(client, "/models/digits/predict", f'{{"image": {pixels}}}')
    assert image.status_code == 422
    assert "image" in image.json()["error"]


@pytest.mark.parametrize("field", ["age", "experience", "education", "gender"])
def test_salary_band_outside_the_order_lists_allowed_values(client: TestClient, field: str) -> None:
    row = {**example("salary"), field: "somewhere in between"}
    body = assert_error(client.post("/models/salary/predict", json=row), 422, field)
    allowed = next(f.allowed for f in card("salary", LATEST["salary"]).inputs if f.name == field)
    assert allowed
    for value in allowed:
        assert value in body["error"]
    assert "somewhere in between" in body["error"]


@pytest.mark.parametrize("field", ["native_country", "education", "occupation"])
def test_unknown_income_category_is_accepted_and_flagged(client: TestClient, field: str) -> None:
    rows = [example("income"), {**example("income"), field: UNSEEN}]
    response = client.post("/models/income/predict", json={"instances": rows})
    assert_predictions_match(response, "income", LATEST["income"], rows)
    flagged = [p["unknown_categories"] for p in response.json()["predictions"]]
    assert flagged == [[], [field]]


@pytest.mark.parametrize("field", ["workclass", "occupation", "native_country"])
def test_income_missing_as_null_or_question_mark(client: TestClient, field: str) -> None:
    rows = [{**example("income"), field: None}, {**example("income"), field: "?"}]
    absent = example("income")
    del absent[field]
    response = client.post("/models/income/predict", json={"instances": [*rows, absent]})
    assert_predictions_match(response, "income", LATEST["income"], [*rows, absent])
    body = response.json()
    assert body["predictions"][0] == body["predictions"][1] == body["predictions"][2]
    assert body["predictions"][0]["unknown_categories"] == []
    known = client.post("/models/income/predict", json=example("income")).json()
    assert known["predictions"][0]["probabilities"] != body["predictions"][0]["probabilities"]


def test_income_missing_is_refused_where_training_never_saw_it(client: TestClient) -> None:
    for value in (None, "?"):
        row = {**example("income"), "education": value}
        assert_error(client.post("/models/income/predict", json=row), 422, "education")


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(client: TestClient, name: str) -> None:
    response = client.post(f"/models/{name}/predict", json={"instances": []})
    assert_error(response, 422, "instances", "at least one")


def test_batch_over_the_cap(small_client: TestClient) -> None:
    rows = synthetic_rows(card("iris", LATEST["iris"]), 4)
    assert (
        small_client.post("/models/iris/predict", json={"instances": rows[:3]}).status_code == 200
    )
    response = small_client.post("/models/iris/predict", json={"instances": rows})
    assert_error(response, 422, "instances", "at most 3")


def test_body_over_the_size_limit(small_client: TestClient, client: TestClient) -> None:
    rows = synthetic_rows(card("iris", LATEST["iris"]), 3)
    padded = json.dumps({"instances": rows}) + " " * 5000
    response = post_raw(small_client, "/models/iris/predict", padded)
    assert_error(response, 413, "body", "limit")
    assert post_raw(client, "/models/iris/predict", padded).status_code == 200

    def chunks() -> Iterator[bytes]:  # no content-length: counted while it streams
        yield json.dumps({"instances": rows}).encode()
        for _ in range(10):
            yield b" " * 1000

    streamed = small_client.post(
        "/models/iris/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(streamed, 413, "body", "limit")
    # the service is unharmed
    assert small_client.post("/models/iris/predict", json=rows[0]).status_code == 200


def test_image_over_the_size_limit(small_client: TestClient) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    assert 1024 < len(buffer.getvalue()) < 3500
    files = {"file": ("noise.png", buffer.getvalue(), "image/png")}
    response = small_client.post("/models/digits/predict/image", files=files)
    assert_error(response, 413, "file", "limit")


@pytest.mark.parametrize(
    ("content", "word"),
    [(b"not an image at all", "decodable"), (b"", "empty"), (digit_png()[:200], "decodable")],
)
def test_undecodable_or_empty_image(client: TestClient, content: bytes, word: str) -> None:
    files = {"file": ("digit.png", content, "image/png")}
    assert_error(client.post("/models/digits/predict/image", files=files), 422, "file", word)


def test_image_upload_without_a_file(client: TestClient) -> None:
    assert_error(client.post("/models/digits/predict/image"), 422, "file", "required")


@pytest.mark.parametrize(
    ("method", "url", "words"),
    [
        ("POST", "/models/nosuch/predict", ("nosuch", "not found")),
        ("POST", "/models/nosuch/versions/1/predict", ("nosuch", "not found")),
        ("POST", "/models/nosuch/predict/image", ("nosuch", "not found")),
        ("POST", "/models/iris/predict/image", ("iris", "image")),
        ("POST", "/models/iris/versions/99/predict", ("version 99", "iris")),
        ("POST", "/models/digits/versions/99/predict/image", ("version 99", "digits")),
        ("GET", "/models/nosuch", ("nosuch", "not found")),
        ("GET", "/models/iris/versions/99", ("version 99", "not found")),
        ("GET", "/models/iris/versions/99/history.png", ("version 99", "not found")),
        ("GET", "/models/nosuch/versions/1/history.png", ("nosuch", "not found")),
    ],
)
def test_unknown_model_or_version_is_a_404(
    client: TestClient, method: str, url: str, words: tuple[str, ...]
) -> None:
    if url.endswith("/image"):
        files = {"file": ("digit.png", digit_png(), "image/png")}
        response = client.post(url, files=files)
    else:
        response = client.request(method, url, json=example("iris") if method == "POST" else None)
    assert response.status_code == 404, response.text
    for word in words:
        assert word in response.json()["error"]


def test_version_must_be_a_positive_integer_or_a_label(client: TestClient) -> None:
    for version in ("0", "Two", "2x"):
        response = client.post(f"/models/iris/versions/{version}/predict", json=example("iris"))
        assert_error(response, 422, "path.version")
    # "two" is a well-formed label that iris does not have: not found, naming the label
    response = client.post("/models/iris/versions/two/predict", json=example("iris"))
    assert response.status_code == 404
    assert "not a label" in response.json()["error"]


def test_extra_unknown_field(client: TestClient) -> None:
    row = {**example("iris"), "colour": "blue"}
    assert_error(client.post("/models/iris/predict", json=row), 422, "colour", "unexpected")
    batch = {"instances": [example("iris"), row]}
    assert_error(client.post("/models/iris/predict", json=batch), 422, "instances[1].colour")
    top = {"instances": [example("iris")], "colour": "blue"}
    assert_error(client.post("/models/iris/predict", json=top), 422, "colour", "unexpected")
    image = {"image": [0] * 784, "label": 3}
    assert_error(client.post("/models/digits/predict", json=image), 422, "label", "unexpected")
    images = {"instances": [{"image": [0] * 784}, image]}
    response = client.post("/models/digits/predict", json=images)
    assert_error(response, 422, "instances[1].label", "unexpected")


# --------------------------------------------------------------- garbage bodies
def garbage(rng: random.Random, depth: int = 0) -> str:
    """Random JSON-ish text: nesting, odd strings, huge and non-finite numbers, nulls."""
    roll = rng.random()
    if depth > 4 or roll < 0.35:
        return rng.choice(
            [
                "null",
                "true",
                "false",
                "NaN",
                "-Infinity",
                "1e999",
                "-0",
                str(rng.randint(-(10**6), 10**6)),
                "9" * rng.randint(20, 400),
                repr(rng.uniform(-1e300, 1e300)),
                repr(rng.uniform(-2, 300)),
                json.dumps("".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 30)))),
                json.dumps(rng.choice(["?", "", "Private", "setosa", "image", "instances"])),
            ]
        )
    if roll < 0.65:
        items = [garbage(rng, depth + 1) for _ in range(rng.randint(0, 5))]
        return "[" + ", ".join(items) + "]"
    keys = ["instances", "image", "age", "sepal_length", "workclass", "education", "x", ""]
    pairs = [
        f"{json.dumps(rng.choice(keys))}: {garbage(rng, depth + 1)}"
        for _ in range(rng.randint(0, 5))
    ]
    return "{" + ", ".join(pairs) + "}"


def mutated(rng: random.Random, name: str) -> str:
    """A valid instance with one field replaced, removed, or wrapped in garbage."""
    row: dict[str, Any] = {k: json.dumps(v) for k, v in example(name).items()}
    key = rng.choice(sorted(row))
    action = rng.random()
    if action < 0.6:
        row[key] = garbage(rng, 2)
    elif action < 0.8:
        del row[key]
    else:
        row[garbage(rng, 4).strip('"')[:20] or "k"] = garbage(rng, 3)
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in row.items()) + "}"
    return text if rng.random() < 0.5 else '{"instances": [' + text + "]}"


def hostile(rng: random.Random, name: str) -> str:
    roll = rng.random()
    if roll < 0.05:
        return "[" * rng.randint(500, 3000) + "]" * rng.randint(0, 3000)
    if roll < 0.1:
        return '{"instances": ' + "[" * rng.randint(50, 1500) + "]" * rng.randint(0, 1500) + "}"
    if roll < 0.15:
        text = mutated(rng, name)
        return text[: rng.randint(0, len(text))]
    if roll < 0.55:
        return mutated(rng, name)
    return garbage(rng)


@pytest.mark.parametrize("name", NAMES)
def test_random_garbage_never_yields_a_5xx(client: TestClient, name: str) -> None:
    rng = random.Random(f"garbage-{name}")
    statuses: dict[int, int] = {}
    for i in range(300):
        url = f"/models/{name}/predict" if i % 2 else f"/models/{name}/versions/1/predict"
        text = hostile(rng, name)
        response = post_raw(client, url, text.encode("utf-8", "surrogatepass"))
        assert response.status_code < 500, (text[:500], response.text)
        assert response.status_code in (200, 400, 422), (text[:500], response.text)
        if response.status_code != 200:
            assert response.json()["error"]
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert statuses.get(400, 0) > 0 and statuses.get(422, 0) > 0, statuses
    # and the service is unharmed
    row = example(name)
    assert_predictions_match(
        client.post(f"/models/{name}/predict", json=row), name, LATEST[name], [row]
    )
