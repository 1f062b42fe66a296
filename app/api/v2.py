"""Open Inference Protocol v2 (KServe v2, Triton HTTP/REST), so existing clients work.

Endpoints, request and response objects follow the OIP REST specification
(https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md,
also https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol):
health answers 200 for true and 4xx for false; errors are ``{"error": "..."}``;
the request ``id`` is echoed; a request's ``outputs`` list selects the outputs.
The binary tensor data extension is supported because ``tritonclient`` uses it by
default (https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_binary_data.html).

Each raw feature is one input tensor named as the feature; an image model takes
one tensor of raw intensities. Outputs are ``probabilities`` (class order in the
``classes`` parameter) and ``label``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, NonNegativeInt, ValidationError
from starlette.responses import Response

from app import __version__
from app.api import signature, tensors
from app.api.body import parse_json
from app.api.errors import ClientError, summarise, validation_detail
from app.api.examples import MODEL_NAME, V2_INFER_BODY, VERSION, path_docs
from app.api.responses import FastJSONResponse
from app.api.signature import TensorSpec
from app.encoding import EncodedBatch, EncodingError
from app.serving.dataplane import DataPlane
from app.serving.model import ServedModel

SERVER_NAME = "keras-serve"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel", "keras": "keras"}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": 'Invalid request: {"error": "..."} names the tensor and the problem'},
    404: {"description": 'Unknown model or version: {"error": "..."}'},
}

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
# the infer routes on their own router, so the app can try them before the rest
infer_router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])


class RequestInput(BaseModel):
    name: str
    shape: list[NonNegativeInt]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def plane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


# ------------------------------------------------------------------ health, metadata
@router.get("", summary="Server metadata: name, version, extensions")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", summary="Server liveness (200: live)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready", summary="Server readiness (200: ready, 400: not ready)", responses=ERRORS
)
async def ready(request: Request) -> FastJSONResponse:
    dataplane: DataPlane | None = getattr(request.app.state, "dataplane", None)
    if dataplane is None or not dataplane.repository.is_ready():
        reason = "models are still loading, or none could be loaded"
    elif getattr(request.app.state, "draining", False):
        reason = "the server is shutting down"
    else:
        return FastJSONResponse({"ready": True})
    return FastJSONResponse({"ready": False, "error": f"not ready: {reason}"}, status_code=400)


def tensor_metadata(spec: TensorSpec, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": spec.shape}
    if parameters:
        entry["parameters"] = parameters
    return entry


def model_metadata(dataplane: DataPlane, name: str, version: int | None) -> dict[str, Any]:
    model = dataplane.model(name, version)
    card = model.card
    serving = dataplane.repository.versions(name).items()
    classes = {"classes": signature.classes_parameter(card)}
    return {
        "name": name,
        "versions": [str(v) for v, state in serving if state.model is not None],
        "platform": PLATFORMS.get(model.runtime.name, model.runtime.name),
        "inputs": [tensor_metadata(s) for s in signature.inputs(card)],
        "outputs": [
            tensor_metadata(s, classes if s.name == signature.PROBABILITIES else None)
            for s in signature.outputs(card)
        ],
        "parameters": {"version": str(model.version), "title": card.title, **classes},
    }


@router.get("/models/{name}", summary="Model metadata (highest serving version)", responses=ERRORS)
async def metadata(request: Request, name: str = MODEL_NAME) -> dict[str, Any]:
    return model_metadata(plane(request), name, None)


@router.get("/models/{name}/versions/{version}", summary="Model version metadata", responses=ERRORS)
async def version_metadata(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    return model_metadata(plane(request), name, signature.pinned_version(version))


@router.get("/models/{name}/ready", summary="Model readiness (200: ready)", responses=ERRORS)
async def model_ready(request: Request, name: str = MODEL_NAME) -> dict[str, Any]:
    plane(request).model(name)  # raises ModelNotFound (404) when no version serves
    return {"name": name, "ready": True}


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model version readiness (200: ready)",
    responses=ERRORS,
)
async def version_ready(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    plane(request).model(name, signature.pinned_version(version))
    return {"name": name, "ready": True}


# ------------------------------------------------------------------------- infer
def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON object, and the binary tensor data that follows it (extension)."""
    if header_length is None:
        return body, b""
    try:
        size = int(header_length)
    except ValueError:
        size = -1
    if not 0 <= size <= len(body):
        raise ClientError(
            400, f"{HEADER_LENGTH} must be a byte count from 0 to {len(body)}, got {header_length}"
        )
    return body[:size], body[size:]


def parse_request(payload: Any) -> InferenceRequest:
    if not isinstance(payload, dict):
        raise ClientError(400, "body: must be a JSON object with an inputs list")
    try:
        return InferenceRequest.model_validate(payload)
    except ValidationError as exc:
        raise ClientError(400, summarise(validation_detail(exc))) from None


