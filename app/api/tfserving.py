"""The TensorFlow Serving REST API, so TF Serving clients and scripts work unchanged.

Follows https://www.tensorflow.org/tfx/serving/api_rest (tensorflow/serving,
``tensorflow_serving/g3doc/api_rest.md``): model status shaped like
``GetModelStatusResponse``, metadata like ``GetModelMetadataResponse``, and
``:predict`` in row (``instances``) or columnar (``inputs``) format, never both;
row requests are answered with ``predictions``, columnar ones with ``outputs``.
Errors are ``{"error": "..."}``. NaN and Infinity are accepted in request JSON,
as that page allows.

This module only translates the wire format into the protocol-neutral request and
back; the data plane validates inputs against the version's schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.body import read_json
from app.api.deadlines import deadline_of
from app.api.errors import ERROR_BODY, ClientError, error_response, failure
from app.api.examples import LABEL, MODEL_NAME, TFSERVING_PREDICT_BODY, VERSION, path_docs
from app.api.fastpath import hot_post
from app.api.responses import FastJSONResponse
from app.api.versions import labelled, pinned
from app.serving.dataplane import DataPlane
from app.serving.errors import InvalidInput, ModelNotFound, Problem, ServingError, hint_needed
from app.serving.inference import Columns, InferenceRequest, InferenceResponse, Rows
from app.serving.repository import VersionState, VersionStatus
from app.serving.signature import TensorSpec

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
    400: {"description": "Invalid request: names the field and the problem", **ERROR_BODY},
    404: {"description": "Unknown model or version", **ERROR_BODY},
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


def model_status(dataplane: DataPlane, name: str, version: int | str | None) -> dict[str, Any]:
    states = dataplane.repository.versions(name)
    if version is None:
        chosen = list(states.values())
    else:
        number = dataplane.repository.resolve(name, version)
        if number not in states:
            raise ModelNotFound(name, version, f"names version {number}, which is not on disk")
        chosen = [states[number]]
    return {"model_version_status": [version_status(s) for s in chosen]}


def tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dims = [{"size": str(size), "name": ""} for size in spec.shape]
    return {
        "dtype": TF_DTYPES.get(spec.datatype, "DT_INVALID"),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": spec.name,
    }


def model_metadata(dataplane: DataPlane, name: str, version: int | str | None) -> dict[str, Any]:
    model = dataplane.model(name, version)
    signature = model.signature
    definition = {
        "inputs": {s.name: tensor_info(s) for s in signature.inputs},
        "outputs": {s.name: tensor_info(s) for s in signature.outputs},
        "method_name": PREDICT_METHOD,
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(model.version)},
        "metadata": {
            "signature_def": {"signature_def": {SIGNATURE: definition}},
            "classes": list(signature.classes),  # the order of the probabilities output
        },
    }


@router.get("/{name}", summary="Status of every version of a model", responses=ERRORS)
async def status(request: Request, name: str = MODEL_NAME) -> dict[str, Any]:
    return model_status(plane(request), name, None)


@router.get("/{name}/versions/{version}", summary="Status of one model version", responses=ERRORS)
async def version_status_route(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    return model_status(plane(request), name, pinned(version))


@router.get("/{name}/metadata", summary="Signature of the latest version", responses=ERRORS)
async def metadata(request: Request, name: str = MODEL_NAME) -> dict[str, Any]:
    return model_metadata(plane(request), name, None)


@router.get(
    "/{name}/versions/{version}/metadata", summary="Signature of one version", responses=ERRORS
)
async def version_metadata(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    return model_metadata(plane(request), name, pinned(version))


@router.get("/{name}/labels/{label}", summary="Status of a labelled version", responses=ERRORS)
async def label_status_route(
    request: Request, name: str = MODEL_NAME, label: str = LABEL
) -> dict[str, Any]:
    return model_status(plane(request), name, labelled(label))


@router.get(
    "/{name}/labels/{label}/metadata", summary="Signature of a labelled version", responses=ERRORS
)
async def label_metadata(
    request: Request, name: str = MODEL_NAME, label: str = LABEL
) -> dict[str, Any]:
    return model_metadata(plane(request), name, labelled(label))


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


def unwrap(value: Any) -> Any:
    """A one-element list stands for its element: per-row shape [1] as well as []."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def rows_of(instances: Any, single_input: str | None) -> Rows:
    """``instances``: objects keyed by input name, or bare values for a one-input model."""
    if not isinstance(instances, list):
        raise ClientError(400, "instances: must be a list")
    if single_input is not None:
        return Rows([v if isinstance(v, dict) else {single_input: v} for v in instances])
    return Rows(
        [
            {k: unwrap(v) for k, v in row.items()} if isinstance(row, dict) else row
            for row in instances
        ]
    )


