"""The native API: generic predict routes for every model, plus metadata.

``/models/{name}[/versions/{version}]/predict`` takes one instance or
``{"instances": [...]}`` and ``.../predict/image`` an uploaded picture. The routes
are the same for every model; each request is validated against the schema of the
version that answers it, by the data plane. The OpenAPI document still shows one
operation per model with its own schema and examples (``app/api/docs.py``), rebuilt
whenever the repository changes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import FileResponse

from app.api.body import read_json
from app.api.deadlines import deadline_of
from app.api.errors import ERROR_BODY, ClientError, error_response, failure
from app.api.examples import MODEL_NAME, VERSION
from app.api.fastpath import hot_post
from app.api.responses import FastJSONResponse
from app.api.schemas import ModelMetadata, ModelSummary, VersionInfo
from app.api.versions import path_version, pinned
from app.artifacts import HISTORY_PLOT
from app.serving.dataplane import DataPlane
from app.serving.errors import InvalidInput, ModelNotFound, Problem, ServingError, hint_needed
from app.serving.inference import (
    PREDICTION,
    ImageFile,
    InferenceRequest,
    InferenceResponse,
    Rows,
)
from app.serving.repository import VersionState

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model or version", **ERROR_BODY},
    422: {"description": "Invalid input: the error names the field and the problem", **ERROR_BODY},
}
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON", **ERROR_BODY},
    413: {"description": "Body over the size limit", **ERROR_BODY},
    **ERRORS,
}
UPLOAD_DOC = (
    "Upload a PNG or JPEG of one handwritten digit, any size, dark on light or light on "
    "dark. It is prepared as MNIST digits were: grayscale, inverted if needed, cropped, "
    "fitted into 20x20 and centred by mass in 28x28."
)


def plane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


# ------------------------------------------------------------------- decoding
# request-level options beside "instances" (and as query parameters): the data plane
# checks them (app/serving/model.py ServedModel.options)
OPTIONS = ("explain", "threshold", "strict", "prepare")
FLAGS = {"true": True, "1": True, "false": False, "0": False}


def split_instances(payload: Any) -> tuple[list[Any], bool]:
    """``{"instances": [...]}`` or a single instance object; returns (list, was_single)."""
    if not isinstance(payload, dict):
        raise ClientError(
            422,
            'body: expected a JSON object (one instance, or {"instances": [...]})',
            [{"field": "body", "problem": "must be a JSON object"}],
        )
    if "instances" not in payload:
        return [payload], True
    instances = payload["instances"]
    extra = sorted(set(payload) - {"instances", *OPTIONS})
    if extra:
        raise ClientError(
            422,
            f"{extra[0]}: unexpected field",
            [{"field": f, "problem": "unexpected field"} for f in extra],
        )
    if not isinstance(instances, list):
        raise ClientError(
            422, "instances: must be a list", [{"field": "instances", "problem": "must be a list"}]
        )
    if not instances:
        raise ClientError(
            422,
            "instances: must hold at least one instance",
            [{"field": "instances", "problem": "must hold at least one instance"}],
        )
    return instances, False


# ------------------------------------------------------------------- encoding
# from this many instances on, the answer is built off the event loop
LARGE_ANSWER = 64


async def answer(dataplane: DataPlane, response: InferenceResponse) -> FastJSONResponse:
    if len(response) >= LARGE_ANSWER:
        return await dataplane.offload(respond, response)
    return respond(response)


def respond(response: InferenceResponse) -> FastJSONResponse:
    if response.heads:
        return _respond_heads(response)
    if PREDICTION in response.outputs:  # a regression model: one value per instance
        values = response.outputs[PREDICTION].tolist()
        unknown, outside = response.unknown_categories, response.out_of_range
        return FastJSONResponse(
            {
                "model": response.model,
                "version": response.version,
                "predictions": [
                    {
                        "prediction": value,
                        "unknown_categories": unknown[i],
                        "out_of_range": outside[i],
                        "canonical": response.canonical[i],
                    }
                    for i, value in enumerate(values)
                ],
            }
        )
    classes = response.classes
    labels = response.labels()
    rows = response.outputs["probabilities"].tolist()
    unknown = response.unknown_categories
    outside = response.out_of_range
    canonical = response.canonical
    predictions = [
        {
            "label": labels[i],
            "probabilities": dict(zip(classes, rows[i], strict=True)),
            "unknown_categories": unknown[i],
            "out_of_range": outside[i],
            "canonical": canonical[i],
        }
        for i in range(len(rows))
    ]
    if response.prepared is not None:
        for prediction, prepared in zip(predictions, response.prepared, strict=True):
            prediction["prepared"] = prepared
    if response.explanations is not None:
        for prediction, explanation in zip(predictions, response.explanations, strict=True):
            prediction["explanation"] = explanation
    return FastJSONResponse(
        {"model": response.model, "version": response.version, "predictions": predictions}
    )


def _respond_heads(response: InferenceResponse) -> FastJSONResponse:
    """A multi-output model: per instance, one object per named output, beside the notes."""
    columns = {name: array.tolist() for name, array in response.outputs.items()}
    predictions: list[dict[str, Any]] = []
    for i in range(len(response)):
        prediction: dict[str, Any] = {}
        for head in response.heads:
            if head.name not in columns:
                continue
            if not head.classes:
                prediction[head.name] = {"prediction": columns[head.name][i]}
                continue
            answer: dict[str, Any] = {}
            if head.label in columns:
                answer["label"] = str(columns[head.label][i])
            answer["probabilities"] = dict(zip(head.classes, columns[head.name][i], strict=True))
            prediction[head.name] = answer
        prediction["unknown_categories"] = response.unknown_categories[i]
        prediction["out_of_range"] = response.out_of_range[i]
        prediction["canonical"] = response.canonical[i]
        predictions.append(prediction)
    return FastJSONResponse(
        {"model": response.model, "version": response.version, "predictions": predictions}
    )


def options_of(request: Request, payload: Any, single: bool) -> dict[str, Any]:
    """Request options (``explain``, ``threshold``, ``strict``, ``prepare``) from the body,
    beside ``instances``, or the query string (``?explain=true&threshold=0.3``, which also
    works for a single instance). The data plane checks their values."""
    found: dict[str, Any] = {}
    if request.scope["query_string"]:  # no QueryParams object for the usual empty query
        query = request.query_params
        for name in OPTIONS:
            if name not in query:
                continue
            text = query[name]
            if name == "threshold":
                try:
                    found[name] = float(text)
                except ValueError:
                    found[name] = text
            else:
                found[name] = FLAGS.get(text.lower(), text)
    if not single and isinstance(payload, dict):
        found.update({k: payload[k] for k in OPTIONS if k in payload})
    return found


def field_of(problem: Problem, single: bool) -> str:
    """Where a problem lies in a native request body."""
    if single or problem.index is None:
        return problem.field or ("body" if single else "instances")
    return f"instances[{problem.index}]" + (f".{problem.field}" if problem.field else "")


def render(exc: ServingError, single: bool = True) -> FastJSONResponse:
    """A serving error in the native shape: ``{"error", "detail": [{"field", "problem"}]}``."""
    if isinstance(exc, InvalidInput):
        detail = []
        for p in exc.problems:
            text = p.problem + (f"; did you mean {p.suggestion!r}?" if hint_needed(p) else "")
            detail.append({"field": field_of(p, single), "problem": text})
        first = "; ".join(f"{d['field']}: {d['problem']}" for d in detail[:3])
        more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
        return error_response(422, first + more, detail)
    return failure(exc, 422, str(exc))


async def predict(
    request: Request, version: int | str | None, explain: bool = False
) -> FastJSONResponse:
    dataplane = plane(request)
    name = request.path_params["name"]
    try:
        dataplane.check_room(name, version)  # before the body is read
    except ServingError as exc:
        return render(exc)
    payload = await read_json(request)
    instances, single = split_instances(payload)
    parameters = options_of(request, payload, single)
    if explain:
        parameters["explain"] = True
    infer_request = InferenceRequest(
        Rows(instances),
        parameters=parameters,
        deadline=deadline_of(request),
        disconnected=request.is_disconnected,
        protocol="native",
    )
    try:
        response = await dataplane.infer(name, version, infer_request)
    except ServingError as exc:
        return render(exc, single)
    return await answer(dataplane, response)


# --------------------------------------------------------------------- routes
router = APIRouter(tags=["models"])


# the predict routes first: routing tries routes in order, and these are the hot ones;
# their per-model documentation is generated from the repository (app/api/docs.py)
@hot_post(router, "/models/{name}/predict", include_in_schema=False)
async def predict_default(request: Request) -> FastJSONResponse:
    return await predict(request, None)


@hot_post(router, "/models/{name}/versions/{version}/predict", include_in_schema=False)
async def predict_version(request: Request) -> FastJSONResponse:
    return await predict(request, path_version(request))


async def predict_upload(
    request: Request, name: str, version: int | str | None, file: UploadFile
) -> FastJSONResponse:
    limit: int = request.app.state.settings.max_image_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ClientError(413, f"file: image is larger than the limit of {limit} bytes")
    try:
        infer_request = InferenceRequest(
            ImageFile(data),
            deadline=deadline_of(request),
            disconnected=request.is_disconnected,
            protocol="native",
        )
        response = await plane(request).infer(name, version, infer_request)
    except ServingError as exc:
        return render(exc)
    return respond(response)


@router.post("/models/{name}/predict/image", include_in_schema=False)
async def predict_image(
    request: Request, name: str, file: UploadFile = File(description="PNG or JPEG")
) -> FastJSONResponse:
    return await predict_upload(request, name, None, file)


@router.post("/models/{name}/versions/{version}/predict/image", include_in_schema=False)
async def predict_image_version(
    request: Request, name: str, version: str, file: UploadFile = File(description="PNG or JPEG")
) -> FastJSONResponse:
    return await predict_upload(request, name, pinned(version, 422), file)


# ------------------------------------------------------------------- metadata
def version_info(state: VersionState) -> VersionInfo:
    model = state.model
    return VersionInfo(
        version=state.version,
        status=state.status.value,
        reason=state.reason,
        runtime=model.runtime.name if model else None,
        device=model.runtime.device if model else None,
        load_seconds=round(state.load_seconds, 3) if model else None,
    )


def summary(dataplane: DataPlane, name: str) -> ModelSummary:
    repository = dataplane.repository
    states = repository.versions(name)
    config = repository.config(name)
    return ModelSummary(
        name=name,
        default_version=repository.default_version(name),
        labels=config.labels,
        canary_percent=config.canary_percent,
        versions=[version_info(s) for s in states.values()],
    )


def metadata(dataplane: DataPlane, name: str, version: int | str | None) -> ModelMetadata:
    base = summary(dataplane, name)
    states = dataplane.repository.versions(name)
    if version is not None:
        chosen: int | None = dataplane.repository.resolve(name, version)
        if chosen not in states:
            raise ModelNotFound(name, version, f"names version {chosen}, which is not on disk")
    else:
        chosen = base.default_version
    model = states[chosen].model if chosen is not None else None
    if model is None:
        return ModelMetadata(**base.model_dump(), version=chosen)
    card = model.card
    return ModelMetadata(
        **base.model_dump(),
        version=chosen,
        title=card.title,
        description=card.description,
        classes=card.classes,
        inputs=card.inputs,
        metrics={k: v.model_dump() for k, v in card.metrics.items()},
        card=card.model_dump(),
    )


@router.get("/models", response_model=list[ModelSummary], summary="List the models")
async def list_models(request: Request) -> list[ModelSummary]:
    dataplane = plane(request)
    return [summary(dataplane, n) for n in dataplane.repository.names()]


@router.get(
    "/models/{name}",
    response_model=ModelMetadata,
    responses={404: ERRORS[404]},
    summary="Model metadata: versions, status, runtime, inputs, classes, metrics",
)
async def model_metadata(request: Request, name: str = MODEL_NAME) -> ModelMetadata:
    return metadata(plane(request), name, None)


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    responses=ERRORS,
    summary="Metadata of one model version",
)
async def version_metadata(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> ModelMetadata:
    return metadata(plane(request), name, pinned(version, 422))


@router.get(
    "/models/{name}/versions/{version}/history.png",
    response_class=FileResponse,
    responses={**ERRORS, 200: {"content": {"image/png": {}}}},
    summary="Training history plot (loss and accuracy per epoch)",
)
async def history_plot(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> FileResponse:
    repository = plane(request).repository
    number = repository.resolve(name, pinned(version, 422))
    states = repository.versions(name)
    if number not in states:
        raise ModelNotFound(name, version, f"names version {number}, which is not on disk")
    path = states[number].path / HISTORY_PLOT
    if not path.is_file():
        raise ModelNotFound(name, number, "has no training history plot")
    return FileResponse(path, media_type="image/png")