def read_inputs(
    model: ServedModel, request: InferenceRequest, binary: bytes, max_instances: int
) -> dict[str, np.ndarray]:
    """Check every input against the model's signature and decode its data."""
    specs = {s.name: s for s in signature.inputs(model.card)}
    names = [i.name for i in request.inputs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ClientError(400, f"input {duplicate!r} appears more than once")
    problem = signature.name_problem(model.card, names)
    if problem:
        raise ClientError(400, problem)
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in request.inputs:
        arrays[item.name], offset = decode_input(item, specs[item.name], binary, offset)
    if offset != len(binary):
        raise ClientError(400, f"body: {len(binary) - offset} bytes of binary data no input claims")
    check_batch({n: a.shape[0] for n, a in arrays.items()}, max_instances)
    return arrays


def decode_input(
    item: RequestInput, spec: TensorSpec, binary: bytes, offset: int
) -> tuple[np.ndarray, int]:
    """One input's array, from JSON data or from the binary bytes at ``offset``;
    returns the offset of the next input's binary data."""
    where = f"input {item.name!r}"
    if item.datatype not in tensors.DTYPES:
        raise tensors.bad(where, f"unknown datatype {item.datatype!r}")
    if item.datatype not in spec.accepts:
        raise tensors.bad(where, spec.datatype_problem(item.datatype))
    if not spec.fits(item.shape):
        raise tensors.bad(where, spec.shape_problem(item.shape))
    if "shared_memory_region" in item.parameters:
        raise tensors.bad(where, "shared memory is not supported")
    size = item.parameters.get("binary_data_size")
    if size is None:
        if item.data is None:
            raise tensors.bad(where, "data is missing")
        return tensors.from_json(where, item.datatype, item.shape, item.data), offset
    if item.data is not None:
        raise tensors.bad(where, "has both data and binary_data_size; send one")
    if type(size) is not int or size < 0 or offset + size > len(binary):
        raise tensors.bad(
            where, f"binary_data_size {size!r} does not fit the {len(binary)} binary bytes sent"
        )
    chunk = binary[offset : offset + size]
    return tensors.from_binary(where, item.datatype, item.shape, chunk), offset + size


def check_batch(sizes: dict[str, int], max_instances: int) -> None:
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{n}: {s}" for n, s in sizes.items())
        raise ClientError(400, f"inputs: all inputs must have the same batch size, got {listed}")
    n = next(iter(sizes.values()))
    if not 1 <= n <= max_instances:
        raise ClientError(400, f"inputs: batch size must be 1 to {max_instances}, got {n}")


def encode(model: ServedModel, arrays: dict[str, np.ndarray]) -> EncodedBatch:
    try:
        if signature.is_image(model.card):
            return signature.encode_pixels(model, next(iter(arrays.values())))
        columns = {name: array.reshape(-1).tolist() for name, array in arrays.items()}
        return signature.encode_columns(model, columns)
    except EncodingError as exc:
        item = "" if exc.index is None else f" (item {exc.index})"
        raise ClientError(400, f"input {exc.field!r}{item}: {exc.problem}") from None


def requested_outputs(request: InferenceRequest, known: Sequence[str]) -> list[tuple[str, bool]]:
    """(output name, as binary data) pairs; no ``outputs`` list means all of them."""
    default = request.parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ClientError(400, "parameters.binary_data_output: must be true or false")
    if not request.outputs:
        return [(name, default) for name in known]
    wanted = []
    for output in request.outputs:
        if output.name not in known:
            raise ClientError(
                400, f"unknown output {output.name!r}; the model gives {', '.join(known)}"
            )
        unsupported = {"classification", "shared_memory_region"} & set(output.parameters)
        if unsupported:
            raise ClientError(400, f"output {output.name!r}: {min(unsupported)} is not supported")
        binary = output.parameters.get("binary_data", default)
        if not isinstance(binary, bool):
            raise ClientError(400, f"output {output.name!r}: binary_data must be true or false")
        wanted.append((output.name, binary))
    return wanted


def respond(
    model: ServedModel,
    request: InferenceRequest,
    named: dict[str, np.ndarray],
    wanted: list[tuple[str, bool]],
) -> Response:
    specs = {s.name: s for s in signature.outputs(model.card)}
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in wanted:
        spec, array = specs[name], named[name]
        entry: dict[str, Any] = {
            "name": name,
            "datatype": spec.datatype,
            "shape": list(array.shape),
        }
        parameters: dict[str, Any] = {}
        if name == signature.PROBABILITIES:
            parameters["classes"] = signature.classes_parameter(model.card)
        if binary:
            blob = tensors.to_binary(spec.datatype, array)
            blobs.append(blob)
            parameters["binary_data_size"] = len(blob)
        else:
            entry["data"] = tensors.to_json(spec.datatype, array)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = outputs
    if not blobs:
        return FastJSONResponse(body)
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


async def infer(request: Request, name: str, version: int | None) -> Response:
    dataplane = plane(request)
    model = dataplane.model(name, version)
    header, binary = split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    infer_request = parse_request(parse_json(header))
    wanted = requested_outputs(infer_request, [s.name for s in signature.outputs(model.card)])
    max_instances: int = request.app.state.settings.max_instances
    encoded = encode(model, read_inputs(model, infer_request, binary, max_instances))
    probabilities = await dataplane.infer(model, encoded.matrix)
    return respond(model, infer_request, signature.named_outputs(model, probabilities), wanted)


@infer_router.post(
    "/models/{name}/infer",
    summary="Inference (highest serving version)",
    responses=ERRORS,
    openapi_extra={**V2_INFER_BODY, **path_docs(version=None)},
)
async def infer_default(request: Request) -> Response:
    return await infer(request, request.path_params["name"], None)


@infer_router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference with a pinned version",
    responses=ERRORS,
    openapi_extra={**V2_INFER_BODY, **path_docs(version="string")},
)
async def infer_version(request: Request) -> Response:
    params = request.path_params
    return await infer(request, params["name"], signature.pinned_version(params["version"]))
