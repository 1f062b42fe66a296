"""The on-disk format is published as JSON Schema, and every committed artifact fits it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.artifacts import CARD_FILE, CONFIG_FILE, PIPELINE_FILE, version_dirs
from app.encoding import load_pipeline

jsonschema = pytest.importorskip("jsonschema")

from tests.conftest import MODELS_DIR  # noqa: E402

VERSIONS = version_dirs(MODELS_DIR)


def served_schema(client: TestClient, name: str) -> dict[str, object]:
    response = client.get(f"/schemas/{name}.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/schema+json")
    schema = response.json()
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def test_the_schemas_are_listed_and_unknown_ones_refused(client: TestClient) -> None:
    listed = client.get("/schemas").json()["schemas"]
    assert listed == [
        "/schemas/model_card.json",
        "/schemas/pipeline.json",
        "/schemas/model_config.json",
    ]
    missing = client.get("/schemas/nope.json")
    assert missing.status_code == 422 and "model_card.json" in missing.text


@pytest.mark.parametrize(("name", "version", "path"), VERSIONS, ids=lambda v: str(v))
def test_every_committed_artifact_fits_the_published_schemas(
    client: TestClient, name: str, version: int, path: Path
) -> None:
    card = json.loads((path / CARD_FILE).read_text())
    jsonschema.validate(card, served_schema(client, "model_card"))
    pipeline = json.loads((path / PIPELINE_FILE).read_text())
    jsonschema.validate(pipeline, served_schema(client, "pipeline"))
    load_pipeline(path / PIPELINE_FILE)  # and the encoder reads what the schema admits


def test_committed_configs_fit_their_schema(client: TestClient) -> None:
    schema = served_schema(client, "model_config")
    for config in MODELS_DIR.glob(f"*/{CONFIG_FILE}"):
        jsonschema.validate(json.loads(config.read_text()), schema)
    jsonschema.validate({"version_policy": {"latest": 2}, "labels": {"stable": 1}}, schema)


@pytest.mark.parametrize(
    ("name", "document", "where"),
    [
        ("model_card", {"name": "x"}, "required"),
        (
            "pipeline",
            {"kind": "tabular", "features": [{"name": "a", "type": "numeric"}]},
            "features",
        ),
        ("pipeline", {"kind": "sound"}, "kind"),
        ("model_config", {"labels": {"stable": "one"}}, "one"),
        ("model_config", {"canary_percent": 150}, "150"),
    ],
)
def test_the_schemas_refuse_what_the_service_refuses(
    client: TestClient, name: str, document: dict[str, object], where: str
) -> None:
    with pytest.raises(jsonschema.ValidationError, match=where):
        jsonschema.validate(document, served_schema(client, name))
