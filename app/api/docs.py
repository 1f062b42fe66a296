"""``/docs`` and ``/openapi.json``: Swagger UI served offline, and a document that
describes the models the repository holds *now*.

FastAPI's default page loads Swagger UI from a CDN; ``fastapi-offline`` ships the same
static files, which are mounted here instead. It must be Swagger UI 5: FastAPI writes
OpenAPI 3.1, which Swagger UI 4 (``swagger-ui-bundle``) refuses to render at all.

The native predict routes are generic (``/models/{name}/predict``), but a reader wants
each model's own fields and examples; so the document carries one operation per model,
built from its default version's card, and is rebuilt whenever the set of serving
versions changes: a model added at run time shows up without a restart.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import generate_latest

from app import __version__
from app.api import schemas as models_of_responses
from app.api.native import UPLOAD_DOC
from app.artifacts import LABEL_PATTERN, STABLE
from app.serving.dataplane import DataPlane
from app.serving.errors import InvalidInput
from app.serving.inference import ImageFile, Rows
from app.serving.model import ServedModel

log = logging.getLogger(__name__)
ASSETS = "/docs-assets"
# every response body the document names, as components (pydantic models in schemas.py)
RESPONSE_MODELS = [
    getattr(models_of_responses, name)
    for name in (
        "PredictResponse",
        "ErrorBody",
        "Liveness",
        "Readiness",
        "InferenceRequest",
        "InferenceResponse",
        "ServerMetadata",
        "ModelMetadataV2",
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ModelStatistics",
        "RepositoryEntry",
        "TFServingPredictRequest",
        "TFServingPredictResponse",
        "TFServingModelStatus",
        "TFServingMetadata",
    )
]


def install(app: FastAPI) -> None:
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    base: dict[str, Any] = {}
    built: dict[str, Any] = {"key": None, "document": None}

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus one operation per model, for the models served now."""
        dataplane: DataPlane | None = getattr(app.state, "dataplane", None)
        models = defaults(dataplane) if dataplane is not None else {}
        key = tuple((name, id(model)) for name, model in models.items())
        if built["key"] == key and built["document"] is not None:
            document: dict[str, Any] = built["document"]
            return document
        if not base:
            base.update(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        document = copy.deepcopy(base)
        shown = {name: real_examples(model) for name, model in models.items()}
        add_model_operations(document, models, shown)
        extensions = list(getattr(app.state, "extensions", []))
        document_generic_routes(document, dataplane, models, shown, extensions)
        settings = app.state.settings
        document_errors(document, bool(settings.api_keys), list(settings.api_key_exempt))
        show_error_examples(document, shown)
        built.update(key=key, document=document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def defaults(dataplane: DataPlane) -> dict[str, ServedModel]:
    """The version each model's documentation describes: its default version."""
    found: dict[str, ServedModel] = {}
    for name in dataplane.repository.names():
        try:
            found[name] = dataplane.repository.get(name)
        except LookupError:
            continue
    return found


def add_model_operations(
    document: dict[str, Any], models: dict[str, ServedModel], examples: dict[str, dict[str, Any]]
) -> None:
    """Per-model predict operations with the model's request schema and examples, and a
    real prediction (the card's example, run through the model) as the answer shown."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    paths = document.setdefault("paths", {})
    for cls in RESPONSE_MODELS:
        schemas.update(_schema(cls, schemas))
    for name, model in models.items():
        schema = model.schema
        for cls in (schema.instance, schema.batch):
            schemas.update(_schema(cls, schemas))
        card = model.card
        shown = examples[name]
        body = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": f"#/components/schemas/{schema.instance.__name__}"},
                            {"$ref": f"#/components/schemas/{schema.batch.__name__}"},
                        ]
                    },
                    "examples": {
                        "one": {"summary": "one instance", "value": card.example},
                        "batch": {
                            "summary": "a list of instances",
                            "value": {"instances": [card.example]},
                        },
                        **(
                            {
                                "misspelt": {
                                    "summary": "a misspelt field: answered 422, naming it",
                                    "value": shown["misspelt"],
                                    "x-status": 422,
                                }
                            }
                            if "misspelt" in shown
                            else {}
                        ),
                    },
                }
            },
        }
        doc = (
            f"{card.title}: {card.description} The schema shown is version {model.version}'s; "
            "a request pinned to another version is checked against that version's own."
        )
        answer = _json_response(
            "One prediction per instance (shown: the card's example, as the model answers it)",
            "PredictResponse",
            shown.get("native"),
        )
        paths[f"/models/{name}/predict"] = {
            "post": _operation(
                f"Predict with {name} (default version)", doc, f"predict_{name}", body, answer
            )
        }
        paths[f"/models/{name}/versions/{{version}}/predict"] = {
            "post": _operation(
                f"Predict with a pinned {name} version",
                doc,
                f"predict_{name}_version",
                body,
                answer,
                pinned=model.version,
            )
        }
        if not model.signature.is_image:
            continue
        upload = {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {
                                "type": "string",
                                "format": "binary",
                                "description": "PNG or JPEG",
                            }
                        },
                    }
                }
            },
        }
        image_answer = _json_response(
            "The digit read from the image (shown: the card's example saved as a PNG)",
            "PredictResponse",
            shown.get("upload"),
        )
        paths[f"/models/{name}/predict/image"] = {
            "post": _operation(
                f"Predict with {name} from an uploaded image",
                UPLOAD_DOC,
                f"predict_{name}_image",
                upload,
                image_answer,
            )
        }
        paths[f"/models/{name}/versions/{{version}}/predict/image"] = {
            "post": _operation(
                f"Predict with a pinned {name} version from an uploaded image",
                UPLOAD_DOC,
                f"predict_{name}_version_image",
                upload,
                image_answer,
                pinned=model.version,
            )
        }


def _json_response(description: str, schema: str, example: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{schema}"}}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {"application/json": content}}


def _operation(
    summary: str,
    description: str,
    operation_id: str,
    body: dict[str, Any],
    answer: dict[str, Any],
    pinned: int | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": ["models"],
        "summary": summary,
        "description": description,
        "operationId": operation_id,
        "requestBody": body,
        "responses": {"200": answer},
    }
    if pinned is not None:
        operation["parameters"] = [
            {
                "name": "version",
                "in": "path",
                "required": True,
                "description": "version number (1, 2, ...) or label (stable, canary, ...)",
                "schema": {
                    "type": "string",
                    "pattern": f"^([1-9][0-9]{{0,9}}|{LABEL_PATTERN})$",
                },
                "examples": {str(pinned): {"value": str(pinned)}},
            }
        ]
    return operation


def _schema(model: Any, existing: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    found = dict(schema.pop("$defs", {}))
    found[model.__name__] = schema
    return found


# ---------------------------------------------------------------- real examples
def example_id(name: str) -> str:
    return f"{name}-example"


def v2_request(model: ServedModel) -> dict[str, Any]:
    """The card's example as an OIP v2 request: one tensor per input, batch of one."""
    inputs = []
    for spec in model.signature.inputs:
        value: Any = model.card.example.get(spec.name)
        if spec.datatype == "UINT8":  # an image: [1, H, W], values flat in row-major order
            flat = [int(v) for row in value for v in row]
            inputs.append(
                {
                    "name": spec.name,
                    "shape": [1, *spec.shape[1:]],
                    "datatype": "UINT8",
                    "data": flat,
                }
            )
        else:
            inputs.append(
                {"name": spec.name, "shape": [1], "datatype": spec.datatype, "data": [value]}
            )
    return {"id": example_id(model.name), "inputs": inputs}


def real_examples(model: ServedModel) -> dict[str, Any]:
    """The card's example as each protocol sends it, and the answers the model really gives.

    Runs the model once per build (the document is rebuilt only when the set of serving
    versions changes); a model that cannot answer its own example gets no example.
    """
    from app.api import native, tfserving, v2

    try:
        encoded = model.encode(Rows([model.card.example]))
        probabilities = model.predict(encoded.matrix)
        outputs = model.signature.output_names
        response = model.respond(probabilities, encoded, outputs, example_id(model.name))
    except Exception:  # documentation must never break the service
        log.warning("no example answer for %s v%s", model.name, model.version, exc_info=True)
        return {}
    found = {
        "native": _body(native.respond(response)),
        "v2_request": v2_request(model),
        "v2": _body(v2.encode(response, {"": False}, v2.classes_parameter(response.classes))),
        "tfserving_request": {"instances": [model.card.example]},
        "tfserving": _body(tfserving.encode(response, "instances")),
    }
    first = model.card.inputs[0].name
    misspelt = {(k[:-1] if k == first else k): v for k, v in model.card.example.items()}
    try:
        model.encode(Rows([misspelt]))
    except InvalidInput as exc:
        found["misspelt"] = misspelt
        found["misspelt_error"] = _body(native.render(exc))
    if model.is_image:
        try:
            found["upload"] = _body(native.respond(upload_answer(model)))
        except Exception:  # documentation must never break the service
            log.warning("no upload example for %s v%s", model.name, model.version, exc_info=True)
    return found


def upload_answer(model: ServedModel) -> Any:
    """The card's example image saved as a PNG and uploaded: the answer an upload gets."""
    import io

    import numpy as np
    from PIL import Image

    field = model.card.inputs[0]
    height, width = field.shape or [28, 28]
    pixels = np.asarray(model.card.example[field.name], dtype=np.uint8).reshape(height, width)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    encoded = model.encode(ImageFile(buffer.getvalue()))
    probabilities = model.predict(encoded.matrix)
    return model.respond(probabilities, encoded, model.signature.output_names)


def _body(response: Any) -> Any:
    return json.loads(bytes(response.body))


# ------------------------------------------------------------- generic routes
def document_generic_routes(
    document: dict[str, Any],
    dataplane: DataPlane | None,
    models: dict[str, ServedModel],
    shown: dict[str, dict[str, Any]],
    extensions: list[str],
) -> None:
    """Schemas and real examples on the protocol routes shared by every model: per-model
    named examples on v2 infer and TF Serving predict, and the answers the GET routes
    give now for the model their path example names (iris)."""
    paths = document.get("paths", {})

    def named(key: str) -> dict[str, Any]:
        return {
            name: {
                "summary": f"{name} (set name to {name}, version to {models[name].version})",
                "value": found[key],
                "x-model": name,
                "x-version": models[name].version,
            }
            for name, found in shown.items()
            if key in found
        }

    for path, key, response_key, request_schema, response_schema in (
        ("/v2/models/{name}/infer", "v2_request", "v2", "InferenceRequest", "InferenceResponse"),
        (
            "/v2/models/{name}/versions/{version}/infer",
            "v2_request",
            "v2",
            "InferenceRequest",
            "InferenceResponse",
        ),
        (
            "/v1/models/{name}:predict",
            "tfserving_request",
            "tfserving",
            "TFServingPredictRequest",
            "TFServingPredictResponse",
        ),
        (
            "/v1/models/{name}/versions/{version}:predict",
            "tfserving_request",
            "tfserving",
            "TFServingPredictRequest",
            "TFServingPredictResponse",
        ),
        (
            "/v1/models/{name}/labels/{label}:predict",
            "tfserving_request",
            "tfserving",
            "TFServingPredictRequest",
            "TFServingPredictResponse",
        ),
    ):
        operation = paths.get(path, {}).get("post")
        if operation is None:
            continue
        content = operation["requestBody"]["content"]["application/json"]
        content.pop("example", None)
        content["schema"] = {"$ref": f"#/components/schemas/{request_schema}"}
        content["examples"] = named(key)
        operation["requestBody"]["description"] = (
            "One named example per model: pick one and set the name (and version) to match."
        )
        ok = operation["responses"]["200"]
        ok["content"] = {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{response_schema}"},
                "examples": named(response_key),
            }
        }
        if "{version}" in path:
            versions = {str(m.version) for m in models.values()}
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "version":
                    parameter["examples"] = {v: {"value": v} for v in sorted(versions)}

    if dataplane is None:
        return
    for (method, path), (schema, answer) in get_examples(dataplane, models, extensions).items():
        operation = paths.get(path, {}).get(method)
        if operation is None:
            continue
        try:
            example = answer()
        except Exception:  # e.g. the example model is not served
            example = None
        media = "text/plain" if schema == "text" else "application/json"
        shown_content: dict[str, Any] = {
            "schema": {"type": "string"}
            if schema == "text"
            else {"$ref": f"#/components/schemas/{schema}"}
            if not schema.startswith("[")
            else {"type": "array", "items": {"$ref": f"#/components/schemas/{schema[1:-1]}"}}
        }
        if example is not None:
            shown_content["example"] = example
        operation["responses"]["200"]["content"] = {media: shown_content}


def get_examples(
    dataplane: DataPlane, models: dict[str, ServedModel], extensions: list[str]
) -> dict[tuple[str, str], tuple[str, Any]]:
    """What each metadata route answers now, for the model named in its path example."""
    from app.api import native, tfserving, v2
    from app.api.repository import statistics
    from app.serving import control

    name = "iris" if "iris" in models else next(iter(models), "")
    version = models[name].version if name else None
    repository = dataplane.repository

    def readiness() -> dict[str, Any]:
        return {
            "status": "ready",
            "models": [
                {"name": s.name, "version": s.version, "status": s.status.value, "reason": s.reason}
                for s in repository.states()
            ],
        }

    def index() -> list[dict[str, Any]]:
        return [
            {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
            for e in control.index(repository, False)
        ]

    def dump(value: Any) -> Any:
        return value.model_dump(mode="json") if hasattr(value, "model_dump") else value

    def metrics() -> str:
        text = "\n".join(
            line
            for line in generate_latest(dataplane.metrics.registry).decode().splitlines()
            if line.startswith(("# HELP http_requests", "# TYPE http_requests", "http_requests"))
        )
        return text[:1500] or "# Prometheus text format"

    return {
        ("get", "/health/live"): ("Liveness", lambda: {"status": "alive"}),
        ("get", "/health/ready"): ("Readiness", readiness),
        ("get", "/metrics"): ("text", metrics),
        ("get", "/models"): (
            "[ModelSummary]",
            lambda: [dump(native.summary(dataplane, n)) for n in repository.names()],
        ),
        ("get", "/models/{name}"): (
            "ModelMetadata",
            lambda: dump(native.metadata(dataplane, name, None)),
        ),
        ("get", "/models/{name}/versions/{version}"): (
            "ModelMetadata",
            lambda: dump(native.metadata(dataplane, name, version)),
        ),
        ("get", "/v2"): (
            "ServerMetadata",
            lambda: {"name": v2.SERVER_NAME, "version": __version__, "extensions": extensions},
        ),
        ("get", "/v2/health/live"): ("ServerLive", lambda: {"live": True}),
        ("get", "/v2/health/ready"): ("ServerReady", lambda: {"ready": True}),
        ("get", "/v2/models/{name}"): (
            "ModelMetadataV2",
            lambda: v2.model_metadata(dataplane, name, None),
        ),
        ("get", "/v2/models/{name}/versions/{version}"): (
            "ModelMetadataV2",
            lambda: v2.model_metadata(dataplane, name, version),
        ),
        ("get", "/v2/models/{name}/ready"): ("ModelReady", lambda: {"name": name, "ready": True}),
        ("get", "/v2/models/{name}/versions/{version}/ready"): (
            "ModelReady",
            lambda: {"name": name, "ready": True},
        ),
        ("get", "/v2/models/stats"): ("ModelStatistics", lambda: statistics(dataplane, None, None)),
        ("get", "/v2/models/{name}/stats"): (
            "ModelStatistics",
            lambda: statistics(dataplane, name, None),
        ),
        ("get", "/v2/models/{name}/versions/{version}/stats"): (
            "ModelStatistics",
            lambda: statistics(dataplane, name, version),
        ),
        ("post", "/v2/repository/index"): ("[RepositoryEntry]", index),
        ("get", "/v1/models/{name}"): (
            "TFServingModelStatus",
            lambda: tfserving.model_status(dataplane, name, None),
        ),
        ("get", "/v1/models/{name}/versions/{version}"): (
            "TFServingModelStatus",
            lambda: tfserving.model_status(dataplane, name, version),
        ),
        ("get", "/v1/models/{name}/metadata"): (
            "TFServingMetadata",
            lambda: tfserving.model_metadata(dataplane, name, None),
        ),
        ("get", "/v1/models/{name}/versions/{version}/metadata"): (
            "TFServingMetadata",
            lambda: tfserving.model_metadata(dataplane, name, version),
        ),
        ("get", "/v1/models/{name}/labels/{label}"): (
            "TFServingModelStatus",
            lambda: tfserving.model_status(dataplane, name, STABLE),
        ),
        ("get", "/v1/models/{name}/labels/{label}/metadata"): (
            "TFServingMetadata",
            lambda: tfserving.model_metadata(dataplane, name, STABLE),
        ),
    }


# ------------------------------------------------------------------- errors
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
INFERENCE = ("/predict", "/infer", ":predict", "/predict/image", "/explain")


def error_codes(method: str, path: str) -> dict[str, str]:
    """The error statuses a route can really return, with what each means there."""
    native = path.startswith("/models/")
    codes: dict[str, str] = {}
    if method == "post" and path.endswith(INFERENCE):
        if path.endswith("/predict/image"):
            codes["400"] = "Malformed multipart body"
            codes["413"] = "Image over MAX_IMAGE_BYTES, or body over MAX_BODY_BYTES"
            codes["422"] = "No file, or a file that is not a readable PNG/JPEG image"
        elif native:
            codes["400"] = "Malformed JSON, or a bad X-Request-Timeout header"
            codes["413"] = "Body over MAX_BODY_BYTES"
            codes["422"] = "Invalid input: the error names the field and the problem"
        else:
            codes["400"] = "Malformed JSON, or invalid input: names the tensor and the problem"
            codes["413"] = "Body over MAX_BODY_BYTES"
        codes["404"] = "Unknown model or version"
        codes["503"] = "Overloaded (MAX_IN_FLIGHT, MAX_QUEUED_ROWS): retry after Retry-After"
        codes["504"] = "The request's deadline passed before it was answered"
        if native and "{version}" in path:
            codes["422"] = codes["422"] + "; or a version that is neither a number nor a label"
        elif "{version}" in path or "{label}" in path:
            codes["400"] += "; or a malformed version or label"
        return codes
    if "{name}" in path:
        codes["404"] = "Unknown model, version or label"
    if "{version}" in path:
        bad = "The version is neither a version number nor a label"
        codes["422" if native else "400"] = bad
    if "{label}" in path:
        codes["400"] = "The label is malformed"
    if path == "/schemas/{file}":
        codes["422"] = "No such schema: the error names the ones there are"
    return codes


def document_errors(document: dict[str, Any], api_keys: bool, exempt: list[str]) -> None:
    """Error responses with the error body schema and only the statuses each route can
    give: FastAPI's generic 422 goes where no parameter can fail validation."""
    from app.api.schemas import ErrorBody

    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_schema(ErrorBody, schemas))
    for path, methods in document.get("paths", {}).items():
        for method, operation in methods.items():
            responses: dict[str, Any] = operation["responses"]
            declared = {code: r for code, r in responses.items() if int(code) >= 400}
            admin = path.startswith(("/admin", "/v2/repository/models"))
            keep: dict[str, dict[str, Any]]
            if path == "/health/ready":
                keep = {"503": {"description": "Still loading, shutting down, or no model serves"}}
            elif path == "/v2/health/ready":
                keep = {"400": {}}
            elif admin:  # typed parameters and the token: as the routes declare
                keep = dict(declared)
                keep.setdefault("401", {})["description"] = "Missing or wrong admin token"
            else:
                keep = {
                    code: {"description": text} for code, text in error_codes(method, path).items()
                }
                if path == "/v2/repository/index":
                    keep["400"] = {"description": "Malformed body, or ready not a boolean"}
            for code in declared:
                responses.pop(code)
            if api_keys and not _exempt(path, exempt):
                keep["401"] = {"description": "Missing or unknown API key"}
            for code, response in sorted(keep.items()):
                response.setdefault("description", "Error")
                if path == "/health/ready":
                    response["content"] = {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}
                    }
                elif path == "/v2/health/ready":
                    response["description"] = "Not ready (models loading, or shutting down)"
                    response["content"] = {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "ready": {"type": "boolean"},
                                    "error": {"type": "string"},
                                },
                            },
                            "example": {
                                "ready": False,
                                "error": "not ready: the server is shutting down",
                            },
                        }
                    }
                else:
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                responses[code] = response
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in json.dumps(document.get("paths", {})):
            schemas.pop(unused, None)


def _exempt(path: str, exempt: list[str]) -> bool:
    return any(
        path == rule or (rule.endswith("/*") and path.startswith(rule[:-1])) for rule in exempt
    )


def show_error_examples(document: dict[str, Any], shown: dict[str, dict[str, Any]]) -> None:
    """The 422 a misspelt field really gets, on each model's native predict routes."""
    paths = document.get("paths", {})
    for name, found in shown.items():
        error = found.get("misspelt_error")
        if error is None:
            continue
        for path in (f"/models/{name}/predict", f"/models/{name}/versions/{{version}}/predict"):
            response = paths.get(path, {}).get("post", {}).get("responses", {}).get("422")
            if response is not None:
                response["content"]["application/json"]["example"] = error
