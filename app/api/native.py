"""The native API: one set of documented endpoints per model, plus metadata.

Handlers read the body themselves (orjson, then the model's Pydantic schema) rather
than through FastAPI's body parameter, which costs a large share of throughput on
small requests; the OpenAPI document still carries each model's schema.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from app.api import signature
from app.api.body import parse_json
from app.api.errors import ClientError, summarise, validation_detail
from app.api.examples import MODEL_NAME, VERSION_NUMBER, path_docs
from app.api.responses import FastJSONResponse
from app.api.schemas import (
    ModelMetadata,
    ModelSummary,
    PredictResponse,
    VersionInfo,
    instance_model,
    request_model,
)
from app.artifacts import HISTORY_PLOT, ModelCard
from app.encoding import EncodedBatch, EncodingError
from app.encoding.image import prepare_upload
from app.serving.dataplane import DataPlane
from app.serving.model import ServedModel
from app.serving.repository import ModelNotFound, VersionState
from app.settings import Settings

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed JSON"},
    404: {"description": "Unknown model or version"},
    413: {"description": "Body over the size limit"},
    422: {"description": "Invalid input: the error names the field and the problem"},
}


def plane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def split_instances(payload: Any, max_instances: int) -> tuple[list[Any], bool]:
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
    extra = sorted(set(payload) - {"instances"})
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
    if len(instances) > max_instances:
        problem = f"at most {max_instances} instances per request, got {len(instances)}"
        raise ClientError(
            422, f"instances: {problem}", [{"field": "instances", "problem": problem}]
        )
    return instances, False


def validate(adapter: TypeAdapter[Any], instances: list[Any], single: bool) -> list[Any]:
    try:
        return adapter.validate_python(instances)
    except ValidationError as exc:
        detail = validation_detail(
            exc, prefix="" if single else "instances", skip=1 if single else 0
        )
        raise ClientError(422, summarise(detail), detail) from None


def image_batch(
    instances: list[Any], single: bool, shape: tuple[int, int] = (28, 28)
) -> np.ndarray:
    """Images straight to numpy: 784 numbers through Pydantic cost more than the model.

    Each image is checked for ``shape`` (or its flat form) here, so that a bad one in
    a batch is named by its index.
    """
    allowed = (shape, (shape[0] * shape[1],))
    arrays = []
    for i, instance in enumerate(instances):
        where = "" if single else f"instances[{i}]"
        if not isinstance(instance, dict):
            problem = "must be an object with one field, image"
            raise ClientError(
                422,
                f"{where or 'body'}: {problem}",
                [{"field": where or "body", "problem": problem}],
            )
        field = f"{where}.image" if where else "image"
        extra = sorted(set(instance) - {"image"})
        if extra or "image" not in instance:
            bad = f"{where}.{extra[0]}" if where and extra else (extra[0] if extra else field)
            problem = "unexpected field" if extra else "Field required"
            raise ClientError(422, f"{bad}: {problem}", [{"field": bad, "problem": problem}])
        try:
            array = np.asarray(instance["image"])
        except ValueError:
            array = np.asarray([], dtype=object)
        if array.dtype.kind not in "iuf" or array.shape not in allowed:
            problem = f"must be a {shape[0]}x{shape[1]} (or {allowed[1][0]}) array of numbers 0-255"
            if array.dtype.kind in "iuf":
                problem += f", got shape {list(array.shape)}"
            raise ClientError(422, f"{field}: {problem}", [{"field": field, "problem": problem}])
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            problem = "must not contain NaN or Infinity"
            raise ClientError(422, f"{field}: {problem}", [{"field": field, "problem": problem}])
        if array.min() < 0 or array.max() > 255:
            problem = "intensities must be between 0 and 255"
            raise ClientError(422, f"{field}: {problem}", [{"field": field, "problem": problem}])
        arrays.append(array.reshape(shape))  # flat and square images may share a batch
    return np.stack(arrays)


def path_version(request: Request) -> int:
    """The ``{version}`` of a hot route, read without FastAPI's per-request solving."""
    raw = request.path_params["version"]
    version = signature.version_number(raw)
    if version is None:
        problem = f"must be a positive whole number, got {raw!r}"
        raise ClientError(
            422, f"path.version: {problem}", [{"field": "path.version", "problem": problem}]
        )
    return version


