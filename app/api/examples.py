"""Examples that make the generic protocol endpoints runnable from /docs.

The v2 and TF Serving routes take the model name from the path, so their request
bodies cannot have a schema per model; instead the docs prefill iris and a body
that iris accepts, and "Try it out" works as shown.
"""

from __future__ import annotations

from typing import Any

from fastapi import Path

from app.artifacts import LABEL_PATTERN

MODEL_NAME: Any = Path(
    description="model name, e.g. iris, income, salary, digits", examples=["iris"]
)
LABEL: Any = Path(description="version label, e.g. stable or canary", examples=["stable"])
VERSION: Any = Path(
    description="model version: a number (1, 2, ...) or a label (stable, canary, ...)",
    examples=["1"],
)

IRIS_ROW = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}


def _json_body(description: str, example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }


V2_INFER_BODY = _json_body(
    "An Open Inference Protocol v2 inference request (the example is for iris)",
    {
        "id": "example-1",
        "inputs": [
            {"name": name, "shape": [1], "datatype": "FP32", "data": [value]}
            for name, value in IRIS_ROW.items()
        ],
        "outputs": [{"name": "probabilities"}, {"name": "label"}],
    },
)
TFSERVING_PREDICT_BODY = _json_body(
    'A TensorFlow Serving predict request, row ("instances") or columnar ("inputs") format '
    "(the example is for iris)",
    {"instances": [IRIS_ROW]},
)


def path_docs(*, version: str | None, name: bool = True, label: bool = False) -> dict[str, Any]:
    """OpenAPI parameters for routes that read ``request.path_params`` themselves.

    The hot prediction routes skip FastAPI's per-request parameter solving (a large
    share of a small request's cost); the docs still show the parameters, with examples.
    """
    parameters: list[dict[str, Any]] = []
    if name:
        parameters.append(
            {
                "name": "name",
                "in": "path",
                "required": True,
                "description": "model name, e.g. iris, income, salary, digits",
                "schema": {"type": "string"},
                "examples": {"iris": {"value": "iris"}},
            }
        )
    if version is not None:
        parameters.append(
            {
                "name": "version",
                "in": "path",
                "required": True,
                "description": "model version: a number (1, 2, ...) or a label (stable, ...)",
                "schema": {"type": version, "minimum": 1}
                if version == "integer"
                else {"type": version},
                "examples": {"1": {"value": 1 if version == "integer" else "1"}},
            }
        )
    if label:
        parameters.append(
            {
                "name": "label",
                "in": "path",
                "required": True,
                "description": "version label, e.g. stable or canary",
                "schema": {"type": "string", "pattern": f"^{LABEL_PATTERN}$"},
                "examples": {"stable": {"value": "stable"}},
            }
        )
    return {"parameters": parameters}
