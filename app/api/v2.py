"""Open Inference Protocol v2 over REST (KServe v2, Triton HTTP), so existing clients work.

Endpoints, request and response objects follow the OIP REST specification
(https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md):
health answers 200 for true and 4xx for false; errors are ``{"error": "..."}``;
the request ``id`` is echoed; a request's ``outputs`` list selects the outputs.
The binary tensor data extension is supported because ``tritonclient`` uses it by
default (https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_binary_data.html).

This module only translates: JSON (and binary data) into named tensors of an
:class:`~app.serving.inference.InferenceRequest`, and the response and serving errors
back. Which tensors a model takes, and what its values may be, the data plane checks.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import msgspec
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app import __version__
from app.api import tensors
from app.api.body import LARGE_BODY, parse_json
from app.api.deadlines import deadline_of
from app.api.errors import ERROR_BODY, ClientError, error_response, failure
from app.api.examples import MODEL_NAME, V2_INFER_BODY, VERSION, path_docs
from app.api.fastpath import hot_post
from app.api.responses import FastJSONResponse
from app.api.versions import pinned
from app.serving.dataplane import DataPlane
from app.serving.errors import InvalidInput, Problem, ServingError, hint_needed
from app.serving.inference import (
    PROBABILITIES,
    InferenceRequest,
    InferenceResponse,
    Tensor,
    Tensors,
    TensorView,
)
from app.serving.signature import TensorSpec

SERVER_NAME = "keras-serve"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
HEADER_LENGTH_BYTES = HEADER_LENGTH.lower().encode()  # ASGI header names are lowercase
PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel", "keras": "keras"}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid request: names the tensor and the problem", **ERROR_BODY},
    404: {"description": "Unknown model or version", **ERROR_BODY},
}
REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
MAX_DIMENSION = 2**31

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])
# the infer routes on their own router, so the app can try them before the rest
infer_router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])


def plane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


# ------------------------------------------------------------------ health, metadata
@router.get("", summary="Server metadata: name, version, extensions")
async def server_metadata(request: Request) -> dict[str, Any]:
    # the app lists what it really serves (extensions depend on its settings)
    extensions = getattr(request.app.state, "extensions", EXTENSIONS)
    return {"name": SERVER_NAME, "version": __version__, "extensions": extensions}


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


def model_metadata(dataplane: DataPlane, name: str, version: int | str | None) -> dict[str, Any]:
    model = dataplane.model(name, version)
    signature = model.signature
    serving = dataplane.repository.versions(name).items()
    classes = {"classes": signature.classes_parameter}
    return {
        "name": name,
        "versions": [str(v) for v, state in serving if state.model is not None],
        "platform": PLATFORMS.get(model.runtime.name, model.runtime.name),
        "inputs": [tensor_metadata(s) for s in signature.inputs],
        "outputs": [
            tensor_metadata(
                s,
                classes
                if s.name == PROBABILITIES
                else {"classes": json.dumps(list(s.classes))}
                if s.classes
                else None,
            )
            for s in signature.outputs
        ],
        "parameters": {"version": str(model.version), "title": model.card.title, **classes},
    }


@router.get("/models/{name}", summary="Model metadata (highest serving version)", responses=ERRORS)
async def metadata(request: Request, name: str = MODEL_NAME) -> dict[str, Any]:
    return model_metadata(plane(request), name, None)


@router.get("/models/{name}/versions/{version}", summary="Model version metadata", responses=ERRORS)
async def version_metadata(
    request: Request, name: str = MODEL_NAME, version: str = VERSION
) -> dict[str, Any]:
    return model_metadata(plane(request), name, pinned(version))


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
    plane(request).model(name, pinned(version))
    return {"name": name, "ready": True}


# ------------------------------------------------------------------------- decode
def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON object, and the binary tensor data that follows it (extension)."""
    if header_length is None:
        return body, b""
    # a plain decimal byte count: int() would also take "11_2", " 11" and "+11"
    valid = 0 < len(header_length) <= 12 and header_length.isascii() and header_length.isdigit()
    size = int(header_length) if valid else -1
    if not 0 <= size <= len(body):
        raise ClientError(
            400,
            f"{HEADER_LENGTH}: must be a decimal byte count from 0 to {len(body)}, "
            f"got {header_length!r}",
        )
    return body[:size], body[size:]


