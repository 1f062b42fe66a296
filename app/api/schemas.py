"""Per-model request and response schemas, generated from each model card.

The card lists every raw input with its type, bounds and known values, so the
schema a client sees in /docs is the schema the model was trained on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from app.artifacts import InputField, ModelCard


def _number_only(value: Any) -> Any:
    """Reject booleans and strings before Pydantic's lax mode turns them into numbers:
    ``true`` is not an age and ``"45"`` is not what the schema promises."""
    if isinstance(value, bool | str):
        kind = "a boolean" if isinstance(value, bool) else "a string"
        raise PydanticCustomError(
            "number_type", "Input should be a number, got {kind}", {"kind": kind}
        )
    return value


def _field_type(field: InputField) -> tuple[Any, Any]:
    """A Pydantic (annotation, FieldInfo) pair for one raw input."""
    description = field.description
    if field.type in ("number", "integer"):
        base: Any = int if field.type == "integer" else float
        seen = ""
        if field.seen_min is not None:
            seen = f" Seen in training: {field.seen_min:g} to {field.seen_max:g}."
        info = Field(
            ge=field.minimum,
            le=field.maximum,
            allow_inf_nan=False,
            description=description + seen,
        )
        # the Field must come first: after a validator its bounds leave the JSON schema
        annotation: Any = Annotated[base, info, BeforeValidator(_number_only)]
    elif field.type == "ordinal":
        annotation = Literal[tuple(field.allowed or ())]
        annotation = Annotated[annotation, Field(description=f"{description} (ordered levels)")]
    elif field.type == "category":
        known = ", ".join(field.allowed or ())
        annotation = Annotated[
            str,
            Field(
                max_length=200,
                description=f"{description}. Known values: {known}. Other values are accepted "
                "and flagged in unknown_categories.",
                json_schema_extra={"x-known-values": list(field.allowed or ())},
            ),
        ]
    else:
        raise ValueError(f"no schema for input type {field.type}")
    if field.nullable:
        annotation = Annotated[
            annotation | None,
            Field(description=f'{description}. Missing: null or "?".'),
        ]
        return annotation, None
    return annotation, ...


def _class_name(card: ModelCard, suffix: str) -> str:
    return "".join(p.capitalize() for p in card.name.replace("-", "_").split("_")) + suffix


def instance_model(card: ModelCard) -> type[BaseModel]:
    """One record for a tabular model, or one image for an image model."""
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [card.example]})
    if card.inputs and card.inputs[0].type == "image":
        pixels = Annotated[float, Field(ge=0, le=255)]
        return create_model(
            _class_name(card, "Instance"),
            __config__=config,
            image=(
                list[list[pixels]] | list[pixels],
                Field(description="28x28 rows (or 784 flat) of intensities 0-255, white on black"),
            ),
        )
    fields: dict[str, Any] = {f.name: _field_type(f) for f in card.inputs}
    return create_model(_class_name(card, "Instance"), __config__=config, **fields)


def request_model(
    card: ModelCard, instance: type[BaseModel], max_instances: int
) -> type[BaseModel]:
    batch = create_model(
        _class_name(card, "Batch"),
        __config__=ConfigDict(
            extra="forbid", json_schema_extra={"examples": [{"instances": [card.example]}]}
        ),
        instances=(
            list[instance],  # type: ignore[valid-type]
            Field(min_length=1, max_length=max_instances, description="one or more instances"),
        ),
    )
    return batch


class ClassPrediction(BaseModel):
    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="probability of every class")
    unknown_categories: list[str] = Field(
        default_factory=list,
        description="fields whose category the model never saw; encoded as training decided",
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[ClassPrediction]


class VersionInfo(BaseModel):
    version: int
    status: str
    reason: str = ""
    runtime: str | None = None
    device: str | None = None
    load_seconds: float | None = None


class ModelSummary(BaseModel):
    name: str
    default_version: int | None
    versions: list[VersionInfo]


class ModelMetadata(ModelSummary):
    version: int | None = Field(description="the version this card describes")
    title: str | None = None
    description: str | None = None
    classes: list[str] = []
    inputs: list[InputField] = []
    metrics: dict[str, Any] = {}
    card: dict[str, Any] | None = Field(None, description="the full model card")
