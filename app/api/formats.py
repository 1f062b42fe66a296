"""The on-disk format, published: JSON Schemas generated from the Pydantic models
that define it, so the documentation cannot drift from what the service reads.

- ``/schemas/model_card.json``: ``models/<name>/<version>/model_card.json``
- ``/schemas/pipeline.json``: ``models/<name>/<version>/pipeline.json``
- ``/schemas/model_config.json``: ``models/<name>/config.json`` (policy, labels, canary)
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel

from app.api.errors import ERROR_BODY
from app.api.responses import FastJSONResponse
from app.artifacts import ModelCard, ModelConfig
from app.pipeline_format import PipelineFile

SCHEMAS: dict[str, type[BaseModel]] = {
    "model_card": ModelCard,
    "pipeline": PipelineFile,
    "model_config": ModelConfig,
}

router = APIRouter(prefix="/schemas", tags=["on-disk format"])


@functools.cache
def schema_of(name: str) -> dict[str, Any]:
    schema = SCHEMAS[name].model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"/schemas/{name}.json",
        **schema,
    }


LISTED = {"schemas": [f"/schemas/{name}.json" for name in SCHEMAS]}


@router.get(
    "",
    summary="The JSON Schemas of the on-disk format",
    responses={200: {"content": {"application/json": {"example": LISTED}}}},
)
async def list_schemas() -> dict[str, list[str]]:
    return LISTED


class SchemaResponse(FastJSONResponse):
    media_type = "application/schema+json"


SchemaFile = Literal["model_card.json", "pipeline.json", "model_config.json"]


@router.get(
    "/{file}",
    summary="One JSON Schema: model_card.json, pipeline.json, model_config.json",
    response_class=SchemaResponse,
    responses={
        200: {
            "content": {
                "application/schema+json": {
                    "schema": {"type": "object"},
                    "example": {"$id": "/schemas/model_config.json", "type": "object"},
                }
            }
        },
        422: {"description": "No such schema: names the ones there are", **ERROR_BODY},
    },
)
async def get_schema(
    file: SchemaFile = Path(description="the schema's file name", examples=["model_card.json"]),
) -> SchemaResponse:
    return SchemaResponse(schema_of(file.removesuffix(".json")))
