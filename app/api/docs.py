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
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.api.native import ERRORS as NATIVE_ERRORS
from app.api.native import JSON_ERRORS, UPLOAD_DOC
from app.artifacts import LABEL_PATTERN
from app.serving.dataplane import DataPlane
from app.serving.model import ServedModel

ASSETS = "/docs-assets"
PREDICT_RESPONSE = {"$ref": "#/components/schemas/PredictResponse"}


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
        add_model_operations(document, models)
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


def add_model_operations(document: dict[str, Any], models: dict[str, ServedModel]) -> None:
    """Per-model predict operations with the model's request schema and examples."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    paths = document.setdefault("paths", {})
    from app.api.schemas import PredictResponse

    schemas.update(_schema(PredictResponse, schemas))
    for name, model in models.items():
        schema = model.schema
        for cls in (schema.instance, schema.batch):
            schemas.update(_schema(cls, schemas))
        card = model.card
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
                    },
                }
            },
        }
        doc = (
            f"{card.title}: {card.description} The schema shown is version {model.version}'s; "
            "a request pinned to another version is checked against that version's own."
        )
        paths[f"/models/{name}/predict"] = {
            "post": _operation(
                f"Predict with {name} (default version)", doc, f"predict_{name}", body, False
            )
        }
        paths[f"/models/{name}/versions/{{version}}/predict"] = {
            "post": _operation(
                f"Predict with a pinned {name} version", doc, f"predict_{name}_version", body, True
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
        paths[f"/models/{name}/predict/image"] = {
            "post": _operation(
                f"Predict with {name} from an uploaded image",
                UPLOAD_DOC,
                f"predict_{name}_image",
                upload,
                False,
                upload=True,
            )
        }
        paths[f"/models/{name}/versions/{{version}}/predict/image"] = {
            "post": _operation(
                f"Predict with a pinned {name} version from an uploaded image",
                UPLOAD_DOC,
                f"predict_{name}_version_image",
                upload,
                True,
                upload=True,
            )
        }


def _operation(
    summary: str,
    description: str,
    operation_id: str,
    body: dict[str, Any],
    pinned: bool,
    upload: bool = False,
) -> dict[str, Any]:
    errors = dict(JSON_ERRORS)
    if upload:
        errors = {
            **NATIVE_ERRORS,
            400: {**JSON_ERRORS[400], "description": "Malformed multipart body"},
            413: {**JSON_ERRORS[413], "description": "Image too large"},
        }
    responses: dict[str, Any] = {
        "200": {
            "description": "One prediction per instance",
            "content": {"application/json": {"schema": PREDICT_RESPONSE}},
        }
    }
    responses.update({str(code): info for code, info in errors.items()})
    operation: dict[str, Any] = {
        "tags": ["models"],
        "summary": summary,
        "description": description,
        "operationId": operation_id,
        "requestBody": body,
        "responses": responses,
    }
    if pinned:
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
                "examples": {"1": {"value": "1"}},
            }
        ]
    return operation


def _schema(model: Any, existing: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    found = dict(schema.pop("$defs", {}))
    found[model.__name__] = schema
    return found
