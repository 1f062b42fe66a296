"""The TensorFlow Serving REST API, so TF Serving clients and scripts work unchanged.

Follows https://www.tensorflow.org/tfx/serving/api_rest (tensorflow/serving,
``tensorflow_serving/g3doc/api_rest.md``): model status shaped like
``GetModelStatusResponse``, metadata like ``GetModelMetadataResponse``, and
``:predict`` in row (``instances``) or columnar (``inputs``) format, never both;
row requests are answered with ``predictions``, columnar ones with ``outputs``.
Errors are ``{"error": "..."}``. NaN and Infinity are accepted in request JSON,
as that page allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from app.api import signature
from app.api.body import parse_json
from app.api.errors import ClientError
from app.api.examples import MODEL_NAME, TFSERVING_PREDICT_BODY, VERSION, path_docs
from app.api.responses import FastJSONResponse
from app.api.signature import TensorSpec
from app.encoding import EncodedBatch, EncodingError
from app.serving.dataplane import DataPlane
from app.serving.model import ServedModel
from app.serving.repository import ModelNotFound, VersionState, VersionStatus

SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
TF_DTYPES = {"BYTES": "DT_STRING", "INT64": "DT_INT64", "FP32": "DT_FLOAT", "UINT8": "DT_UINT8"}
# ModelVersionStatus.State of tensorflow_serving/apis/get_model_status.proto
STATES = {
    VersionStatus.LOADING: "LOADING",
    VersionStatus.AVAILABLE: "AVAILABLE",
    VersionStatus.FAILED: "END",
    VersionStatus.UNLOADED: "END",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": 'Invalid request: {"error": "..."} names the field and the problem'},
    404: {"description": 'Unknown model or version: {"error": "..."}'},
}

router = APIRouter(prefix="/v1/models", tags=["TensorFlow Serving REST"])
# the predict routes on their own router, so the app can try them before the rest
predict_router = APIRouter(prefix="/v1/models", tags=["TensorFlow Serving REST"])


def plane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


# ------------------------------------------------------------------ status, metadata
def version_status(state: VersionState) -> dict[str, Any]:
    """A failed reload that left the previous model serving still reads AVAILABLE."""
    failed = state.status is VersionStatus.FAILED
    return {
        "version": str(state.version),
        "state": "AVAILABLE" if state.model is not None else STATES[state.status],
        "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": state.reason},
    }


def model_status(dataplane: DataPlane, name: str, version: int | None) -> dict[str, Any]:
    states = dataplane.repository.versions(name)
    if version is not None and version not in states:
        raise ModelNotFound(name, version)
    chosen = [states[version]] if version is not None else list(states.values())
    return {"model_version_status": [version_status(s) for s in chosen]}


def tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dims = [{"size": str(size), "name": ""} for size in spec.shape]
    return {
        "dtype": TF_DTYPES.get(spec.datatype, "DT_INVALID"),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": spec.name,
    }


def model_metadata(dataplane: DataPlane, name: str, version: int | None) -> dict[str, Any]:
    model = dataplane.model(name, version)
    card = model.card
    definition = {
        "inputs": {s.name: tensor_info(s) for s in signature.inputs(card)},
        "outputs": {s.name: tensor_info(s) for s in signature.outputs(card)},
        "method_name": PREDICT_METHOD,
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {"signature_def": {SIGNATURE: definition}},
            "classes": card.classes,  # the order of the probabilities output
        },
    }


@router.get("/{name}", summary="Status of every version of a model", responses=ERRORS)
async def status(request: Request, name: str = MODEL_NAME) -> dict[str, Any]:
    return model_status(plane(request), name, None)


@router.get("/{name}/versions/{version}", summary="Status of one model version", responses=ERRORS)
async def version_status_route(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    return model_status(plane(request), name, signature.pinned_version(version))


@router.get("/{name}/metadata", summary="Signature of the latest version", responses=ERRORS)
async def metadata(request: Request, name: str = MODEL_NAME) -> dict[str, Any]:
    return model_metadata(plane(request), name, None)


@router.get(
    "/{name}/versions/{version}/metadata", summary="Signature of one version", responses=ERRORS
)
async def version_metadata(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    return model_metadata(plane(request), name, signature.pinned_version(version))


# ----------------------------------------------------------------------- predict
def split_payload(payload: Any) -> tuple[str, Any]:
    """("instances" | "inputs", value): a request has one of them, not both."""
    if not isinstance(payload, dict):
        raise ClientError(400, 'body: must be a JSON object with "instances" or "inputs"')
    formats = [key for key in ("instances", "inputs") if key in payload]
    if len(formats) != 1:
        problem = "not both" if formats else "one of them is required"
        raise ClientError(
            400, f'body: send "instances" (row format) or "inputs" (columnar format), {problem}'
        )
    extra = sorted(set(payload) - {"instances", "inputs", "signature_name"})
    if extra:
        raise ClientError(400, f"{extra[0]}: unexpected field")
    if payload.get("signature_name", SIGNATURE) not in (SIGNATURE, ""):
        raise ClientError(
            400, f"signature_name: {payload['signature_name']!r} is unknown; use {SIGNATURE!r}"
        )
    return formats[0], payload[formats[0]]


def pixels(value: Any, spec: TensorSpec, where: str, max_instances: int) -> np.ndarray:
    """Nested lists of intensities as ``[N, H, W]`` or ``[N, H*W]``."""
    try:
        array = np.asarray(value)
    except ValueError:
        array = np.asarray([], dtype=object)
    if array.dtype.kind not in "iuf" or array.ndim == 0:
        raise ClientError(400, f"{where}: must be a list of images, each nested lists of numbers")
    if not spec.fits(array.shape):
        raise ClientError(400, f"{where}: {spec.shape_problem(array.shape)}")
    check_count(where, len(array), max_instances)
    return array


def check_count(where: str, n: int, max_instances: int) -> None:
    if not 1 <= n <= max_instances:
        raise ClientError(400, f"{where}: must hold 1 to {max_instances} instances, got {n}")


def row_error(exc: EncodingError) -> ClientError:
    return ClientError(400, str(exc) if exc.index is not None else f"instances: {exc}")


def column_error(exc: EncodingError) -> ClientError:
    item = "" if exc.index is None else f"[{exc.index}]"
    return ClientError(400, f"inputs.{exc.field}{item}: {exc.problem}")


def named_values(card_value: Any, model: ServedModel, where: str) -> Any:
    """The image of a one-input model, given bare or as ``{"image": ...}``."""
    name = model.card.inputs[0].name
    if not isinstance(card_value, dict):
        return card_value
    problem = signature.name_problem(model.card, list(card_value))
    if problem:
        raise ClientError(400, f"{where}: {problem}")
    return card_value[name]


def row_batch(model: ServedModel, instances: Any, max_instances: int) -> EncodedBatch:
    """``instances``: objects keyed by input name, or bare values for a one-input model."""
    card = model.card
    if not isinstance(instances, list):
        raise ClientError(400, "instances: must be a list")
    check_count("instances", len(instances), max_instances)
    if signature.is_image(card):
        images = [named_values(v, model, f"instances[{i}]") for i, v in enumerate(instances)]
        array = pixels(images, signature.inputs(card)[0], "instances", max_instances)
        try:
            return signature.encode_pixels(model, array)
        except EncodingError as exc:
            raise row_error(exc) from None
    records = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise ClientError(400, f"instances[{i}]: must be an object keyed by input name")
        problem = signature.name_problem(card, list(instance))
        if problem:
            raise ClientError(400, f"instances[{i}]: {problem}")
        records.append({k: signature.unwrap(v) for k, v in instance.items()})
    try:
        return model.preprocess_records(records)
    except EncodingError as exc:
        raise row_error(exc) from None


def column_batch(model: ServedModel, inputs: Any, max_instances: int) -> EncodedBatch:
    """``inputs``: an object of named columns, or the bare tensor of a one-input model."""
    card = model.card
    if signature.is_image(card):
        value = named_values(inputs, model, "inputs")
        array = pixels(value, signature.inputs(card)[0], "inputs", max_instances)
        try:
            return signature.encode_pixels(model, array)
        except EncodingError as exc:
            raise column_error(exc) from None
    if not isinstance(inputs, dict):
        raise ClientError(400, "inputs: must be an object keyed by input name")
    problem = signature.name_problem(card, list(inputs))
    if problem:
        raise ClientError(400, f"inputs: {problem}")
    columns: dict[str, list[Any]] = {}
    for name, values in inputs.items():
        if not isinstance(values, list):
            raise ClientError(400, f"inputs.{name}: must be a list with one value per instance")
        columns[name] = [signature.unwrap(v) for v in values]
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        listed = ", ".join(f"{n}: {len(v)}" for n, v in columns.items())
        raise ClientError(
            400, f"inputs: every input must hold the same number of values ({listed})"
        )
    check_count("inputs", lengths.pop(), max_instances)
    try:
        return signature.encode_columns(model, columns)
    except EncodingError as exc:
        raise column_error(exc) from None


async def predict(request: Request, name: str, version: int | None) -> FastJSONResponse:
    dataplane = plane(request)
    model = dataplane.model(name, version)
    kind, value = split_payload(parse_json(await request.body()))
    max_instances: int = request.app.state.settings.max_instances
    if kind == "instances":
        encoded = row_batch(model, value, max_instances)
    else:
        encoded = column_batch(model, value, max_instances)
    probabilities = await dataplane.infer(model, encoded.matrix)
    named = signature.named_outputs(model, probabilities)
    columns = {key: array.tolist() for key, array in named.items()}
    if kind == "inputs":
        return FastJSONResponse({"outputs": columns})
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    return FastJSONResponse({"predictions": rows})


@predict_router.post(
    "/{name}:predict",
    summary="Predict with the latest version",
    responses=ERRORS,
    openapi_extra={**TFSERVING_PREDICT_BODY, **path_docs(version=None)},
)
async def predict_default(request: Request) -> FastJSONResponse:
    return await predict(request, request.path_params["name"], None)


@predict_router.post(
    "/{name}/versions/{version}:predict",
    summary="Predict with a pinned version",
    responses=ERRORS,
    openapi_extra={**TFSERVING_PREDICT_BODY, **path_docs(version="string")},
)
async def predict_version(request: Request) -> FastJSONResponse:
    params = request.path_params
    return await predict(request, params["name"], signature.pinned_version(params["version"]))
