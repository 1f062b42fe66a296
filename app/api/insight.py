"""Model insight over HTTP: explanations, drift, calibration, feedback and live accuracy.

Only translation lives here: the data plane and ``app/insight`` compute everything.

* ``POST /models/{name}[/versions/{v}]/explain``: a predict body; every instance is
  answered with its explanation. (``"explain": true`` beside ``instances``, or
  ``?explain=true``, does the same on ``/predict``; OIP v2 takes the parameter
  ``explain``.)
* ``GET /models/{name}/versions/{v}/drift``: recent traffic against training.
* ``GET /models/{name}/versions/{v}/calibration`` and ``.../calibration.png``.
* ``POST /feedback``: true labels for earlier predictions, by request id.
* ``GET /models/{name}/versions/{v}/performance``: live accuracy from feedback.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from app.api.body import read_json
from app.api.errors import ERROR_BODY, ClientError, error_response
from app.api.examples import IRIS_ROW, MODEL_NAME, VERSION
from app.api.native import JSON_ERRORS, plane, predict
from app.api.responses import FastJSONResponse
from app.api.versions import path_version, pinned
from app.insight.feedback import Label
from app.insight.reference import CALIBRATION_PLOT
from app.serving.errors import FeedbackDisabled, InvalidInput, ModelNotFound
from app.serving.model import ServedModel

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model or version, or nothing to show", **ERROR_BODY},
    422: {"description": "Invalid request: names the field and the problem", **ERROR_BODY},
}
MAX_FEEDBACK = 10_000
EXPLAIN_BODY = {
    "requestBody": {
        "required": True,
        "description": 'A predict body: one instance, or {"instances": [...]} with an '
        'optional "threshold" (binary models); the example is for iris',
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": {"instances": [IRIS_ROW]}}
        },
    }
}


def ok(description: str, example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """A documented 200 answer: its shape, with an answer the service gave (iris v1)."""
    content = {"application/json": {"schema": {"type": "object"}, "example": example}}
    return {200: {"description": description, "content": content}}


EXPLAINED = ok(
    "The predict answer, each prediction with its explanation",
    {
        "model": "iris",
        "version": 1,
        "predictions": [
            {
                "label": "versicolor",
                "probabilities": {"setosa": 0.0033, "versicolor": 0.9732, "virginica": 0.0236},
                "unknown_categories": [],
                "out_of_range": [],
                "explanation": {
                    "method": "shapley",
                    "class": "versicolor",
                    "value": 0.9732,
                    "base": 0.355,
                    "attributions": {
                        "sepal_length": 0.0524,
                        "sepal_width": 0.0747,
                        "petal_length": 0.1555,
                        "petal_width": 0.3357,
                    },
                },
            }
        ],
    },
)
DRIFT = ok(
    "Per raw field: PSI and its status, missing, unknown and out-of-range rates",
    {
        "model": "iris",
        "version": 1,
        "window": 1000,
        "rows": 250,
        "min_rows": 200,
        "observed_total": 250,
        "measure": "population stability index (PSI)",
        "thresholds": {"watch": 0.1, "drift": 0.25},
        "fields": {
            "petal_width": {
                "type": "numeric",
                "psi": 0.031,
                "missing_rate": 0.0,
                "out_of_range_rate": 0.0,
                "status": "ok",
            }
        },
        "flagged": [],
    },
)
CALIBRATION = ok(
    "ECE and reliability bins on validation, the temperature served, the threshold rule",
    {
        "model": "iris",
        "version": 1,
        "calibration": {
            "split": "validation",
            "rows": 21,
            "method": "temperature scaling: softmax(log(p) / T), T fitted by minimising "
            "validation NLL; T = 1 when that does not lower it",
            "temperature": 1.2413,
            "nll": 0.2195,
            "nll_calibrated": 0.2155,
            "ece": 0.0706,
            "ece_calibrated": 0.0711,
            "bins": [
                {"lower": 0.9, "upper": 1.0, "count": 16, "confidence": 0.9889, "accuracy": 1.0}
            ],
            "bins_calibrated": [
                {"lower": 0.9, "upper": 1.0, "count": 15, "confidence": 0.9874, "accuracy": 1.0}
            ],
        },
    },
)
PERFORMANCE = ok(
    "Live accuracy from feedback beside the card's test figures",
    {
        "model": "iris",
        "version": 1,
        "labelled": 40,
        "stored_predictions": 52,
        "window": 10000,
        "live": {
            "accuracy": 0.975,
            "roc_auc": None,
            "accuracy_change": -0.0028,
            "accuracy_standard_error": 0.0247,
        },
        "card_test": {"accuracy": 0.9778, "roc_auc": None, "rows": 45},
    },
)

router = APIRouter(tags=["insight"])


@router.post(
    "/models/{name}/explain",
    responses={**EXPLAINED, **JSON_ERRORS},
    summary="Predict and explain (highest serving version): a predict body",
    openapi_extra=EXPLAIN_BODY,
)
async def explain_default(request: Request, name: str = MODEL_NAME) -> FastJSONResponse:
    return await predict(request, None, explain=True)


@router.post(
    "/models/{name}/versions/{version}/explain",
    responses={**EXPLAINED, **JSON_ERRORS},
    summary="Predict and explain with a pinned version: a predict body",
    openapi_extra=EXPLAIN_BODY,
)
async def explain_version(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> FastJSONResponse:
    return await predict(request, path_version(request), explain=True)


def served(request: Request, name: str, version: str) -> ServedModel:
    return plane(request).model(name, pinned(version, 422))


@router.get(
    "/models/{name}/versions/{version}/drift",
    responses={**DRIFT, **ERRORS},
    summary="Drift of recent traffic against the training data, per raw field (PSI)",
)
async def drift(request: Request, name: str = MODEL_NAME, version: str = VERSION) -> dict[str, Any]:
    model = served(request, name, version)
    report = await plane(request).offload(plane(request).drift, model)
    return {"model": model.name, "version": model.version, **report}


@router.get(
    "/models/{name}/versions/{version}/calibration",
    responses={**CALIBRATION, **ERRORS},
    summary="Calibration on the validation split (ECE, reliability bins, temperature) and, "
    "for binary models, threshold: the decision rule, max-F1 threshold and PR curve",
)
async def calibration(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    model = served(request, name, version)
    found = model.insight.calibration
    if found is None:
        raise ModelNotFound(name, model.version, "has no reference.json with calibration")
    answer = {"model": model.name, "version": model.version, "calibration": found}
    if model.insight.threshold is not None:  # binary models
        answer["threshold"] = model.insight.threshold
    return answer


@router.get(
    "/models/{name}/versions/{version}/calibration.png",
    response_class=FileResponse,
    responses={**ERRORS, 200: {"content": {"image/png": {}}}},
    summary="Reliability diagram on the validation split, before and after calibration",
)
async def calibration_plot(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> FileResponse:
    model = served(request, name, version)
    path = model.path / CALIBRATION_PLOT
    if not path.is_file():
        raise ModelNotFound(name, model.version, "has no reliability diagram")
    return FileResponse(path, media_type="image/png")


@router.get(
    "/models/{name}/versions/{version}/performance",
    responses={**PERFORMANCE, **ERRORS},
    summary="Live accuracy (and ROC AUC, binary) from feedback, beside the card's test figures",
)
async def performance(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> FastJSONResponse:
    model = served(request, name, version)
    try:
        found = await plane(request).offload(plane(request).performance, model)
    except FeedbackDisabled as exc:
        return error_response(404, str(exc))
    return FastJSONResponse({"model": model.name, "version": model.version, **found})


def labels_of(payload: Any) -> list[Label]:
    """``{"id", "label", "index"?}`` or ``{"feedback": [...]}``, checked field by field."""
    if not isinstance(payload, dict):
        raise ClientError(422, "body: must be a JSON object")
    single = "feedback" not in payload
    items = [payload] if single else payload["feedback"]
    if not single and (set(payload) - {"feedback"}):
        extra = min(set(payload) - {"feedback"})
        raise ClientError(422, f"{extra}: unexpected field")
    if not isinstance(items, list) or not items:
        raise ClientError(422, "feedback: must be a non-empty list")
    if len(items) > MAX_FEEDBACK:
        raise ClientError(422, f"feedback: at most {MAX_FEEDBACK} items, got {len(items)}")
    found: list[Label] = []
    detail: list[dict[str, str]] = []
    for i, item in enumerate(items):
        where = "" if single else f"feedback[{i}]."
        if not isinstance(item, dict):
            detail.append({"field": f"feedback[{i}]", "problem": "must be an object"})
            continue
        extra = set(item) - {"id", "label", "index"}
        detail += [{"field": f"{where}{k}", "problem": "unexpected field"} for k in sorted(extra)]
        rid, label, index = item.get("id"), item.get("label"), item.get("index", 0)
        if not isinstance(rid, str) or not 0 < len(rid) <= 128:
            detail.append({"field": f"{where}id", "problem": "must be a request id (a string)"})
        if not isinstance(label, str) or not label:
            detail.append({"field": f"{where}label", "problem": "must be a class name"})
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            detail.append({"field": f"{where}index", "problem": "must be an integer >= 0"})
        if isinstance(rid, str) and isinstance(label, str) and isinstance(index, int):
            found.append(Label(rid, int(index), label))
    if detail:
        raise ClientError(
            422, "; ".join(f"{d['field']}: {d['problem']}" for d in detail[:3]), detail
        )
    return found


# not in the OpenAPI document: no example body could succeed there (it needs the id of
# a stored prediction); the README documents it
@router.post("/feedback", include_in_schema=False)
async def feedback(request: Request) -> FastJSONResponse:
    payload = await read_json(request)
    items = labels_of(payload)
    single = isinstance(payload, dict) and "feedback" not in payload
    try:
        accepted = await plane(request).label(items)
    except FeedbackDisabled as exc:
        return error_response(404, str(exc))
    except InvalidInput as exc:
        detail = [
            {
                "field": (p.field if single else f"feedback[{p.index}].{p.field}"),
                "problem": p.problem,
            }
            for p in exc.problems
        ]
        unknown = all(p.field == "id" for p in exc.problems)
        message = "; ".join(f"{d['field']}: {d['problem']}" for d in detail[:3])
        return error_response(404 if unknown else 422, message, detail)
    return FastJSONResponse({"accepted": accepted})