def header_length(request: Request) -> str | None:
    """The binary extension's header, read from the raw headers (no Headers object
    on the hot path)."""
    for name, value in request.scope["headers"]:
        if name == HEADER_LENGTH_BYTES:
            return value.decode("latin-1")
    return None


class TypedInput(msgspec.Struct, forbid_unknown_fields=True):
    """An input tensor with the types the protocol gives its fields. A plain one (JSON
    data, no parameters) goes to the data plane as it is: it has what the plane reads
    of a tensor (:class:`~app.serving.inference.TensorView`)."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    values: list[Any] | None = msgspec.field(default=None, name="data")
    parameters: dict[str, Any] | None = None


class TypedBody(msgspec.Struct, forbid_unknown_fields=True):
    """An inference request with the types the protocol gives its fields."""

    inputs: list[TypedInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[Any] | None = None


# A well-typed body read straight into objects, the types checked in C, costs about
# half of generic JSON followed by type checks in Python (income's 14 tensors, read and
# checked: 7.7 us against 13). What the decoder refuses (a wrong type, an unknown field,
# NaN, a lone surrogate, deep nesting) goes to the generic reader, which names the
# problem; so this changes only how fast, never what.
TYPED_BODY = msgspec.json.Decoder(TypedBody)
NOT_TYPED = (msgspec.MsgspecError, ValueError, RecursionError)


def read_body(header: bytes, binary: bytes) -> tuple[InferenceRequest, dict[str, bool]]:
    """The protocol-neutral request from the JSON header and any binary data."""
    try:
        typed = TYPED_BODY.decode(header)
    except NOT_TYPED:
        return decode(parse_json(header), binary)
    return decode_typed(typed, binary)


def decode_typed(body: TypedBody, binary: bytes) -> tuple[InferenceRequest, dict[str, bool]]:
    """:func:`decode` for a body whose fields already have their types."""
    if not body.inputs:
        raise ClientError(400, "inputs: must be a non-empty list of tensors")
    plain = tensors.plain_column
    decoded: list[TensorView] = []
    offset = 0
    for i, item in enumerate(body.inputs):
        shape, data, datatype = item.shape, item.values, item.datatype
        # the common tabular input in a few cheap checks: JSON data, no parameters, one
        # value per instance, plainly valid values
        if (
            item.parameters is None
            and data is not None
            and len(shape) == 1
            and shape[0] == len(data)
            and plain(datatype, data)
        ):
            decoded.append(item)
            continue
        tensor, offset = decode_input(
            i, item.name, datatype, list(shape), data, item.parameters, binary, offset
        )
        decoded.append(tensor)
    return assemble(decoded, offset, body.id, body.parameters or {}, body.outputs, binary)


def decode(payload: Any, binary: bytes) -> tuple[InferenceRequest, dict[str, bool]]:
    """The protocol-neutral request from generic JSON, naming what is wrong with it."""
    if not isinstance(payload, dict):
        raise ClientError(400, "body: must be a JSON object with an inputs list")
    extra = payload.keys() - REQUEST_KEYS
    if extra:
        raise ClientError(400, f"{min(extra)}: unexpected field")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(400, "id: must be a string")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ClientError(400, "parameters: must be an object")
    items = payload.get("inputs")
    if not isinstance(items, list) or not items:
        raise ClientError(400, "inputs: must be a non-empty list of tensors")
    offset = 0
    decoded: list[TensorView] = []
    for i, item in enumerate(items):
        if type(item) is not dict or type(item.get("name")) is not str:
            problem = "must be an object with a name, shape and datatype"
            raise ClientError(400, f"inputs[{i}]: {problem}")
        extra = item.keys() - INPUT_KEYS
        if extra:
            raise tensors.bad(f"input {item['name']!r}", f"unexpected field {min(extra)!r}")
        tensor, offset = decode_input(
            i,
            item["name"],
            item.get("datatype"),
            item.get("shape"),
            item.get("data"),
            item.get("parameters"),
            binary,
            offset,
        )
        decoded.append(tensor)
    return assemble(decoded, offset, request_id, parameters, payload.get("outputs"), binary)


def assemble(
    decoded: list[TensorView],
    offset: int,
    request_id: str | None,
    parameters: dict[str, Any],
    outputs: Any,
    binary: bytes,
) -> tuple[InferenceRequest, dict[str, bool]]:
    """The request from its decoded inputs; ``offset`` is the binary data they used."""
    if offset != len(binary):
        raise ClientError(400, f"body: {len(binary) - offset} bytes of binary data no input claims")
    names, binary_outputs = requested_outputs(outputs, parameters)
    infer_request = InferenceRequest(Tensors(decoded), names, parameters, request_id, protocol="v2")
    return infer_request, binary_outputs


def decode_input(
    i: int,
    name: str,
    datatype: Any,
    shape: Any,
    data: Any,
    parameters: Any,
    binary: bytes,
    offset: int,
) -> tuple[Tensor, int]:
    """One input tensor, from JSON data or from the binary bytes at ``offset``;
    returns the offset of the next input's binary data."""
    where = f"input {name!r}"
    if not isinstance(datatype, str) or datatype not in tensors.DTYPES:
        raise tensors.bad(where, f"unknown datatype {datatype!r}")
    if not (
        isinstance(shape, list)
        and 0 < len(shape) <= 8
        and all(type(d) is int and 0 <= d <= MAX_DIMENSION for d in shape)
    ):
        raise tensors.bad(where, f"shape must be a list of 1 to 8 sizes >= 0, got {shape!r}")
    parameters = parameters or {}
    if not isinstance(parameters, dict):
        raise tensors.bad(where, "parameters must be an object")
    if "shared_memory_region" in parameters:
        raise tensors.bad(where, "shared memory is not supported")
    size = parameters.get("binary_data_size")
    if size is None:
        if data is None:
            raise tensors.bad(where, "data is missing")
        values = tensors.from_json(where, datatype, shape, data)
        return Tensor(name, datatype, tuple(shape), values), offset
    if data is not None:
        raise tensors.bad(where, "has both data and binary_data_size; send one")
    if type(size) is not int or size < 0 or offset + size > len(binary):
        raise tensors.bad(
            where, f"binary_data_size {size!r} does not fit the {len(binary)} binary bytes sent"
        )
    chunk = binary[offset : offset + size]
    values = tensors.from_binary(where, datatype, shape, chunk)
    return Tensor(name, datatype, tuple(shape), values), offset + size


