"""``inference.GRPCInferenceService``: protobuf in, the data plane, protobuf out.

Wire rules, as in Triton's gRPC endpoint
(https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_grpc.md):

* an input travels either as typed ``contents`` (the field that matches its datatype)
  or as ``raw_input_contents`` (little-endian bytes, BYTES elements length-prefixed);
  a request uses one way for all its inputs;
* outputs go back as ``raw_output_contents``, one entry per output, unless the client
  asks for typed contents (``binary_data: false`` on every requested output, or the
  request parameter ``binary_data_output: false``). ``tritonclient.grpc`` reads
  numeric outputs only from raw contents, and Triton always sends them, so raw is
  the default; a response never mixes the two, because raw entries are matched to
  outputs by position;
* errors are gRPC status codes with a message naming the tensor or field:
  INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE (not ready, draining, overloaded),
  DEADLINE_EXCEEDED, UNAUTHENTICATED; RESOURCE_EXHAUSTED for a message over the size
  limit comes from the server before the servicer runs (``calls.py``, or grpc.aio's
  ``grpc.max_receive_message_length``).

Every RPC is counted in the HTTP request metrics with protocol ``grpc`` and the status
code's name, and gets an access-log line when access logs are on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2, service_pb2_grpc

from app import __version__
from app.api import tensors
from app.api.errors import ClientError
from app.api.repository import statistics, token_matches
from app.api.v2 import PLATFORMS, SERVER_NAME, classes_parameter, describe
from app.artifacts import LABEL_PATTERN, MAX_VERSION, parse_version_ref
from app.auth import KeyRing, presented_key
from app.observability import tracing
from app.observability.context import RequestFacts, current
from app.observability.logs import log_access
from app.observability.metrics import Metrics
from app.serving import control
from app.serving.broadcast import AdminChange
from app.serving.dataplane import DataPlane
from app.serving.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    ServingError,
)
from app.serving.inference import PROBABILITIES, InferenceRequest, Tensor, Tensors
from app.settings import Settings

log = logging.getLogger(__name__)
PROTOCOL = "grpc"
SERVICE = "/inference.GRPCInferenceService/"
MAX_DIMS = 8
# the typed contents field of each datatype (FP16 has none: raw contents only)
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# how typed contents are read before the range check and the cast to the datatype
WIDE = {
    "int_contents": np.int64,
    "int64_contents": np.int64,
    "uint_contents": np.uint64,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
    "bool_contents": np.bool_,
}
UNSUPPORTED_OUTPUT = ("classification", "shared_memory_region")
# open without an API key, as their REST paths are by default (/v2/health/*, and
# /v2/repository/*, which has the admin token)
KEY_EXEMPT = frozenset(
    {"ServerLive", "ServerReady", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}
)
# from this many input values (or answered instances) on, decoding (or encoding) runs on
# the data plane's preparation pool rather than on the event loop, as over REST
LARGE_REQUEST = 4096
LARGE_ANSWER = 64

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


class RpcError(Exception):
    """A failure with its gRPC status (the adapter's own checks)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message of an error raised while serving an RPC."""
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    if isinstance(exc, InvalidInput):
        text = "; ".join(describe(p) for p in exc.problems[:3])
        more = len(exc.problems) - 3
        return grpc.StatusCode.INVALID_ARGUMENT, text + (f" (and {more} more)" if more > 0 else "")
    if isinstance(exc, ModelNotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, DeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    if isinstance(exc, control.LoadFailed):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, ServingError):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, ClientError):
        codes = {401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND}
        return codes.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, "the request took longer than its time limit"
    return grpc.StatusCode.INTERNAL, "internal error; the request was not processed"