def columns_of(inputs: Any, single_input: str | None) -> Columns:
    """``inputs``: an object of named columns, or the bare tensor of a one-input model."""
    if single_input is not None and not isinstance(inputs, dict):
        inputs = {single_input: inputs}
    if not isinstance(inputs, dict):
        raise ClientError(400, "inputs: must be an object keyed by input name")
    columns: dict[str, list[Any]] = {}
    for name, values in inputs.items():
        if not isinstance(values, list):
            raise ClientError(400, f"inputs.{name}: must be a list with one value per instance")
        columns[name] = values if single_input is not None else [unwrap(v) for v in values]
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        listed = ", ".join(f"{n}: {len(v)}" for n, v in columns.items())
        raise ClientError(
            400, f"inputs: every input must hold the same number of values ({listed})"
        )
    return Columns(columns, lengths.pop() if lengths else 0)


def describe(problem: Problem, kind: str) -> str:
    if not problem.field:
        where = kind if problem.index is None else f"{kind}[{problem.index}]"
    elif kind == "instances":
        where = (
            problem.field
            if problem.index is None
            else f"instances[{problem.index}].{problem.field}"
        )
    else:
        where = f"inputs.{problem.field}" + ("" if problem.index is None else f"[{problem.index}]")
    hint = f"; did you mean {problem.suggestion!r}?" if hint_needed(problem) else ""
    return f"{where}: {problem.problem}{hint}"


def render(exc: ServingError, kind: str) -> FastJSONResponse:
    if isinstance(exc, InvalidInput):
        text = "; ".join(describe(p, kind) for p in exc.problems[:3])
        more = len(exc.problems) - 3
        return error_response(400, text + (f" (and {more} more)" if more > 0 else ""))
    return failure(exc, 400, str(exc))


def encode(response: InferenceResponse, kind: str) -> FastJSONResponse:
    columns = {key: array.tolist() for key, array in response.outputs.items()}
    if kind == "inputs":
        return FastJSONResponse({"outputs": columns})
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    return FastJSONResponse({"predictions": rows})


async def predict(request: Request, name: str, version: int | str | None) -> FastJSONResponse:
    dataplane = plane(request)
    try:
        dataplane.check_room(name, version)  # before the body is read
    except ServingError as exc:
        return render(exc, "instances")
    kind, value = split_payload(await read_json(request))
    try:
        model = dataplane.route(name, version)  # the canary split happens here, once
        inputs = model.signature.input_names
        single = inputs[0] if len(inputs) == 1 else None
        decoded = rows_of(value, single) if kind == "instances" else columns_of(value, single)
        infer_request = InferenceRequest(
            decoded,
            deadline=deadline_of(request),
            disconnected=request.is_disconnected,
            protocol="tfserving",
        )
        response = await dataplane.infer(name, model.version, infer_request)
    except ServingError as exc:
        return render(exc, kind)
    return encode(response, kind)


@hot_post(
    predict_router,
    "/{name}:predict",
    summary="Predict with the latest version",
    responses=ERRORS,
    openapi_extra={**TFSERVING_PREDICT_BODY, **path_docs(version=None)},
)
async def predict_default(request: Request) -> FastJSONResponse:
    return await predict(request, request.path_params["name"], None)


@hot_post(
    predict_router,
    "/{name}/versions/{version}:predict",
    summary="Predict with a pinned version",
    responses=ERRORS,
    openapi_extra={**TFSERVING_PREDICT_BODY, **path_docs(version="string")},
)
async def predict_version(request: Request) -> FastJSONResponse:
    params = request.path_params
    return await predict(request, params["name"], pinned(params["version"]))


@hot_post(
    predict_router,
    "/{name}/labels/{label}:predict",
    summary="Predict with a labelled version (stable, canary, ...)",
    responses=ERRORS,
    openapi_extra={**TFSERVING_PREDICT_BODY, **path_docs(version=None, label=True)},
)
async def predict_label(request: Request) -> FastJSONResponse:
    params = request.path_params
    return await predict(request, params["name"], labelled(params["label"]))
