"""Response bodies of the native API, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.artifacts import InputField


class ClassPrediction(BaseModel):
    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="probability of every class")
    unknown_categories: list[str] = Field(
        default_factory=list,
        description="fields whose category the model never saw; encoded as training decided",
    )
    out_of_range: list[str] = Field(
        default_factory=list, description="numeric fields outside the range training saw"
    )
    canonical: dict[str, str] = Field(
        default_factory=dict,
        description="field -> the training value used, where the value sent matched only "
        "after normalising case, spaces, hyphens and underscores",
    )
    prepared: list[list[int]] | None = Field(
        None, description='the 28x28 input an image became (when asked with "prepare")'
    )
    explanation: dict[str, Any] | None = Field(
        None, description='per raw field, its Shapley value (when asked with "explain")'
    )


class ValuePrediction(BaseModel):
    prediction: float = Field(description="the predicted value (a regression model)")
    unknown_categories: list[str] = Field(default_factory=list)
    out_of_range: list[str] = Field(
        default_factory=list, description="numbers outside the range seen in training"
    )
    canonical: dict[str, str] = Field(
        default_factory=dict, description="categories read as a training value after normalising"
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[ClassPrediction | ValuePrediction] = Field(
        description="one per instance: classes for a classifier, a value for a regression"
    )


class VersionInfo(BaseModel):
    version: int
    status: str
    reason: str = ""
    runtime: str | None = None
    device: str | None = None
    load_seconds: float | None = None


class ModelSummary(BaseModel):
    name: str
    default_version: int | None = Field(
        description="the version unpinned requests reach: 'stable' if set, else the highest"
    )
    labels: dict[str, int] = Field(default_factory=dict, description="label to version")
    canary_percent: float = Field(0, description="share of default traffic sent to 'canary'")
    versions: list[VersionInfo]


class ModelMetadata(ModelSummary):
    version: int | None = Field(description="the version this card describes")
    title: str | None = None
    description: str | None = None
    classes: list[str] = []
    inputs: list[InputField] = []
    metrics: dict[str, Any] = {}
    card: dict[str, Any] | None = Field(None, description="the full model card")


# --------------------------------------------------------------------- errors
class ErrorDetail(BaseModel):
    field: str = Field(description="where the problem lies, e.g. instances[0].age")
    problem: str


class ErrorBody(BaseModel):
    """Every error answer, whatever the protocol (``app.api.errors.ERROR_BODY``)."""

    error: str = Field(description="what is wrong, naming the field")
    detail: list[ErrorDetail] | None = Field(None, description="native API: one entry per problem")


# --------------------------------------------------------------------- health
class Liveness(BaseModel):
    status: str = Field(description='always "alive" when the process answers')


class VersionReadiness(BaseModel):
    name: str
    version: int
    status: str = Field(description="LOADING, AVAILABLE, FAILED or UNLOADED")
    reason: str = Field(description="why a version failed to load; empty otherwise")


class Readiness(BaseModel):
    status: str = Field(description="ready, loading or unavailable")
    models: list[VersionReadiness]


# ------------------------------------------- Open Inference Protocol v2 (REST)
# https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md
Datatype = Field(
    description="BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES",
    examples=["FP32"],
)


class RequestInput(BaseModel):
    """``$request_input``: one named input tensor."""

    name: str
    shape: list[int] = Field(description="the tensor's shape; the first dimension is the batch")
    datatype: str = Datatype
    parameters: dict[str, Any] | None = Field(
        None, description='e.g. {"binary_data_size": n} with the binary tensor data extension'
    )
    data: list[Any] = Field(
        description="the tensor's values in row-major order, flat or nested as the shape"
    )


class RequestOutput(BaseModel):
    """``$request_output``: one output the client wants back."""

    name: str = Field(description="probabilities or label")
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data": true} asks for the output as binary data'
    )


class InferenceRequest(BaseModel):
    """``$inference_request``: named input tensors, and optionally the outputs wanted."""

    id: str | None = Field(None, description="echoed in the response")
    parameters: dict[str, Any] | None = Field(
        None, description='e.g. {"timeout": microseconds}: this request\'s own deadline'
    )
    inputs: list[RequestInput] = Field(description="one tensor per model input (see metadata)")
    outputs: list[RequestOutput] | None = Field(None, description="absent: every output")


class ResponseOutput(BaseModel):
    """``$response_output``: one named output tensor."""

    name: str
    shape: list[int]
    datatype: str = Datatype
    parameters: dict[str, Any] | None = Field(
        None, description="probabilities: the class order, as a JSON array in a string"
    )
    data: list[Any] | None = Field(None, description="absent when sent as binary data")


class InferenceResponse(BaseModel):
    """``$inference_response``."""

    model_name: str
    model_version: str | None = None
    id: str | None = Field(None, description="the request's id")
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class ServerMetadata(BaseModel):
    """``$metadata_server_response``."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    """``$metadata_tensor``."""

    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size")
    parameters: dict[str, Any] | None = None


class ModelMetadataV2(BaseModel):
    """``$metadata_model_response``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = None


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ModelStatistics(BaseModel):
    """Triton's statistics extension: ``{"model_stats": [...]}``."""

    model_stats: list[dict[str, Any]] = Field(
        description="per version: name, version, last_inference, inference_count, "
        "execution_count, inference_stats (count and ns per phase), batch_stats"
    )


class RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, LOADING, UNAVAILABLE")
    reason: str


# ---------------------------------------------------------- TensorFlow Serving
class TFServingPredictRequest(BaseModel):
    """Row format (``instances``) or columnar format (``inputs``); one of the two."""

    signature_name: str | None = Field(None, description="only serving_default exists")
    instances: list[Any] | None = Field(None, description="row format: one object per instance")
    inputs: dict[str, Any] | list[Any] | None = Field(
        None, description="columnar format: one list per input name"
    )


class TFServingPredictResponse(BaseModel):
    predictions: list[dict[str, Any]] | None = Field(
        None,
        description="row format: per instance, probabilities (class order as the "
        "metadata's classes) and label",
    )
    outputs: dict[str, Any] | None = Field(None, description="columnar format: one list per output")


class TFServingVersionStatus(BaseModel):
    version: str
    state: str = Field(description="LOADING, AVAILABLE or END")
    status: dict[str, str] = Field(description="error_code and error_message")


class TFServingModelStatus(BaseModel):
    model_version_status: list[TFServingVersionStatus]


class TFServingMetadata(BaseModel):
    model_spec: dict[str, str]
    metadata: dict[str, Any] = Field(description="signature_def, and classes in output order")