def requested_outputs(
    outputs: Any, parameters: dict[str, Any]
) -> tuple[list[str] | None, dict[str, bool]]:
    """Output names (None: all), and per name whether it goes back as binary data."""
    default = parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ClientError(400, "parameters.binary_data_output: must be true or false")
    if outputs is None:
        return None, {"": default}
    if not isinstance(outputs, list):
        raise ClientError(400, "outputs: must be a list")
    names: list[str] = []
    binary: dict[str, bool] = {"": default}
    for i, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise ClientError(400, f"outputs[{i}]: must be an object with a name")
        name = output["name"]
        wanted = output.get("parameters") or {}
        if not isinstance(wanted, dict):
            raise ClientError(400, f"output {name!r}: parameters must be an object")
        unsupported = {"classification", "shared_memory_region"} & set(wanted)
        if unsupported:
            raise ClientError(400, f"output {name!r}: {min(unsupported)} is not supported")
        as_binary = wanted.get("binary_data", default)
        if not isinstance(as_binary, bool):
            raise ClientError(400, f"output {name!r}: binary_data must be true or false")
        names.append(name)
        binary[name] = as_binary
    return names, binary


# ------------------------------------------------------------------------- encode
def encode(response: InferenceResponse, binary: dict[str, bool], classes: str) -> Response:
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in response.outputs.items():
        datatype = tensors.datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        parameters: dict[str, Any] = {}
        if name == PROBABILITIES:
            parameters["classes"] = classes
        elif response.heads and (own := response.classes_parameter(name)) is not None:
            parameters["classes"] = own  # a multi-output model's probabilities
        if binary.get(name, binary[""]):
            blob = tensors.to_binary(datatype, array)
            blobs.append(blob)
            parameters["binary_data_size"] = len(blob)
        else:
            entry["data"] = tensors.to_json(datatype, array)
        if parameters:
            entry["parameters"] = parameters
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": response.model, "model_version": str(response.version)}
    if response.id is not None:
        body["id"] = response.id
    body["outputs"] = outputs
    if response.explanations is not None:  # asked for with the parameter "explain"
        body["parameters"] = {"explanations": response.explanations}
    if not blobs:
        return FastJSONResponse(body)
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