def rpc(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Metrics, access log, request facts and error statuses around one RPC method."""
    method = SERVICE + handler.__name__
    needs_key = handler.__name__ not in KEY_EXEMPT

    @functools.wraps(handler)
    async def wrapper(
        self: InferenceServicer, request: Request, context: grpc.aio.ServicerContext
    ) -> Response:
        facts = RequestFacts(request_id=getattr(request, "id", "") or tracing.random_id(128))
        token = current.set(facts)
        code = grpc.StatusCode.OK
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            if needs_key and self.keys.enabled:
                self.check_key(context)
            return await handler(self, request, context)
        except asyncio.CancelledError:  # the client went away or its deadline passed
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code, message = status_of(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("unhandled error in %s", method)
            await context.abort(code, message)
            raise  # abort raises; this line is never reached
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            self.metrics.record_request(facts.model, facts.version, PROTOCOL, code.name, elapsed)
            if self.settings.access_log:  # the same cheap queued line as HTTP's
                log_access(
                    "GRPC",
                    method,
                    code.name,
                    elapsed,
                    facts.request_id,
                    facts.model,
                    facts.version,
                    tracing.trace_id(),
                )
            current.reset(token)

    return wrapper


# ------------------------------------------------------------------------- decode
def model_version(text: str) -> int | str | None:
    """``model_version`` of a request: a number or a label (``stable``), or empty for the
    default version."""
    if not text:
        return None
    ref = parse_version_ref(text)
    if ref is None:
        raise invalid(
            f"model_version: must be a version number from 1 to {MAX_VERSION}, digits only, "
            f"no leading zeros, or a label matching {LABEL_PATTERN}, got {text!r}"
        )
    return ref


def parameter_value(parameter: service_pb2.InferParameter) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def decode_request(request: service_pb2.ModelInferRequest) -> tuple[InferenceRequest, bool]:
    """The protocol-neutral request, and whether outputs go back as raw contents."""
    if not request.inputs:
        raise invalid("inputs: must hold at least one tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(
            f"raw_input_contents: has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, or typed contents for all"
        )
    decoded = [decode_input(item, raw[i] if raw else None) for i, item in enumerate(request.inputs)]
    parameters = {key: parameter_value(p) for key, p in request.parameters.items()}
    default = parameters.get("binary_data_output", True)
    if not isinstance(default, bool):
        raise invalid("parameters.binary_data_output: must be a bool_param")
    outputs: list[str] | None = None
    as_raw = default
    if request.outputs:
        outputs, flags = [], []
        for output in request.outputs:
            where = f"output {output.name!r}"
            unsupported = [k for k in UNSUPPORTED_OUTPUT if k in output.parameters]
            if unsupported:
                raise invalid(f"{where}: {unsupported[0]} is not supported")
            flag = default
            if "binary_data" in output.parameters:
                flag = parameter_value(output.parameters["binary_data"])
                if not isinstance(flag, bool):
                    raise invalid(f"{where}: binary_data must be a bool_param")
            outputs.append(output.name)
            flags.append(flag)
        as_raw = any(flags)  # raw entries go by position: one way for every output
    inference = InferenceRequest(
        Tensors(decoded), outputs, parameters, request.id or None, protocol="grpc"
    )
    return inference, as_raw


def decode_input(item: service_pb2.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Tensor:
    where = f"input {item.name!r}"
    datatype = item.datatype
    if datatype not in tensors.DTYPES:
        raise invalid(f"{where}: unknown datatype {datatype!r}")
    shape = tuple(item.shape)
    if not (0 < len(shape) <= MAX_DIMS and min(shape) >= 0 and max(shape) <= 2**31):
        raise invalid(f"{where}: shape must hold 1 to {MAX_DIMS} sizes >= 0, got {list(shape)}")
    if item.parameters and "shared_memory_region" in item.parameters:
        raise invalid(f"{where}: shared memory is not supported")
    # (a message field is "set" once any of its fields is; HasField is the cheap question)
    filled = (
        [field.name for field, _ in item.contents.ListFields()] if item.HasField("contents") else []
    )
    if raw is not None:
        if filled:
            raise invalid(f"{where}: has both contents and raw_input_contents; send one")
        return Tensor(item.name, datatype, shape, tensors.from_binary(where, datatype, shape, raw))
    expected = CONTENTS.get(datatype)
    if expected is None:
        raise invalid(f"{where}: {datatype} data must travel in raw_input_contents")
    wrong = [name for name in filled if name != expected]
    if wrong:
        raise invalid(f"{where}: {datatype} data goes in contents.{expected}, not {wrong[0]}")
    values = getattr(item.contents, expected)
    count = math.prod(shape)
    if len(values) != count:
        raise invalid(
            f"{where}: shape {list(shape)} holds {count} values, but contents has {len(values)}"
        )
    return Tensor(item.name, datatype, shape, typed_array(where, datatype, expected, values, shape))


def typed_array(
    where: str, datatype: str, field: str, values: Any, shape: tuple[int, ...]
) -> np.ndarray:
    if field == "bytes_contents":
        try:
            text = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise invalid(f"{where}: BYTES data must be UTF-8 text") from None
        array = np.empty(len(text), dtype=object)
        array[:] = text
        return array.reshape(shape)
    wide: np.ndarray = np.asarray(values, dtype=WIDE[field])
    if datatype in tensors.INTEGERS and wide.size:
        info = tensors.LIMITS[datatype]
        low, high = wide.min(), wide.max()
        if int(low) < info.min or int(high) > info.max:
            raise invalid(
                f"{where}: {datatype} data must be whole numbers from {info.min} to {info.max}"
            )
    return wide.astype(tensors.DTYPES[datatype], copy=False).reshape(shape)


# ------------------------------------------------------------------------- encode
def encode_response(response: Any, as_raw: bool, classes: str) -> service_pb2.ModelInferResponse:
    message = service_pb2.ModelInferResponse(
        model_name=response.model, model_version=str(response.version), id=response.id or ""
    )
    for name, array in response.outputs.items():
        datatype = tensors.datatype_of(array)
        output = message.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if name == PROBABILITIES:
            output.parameters["classes"].string_param = classes
        elif response.heads and (own := response.classes_parameter(name)) is not None:
            output.parameters["classes"].string_param = own  # a multi-output model's
        if as_raw:
            message.raw_output_contents.append(tensors.to_binary(datatype, array))
        elif datatype == "BYTES":
            output.contents.bytes_contents.extend(str(v).encode() for v in array.ravel().tolist())
        else:
            getattr(output.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
    if response.explanations is not None:  # asked for with the parameter "explain"
        explained = json.dumps(response.explanations, separators=(",", ":"))
        message.parameters["explanations"].string_param = explained
    return message


# ------------------------------------------------------------------------ servicer
@dataclass
class Served:
    """What the servicer reads from the app: its plane and whether it is draining."""

    dataplane: DataPlane
    is_draining: Callable[[], bool]
    extensions: list[str]


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, served: Served, settings: Settings, metrics: Metrics) -> None:
        self.served = served
        self.settings = settings
        self.metrics = metrics
        token = settings.admin_token
        self.admin_token = token.get_secret_value() if token is not None else None
        self.keys = KeyRing(key.get_secret_value() for key in settings.api_keys)

    @property
    def plane(self) -> DataPlane:
        return self.served.dataplane

    def ready(self) -> bool:
        return self.plane.repository.is_ready() and not self.served.is_draining()

    # ------------------------------------------------------------- health, metadata
    @rpc
    async def ServerLive(
        self, request: service_pb2.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(
        self, request: service_pb2.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.ready())

    @rpc
    async def ModelReady(
        self, request: service_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelReadyResponse:
        """False (not an error) for an unknown model or version, as Triton answers."""
        version = model_version(request.version)
        try:
            self.plane.model(request.name, version)
        except ModelNotFound:
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=not self.served.is_draining())

    @rpc
    async def ServerMetadata(
        self, request: service_pb2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServerMetadataResponse:
        return service_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=self.served.extensions
        )

    @rpc
    async def ModelMetadata(
        self, request: service_pb2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelMetadataResponse:
        model = self.plane.model(request.name, model_version(request.version))
        serving = self.plane.repository.versions(request.name).items()
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name,
            versions=[str(v) for v, state in serving if state.model is not None],
            platform=PLATFORMS.get(model.runtime.name, model.runtime.name),
            inputs=[
                tensor(name=s.name, datatype=s.datatype, shape=s.shape)
                for s in model.signature.inputs
            ],
            outputs=[
                tensor(name=s.name, datatype=s.datatype, shape=s.shape)
                for s in model.signature.outputs
            ],
        )

    # -------------------------------------------------------------------- inference
    @rpc
    async def ModelInfer(
        self, request: service_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelInferResponse:
        if self.served.is_draining():
            raise RpcError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        name, version = request.model_name, model_version(request.model_version)
        self.plane.model(name, version)  # an unknown model is NOT_FOUND whatever the body says
        # every value takes at least a byte, so a small message holds few values
        if (
            request.ByteSize() >= LARGE_REQUEST
            and sum(math.prod(i.shape) for i in request.inputs) >= LARGE_REQUEST
        ):
            inference, as_raw = await self.plane.offload(decode_request, request)
        else:
            inference, as_raw = decode_request(request)
        timeout_us = inference.parameters.get("timeout")
        limit = self.time_limit(context, timeout_us)
        inference.deadline = time.monotonic() + limit  # queued work past it is dropped
        if timeout_us is None and getattr(context, "time_bounded", False):
            # keras-serve's own server cancels a running call at this same limit
            response = await self.plane.infer(name, version, inference)
        else:
            async with asyncio.timeout(limit):  # a running call is abandoned
                response = await self.plane.infer(name, version, inference)
        classes = classes_parameter(response.classes)
        if len(response.unknown_categories) >= LARGE_ANSWER:
            return await self.plane.offload(encode_response, response, as_raw, classes)
        return encode_response(response, as_raw, classes)

    # ------------------------------------------------------------ extensions
    @rpc
    async def ModelStatistics(
        self, request: service_pb2.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ModelStatisticsResponse:
        name = request.name or None
        if name is None and request.version:
            raise invalid("version: needs a model name")
        stats = statistics(self.plane, name, model_version(request.version))
        return json_format.ParseDict(stats, service_pb2.ModelStatisticsResponse())

    @rpc
    async def RepositoryIndex(
        self, request: service_pb2.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RepositoryIndexResponse:
        entries = control.index(self.plane.repository, request.ready)
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(
            models=[
                index(name=e.name, version=str(e.version), state=e.state, reason=e.reason)
                for e in entries
            ]
        )

    @rpc
    async def RepositoryModelLoad(
        self, request: service_pb2.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RepositoryModelLoadResponse:
        self.authorize(context)
        await self.plane.changes.submit(AdminChange("load_model", request.model_name))
        return service_pb2.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(
        self, request: service_pb2.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.RepositoryModelUnloadResponse:
        self.authorize(context)
        await self.plane.changes.submit(AdminChange("unload_model", request.model_name))
        return service_pb2.RepositoryModelUnloadResponse()

    def time_limit(self, context: grpc.aio.ServicerContext, timeout_us: Any) -> float:
        """Seconds the call may take: the client's gRPC deadline, OIP's ``timeout``
        parameter (microseconds, as Triton reads it) and REQUEST_TIMEOUT_S, whichever
        is first. A deadline already past is refused before any work starts."""
        limit = self.settings.request_timeout_s
        if timeout_us is not None:
            if type(timeout_us) is not int or timeout_us <= 0:
                raise invalid(
                    "parameters.timeout: must be a whole number of microseconds > 0, "
                    f"got {timeout_us!r}"
                )
            limit = min(limit, timeout_us / 1e6)
        remaining = context.time_remaining()
        if remaining is not None:
            if remaining <= 0:  # nobody is waiting for the answer any more
                raise RpcError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before inference"
                )
            limit = min(limit, remaining)
        return limit

    def check_key(self, context: grpc.aio.ServicerContext) -> None:
        """API keys (API_KEYS) as over HTTP: metadata ``x-api-key`` or ``authorization:
        Bearer <key>``; UNAUTHENTICATED otherwise."""
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        authorization, api_key = metadata.get("authorization"), metadata.get("x-api-key")
        given = presented_key(
            authorization if isinstance(authorization, str) else None,
            api_key if isinstance(api_key, str) else None,
        )
        if not self.keys.accepts(given):
            problem = "an API key is required" if given is None else "the API key is not valid"
            raise RpcError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"authorization: {problem}; send metadata x-api-key or authorization: Bearer",
            )

    def authorize(self, context: grpc.aio.ServicerContext) -> None:
        """Load and unload exist only with an admin token, sent as ``authorization``
        metadata (``Bearer <token>``), as over REST."""
        if self.admin_token is None:
            raise RpcError(
                grpc.StatusCode.UNIMPLEMENTED,
                "model repository load and unload are off: the server has no ADMIN_TOKEN",
            )
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        given = metadata.get("authorization")
        if not isinstance(given, str) or not token_matches(given, self.admin_token):
            raise RpcError(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization: a valid bearer token is required (metadata authorization)",
            )