def encode_records(
    model: ServedModel,
    adapter: TypeAdapter[Any],
    fields: frozenset[str],
    instances: list[Any],
    single: bool,
) -> EncodedBatch:
    """Records through the model's encoding, which validates every value as it goes.

    The Pydantic schema runs only to explain a rejection: it reports every problem at
    once, in the words of the documented schema. Valid requests skip it, which saves
    a second pass over every field.
    """
    if all(isinstance(r, dict) and r.keys() <= fields for r in instances):
        try:
            return model.preprocess_records(instances)
        except EncodingError as exc:
            rejection: EncodingError | None = exc
    else:
        rejection = None
    records = validate(adapter, instances, single)  # raises with every problem it sees
    if rejection is not None:
        raise rejection
    return model.preprocess_records([r.__dict__ for r in records])


def relocate(exc: EncodingError, single: bool) -> ClientError:
    field = exc.field if single or exc.index is None else f"instances[{exc.index}].{exc.field}"
    return ClientError(422, f"{field}: {exc.problem}", [{"field": field, "problem": exc.problem}])


def respond(
    model: ServedModel, probabilities: np.ndarray, unknown: list[list[str]]
) -> FastJSONResponse:
    predictions = model.postprocess(probabilities, unknown)
    return FastJSONResponse(
        {
            "model": model.name,
            "version": model.version,
            "predictions": [p.__dict__ for p in predictions],
        }
    )


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
    states = dataplane.repository.versions(name)
    serving = [v for v, s in states.items() if s.model is not None]
    return ModelSummary(
        name=name,
        default_version=max(serving) if serving else None,
        versions=[version_info(s) for s in states.values()],
    )


def metadata(dataplane: DataPlane, name: str, version: int | None) -> ModelMetadata:
    base = summary(dataplane, name)
    states = dataplane.repository.versions(name)
    if version is not None and version not in states:
        raise ModelNotFound(name, version)
    chosen = version if version is not None else base.default_version
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


def build_router(
    cards: dict[str, ModelCard], settings: Settings
) -> tuple[APIRouter, list[type[BaseModel]]]:
    """The native routes, and the request schemas the OpenAPI document must carry."""
    router = APIRouter(tags=["models"])
    schema_models: list[type[BaseModel]] = []
    # the predict routes first: routing tries routes in order, and these are the hot ones
    for name, card in cards.items():
        _add_model_routes(router, name, card, settings, schema_models)

    @router.get("/models", response_model=list[ModelSummary], summary="List the models")
    async def list_models(request: Request) -> list[ModelSummary]:
        dataplane = plane(request)
        return [summary(dataplane, n) for n in dataplane.repository.names()]

    @router.get(
        "/models/{name}",
        response_model=ModelMetadata,
        responses=ERRORS,
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
        request: Request, name: str = MODEL_NAME, version: int = VERSION_NUMBER
    ) -> ModelMetadata:
        return metadata(plane(request), name, version)

    @router.get(
        "/models/{name}/versions/{version}/history.png",
        response_class=FileResponse,
        responses={**ERRORS, 200: {"content": {"image/png": {}}}},
        summary="Training history plot (loss and accuracy per epoch)",
    )
    async def history_plot(
        request: Request, name: str = MODEL_NAME, version: int = VERSION_NUMBER
    ) -> FileResponse:
        states = plane(request).repository.versions(name)
        if version not in states:
            raise ModelNotFound(name, version)
        path = states[version].path / HISTORY_PLOT
        if not path.is_file():
            raise ModelNotFound(name, version, "has no training history plot")
        return FileResponse(path, media_type="image/png")

    _add_unknown_model_routes(router)
    return router, schema_models


def _add_unknown_model_routes(router: APIRouter) -> None:
    """Predict paths of models without routes answer a 404 that names the model.

    Routes exist per model, so without these a typo in the model name got a bare
    "Not Found". Registered last, they only see names no model route matched.
    """
    paths = (
        "/models/{name}/predict",
        "/models/{name}/versions/{version}/predict",
        "/models/{name}/predict/image",
        "/models/{name}/versions/{version}/predict/image",
    )

    async def unknown_model(request: Request, name: str, version: int | None = None) -> None:
        model = plane(request).model(name, version)  # raises ModelNotFound for most names
        what = "image uploads" if request.url.path.endswith("/image") else "this endpoint"
        raise ModelNotFound(model.name, version, f"does not offer {what}")

    for path in paths:
        router.add_api_route(path, unknown_model, methods=["POST"], include_in_schema=False)