@functools.lru_cache(maxsize=1024)
def classes_parameter(classes: tuple[str, ...]) -> str:
    """The class order as OIP parameters carry it: a JSON array in a string."""
    return json.dumps(list(classes))


def describe(problem: Problem) -> str:
    """A serving problem in this protocol's words: tensors, and items within them."""
    if problem.field in ("", "outputs") or problem.field.startswith("parameters."):
        where = problem.field or "inputs"
    else:
        where = f"input {problem.field!r}"
        if problem.index is not None:
            where += f" (item {problem.index})"
    hint = f"; did you mean {problem.suggestion!r}?" if hint_needed(problem) else ""
    return f"{where}: {problem.problem}{hint}"


def render(exc: ServingError) -> Response:
    """A serving error as OIP's ``{"error": "..."}`` with its HTTP status."""
    if isinstance(exc, InvalidInput):
        text = "; ".join(describe(p) for p in exc.problems[:3])
        more = len(exc.problems) - 3
        return error_response(400, text + (f" (and {more} more)" if more > 0 else ""))
    return failure(exc, 400, str(exc))


async def infer(request: Request, name: str, version: int | str | None) -> Response:
    dataplane = plane(request)
    try:
        # an unknown model is a 404 whatever the body says; a full queue, a 503 before
        # the body is read
        dataplane.check_room(name, version)
    except ServingError as exc:
        return render(exc)
    header, binary = split_body(await request.body(), header_length(request))
    if len(header) >= LARGE_BODY:
        infer_request, binary_outputs = await dataplane.offload_serial(read_body, header, binary)
    else:
        infer_request, binary_outputs = read_body(header, binary)
    infer_request.deadline = deadline_of(request, infer_request.parameters.get("timeout"))
    infer_request.disconnected = request.is_disconnected
    try:
        response = await dataplane.infer(name, version, infer_request)
    except ServingError as exc:
        return render(exc)
    return encode(response, binary_outputs, classes_parameter(response.classes))


@hot_post(
    infer_router,
    "/models/{name}/infer",
    summary="Inference (highest serving version)",
    responses=ERRORS,
    openapi_extra={**V2_INFER_BODY, **path_docs(version=None)},
)
async def infer_default(request: Request) -> Response:
    return await infer(request, request.path_params["name"], None)


@hot_post(
    infer_router,
    "/models/{name}/versions/{version}/infer",
    summary="Inference with a pinned version",
    responses=ERRORS,
    openapi_extra={**V2_INFER_BODY, **path_docs(version="string")},
)
async def infer_version(request: Request) -> Response:
    params = request.path_params
    return await infer(request, params["name"], pinned(params["version"]))