def _add_model_routes(
    router: APIRouter,
    name: str,
    card: ModelCard,
    settings: Settings,
    schema_models: list[type[BaseModel]],
) -> None:
    instance = instance_model(card)
    batch = request_model(card, instance, settings.max_instances)
    adapter: TypeAdapter[list[Any]] = TypeAdapter(list[instance])  # type: ignore[valid-type]
    image_model = card.inputs[0].type == "image"
    fields = frozenset(f.name for f in card.inputs)
    height, width = card.inputs[0].shape or (28, 28)
    body_schema = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": f"#/components/schemas/{instance.__name__}"},
                            {"$ref": f"#/components/schemas/{batch.__name__}"},
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
        },
    }
    schema_models.extend([instance, batch])

    async def predict(request: Request, version: int | None) -> FastJSONResponse:
        dataplane = plane(request)
        model = dataplane.model(name, version)
        instances, single = split_instances(
            parse_json(await request.body()), settings.max_instances
        )
        try:
            if image_model:
                encoded = model.preprocess_pixels(image_batch(instances, single, (height, width)))
            else:
                encoded = encode_records(model, adapter, fields, instances, single)
        except EncodingError as exc:
            raise relocate(exc, single) from None
        probabilities = await dataplane.infer(model, encoded.matrix)
        return respond(model, probabilities, encoded.unknown)

    doc = f"{card.title}: {card.description}"

    @router.post(
        f"/models/{name}/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra=body_schema,
        summary=f"Predict with {name} (highest serving version)",
        description=doc,
        operation_id=f"predict_{name}",
    )
    async def predict_default(request: Request) -> FastJSONResponse:
        return await predict(request, None)

    @router.post(
        f"/models/{name}/versions/{{version}}/predict",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra={**body_schema, **path_docs(version="integer", name=False)},
        summary=f"Predict with a pinned {name} version",
        description=doc,
        operation_id=f"predict_{name}_version",
    )
    async def predict_version(request: Request) -> FastJSONResponse:
        return await predict(request, path_version(request))

    if not image_model:
        return

    async def predict_upload(
        request: Request, file: UploadFile, version: int | None
    ) -> FastJSONResponse:
        dataplane = plane(request)
        model = dataplane.model(name, version)
        data = await file.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            raise ClientError(
                413, f"file: image is larger than the limit of {settings.max_image_bytes} bytes"
            )
        try:
            pixels = prepare_upload(data, settings.max_image_pixels)
            encoded = model.preprocess_pixels(pixels[None])
        except EncodingError as exc:
            raise ClientError(
                422, str(exc), [{"field": exc.field, "problem": exc.problem}]
            ) from None
        probabilities = await dataplane.infer(model, encoded.matrix)
        return respond(model, probabilities, encoded.unknown)

    upload_doc = (
        "Upload a PNG or JPEG of one handwritten digit, any size, dark on light or light on "
        "dark. It is prepared as MNIST digits were: grayscale, inverted if needed, cropped, "
        "fitted into 20x20 and centred by mass in 28x28."
    )

    @router.post(
        f"/models/{name}/predict/image",
        response_model=PredictResponse,
        responses=ERRORS,
        summary=f"Predict with {name} from an uploaded image",
        description=upload_doc,
        operation_id=f"predict_{name}_image",
    )
    async def predict_image(
        request: Request, file: UploadFile = File(description="PNG or JPEG")
    ) -> FastJSONResponse:
        return await predict_upload(request, file, None)

    @router.post(
        f"/models/{name}/versions/{{version}}/predict/image",
        response_model=PredictResponse,
        responses=ERRORS,
        summary=f"Predict with a pinned {name} version from an uploaded image",
        description=upload_doc,
        operation_id=f"predict_{name}_version_image",
    )
    async def predict_image_version(
        request: Request,
        version: int = VERSION_NUMBER,
        file: UploadFile = File(description="PNG or JPEG"),
    ) -> FastJSONResponse:
        return await predict_upload(request, file, version)
