"""A version's request schema as Pydantic models, generated from its card.

The card lists every raw input with its type, bounds and known values, so the
schema a client sees in /docs is the schema the version was trained on. The
encoding validates every request; these models only explain a rejection (all
problems at once, in the documented schema's words) and document the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from app.artifacts import InputField, ModelCard
from app.serving.errors import Problem


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


MAX_PROBLEMS = 20  # one bad image must not produce a 784-entry answer


class RequestSchema:
    """The Pydantic view of one version's inputs: documents them, explains rejections."""

    def __init__(self, card: ModelCard, max_instances: int) -> None:
        self.instance = instance_model(card)
        self.batch = request_model(card, self.instance, max_instances)
        self._rows: TypeAdapter[list[Any]] = TypeAdapter(list[self.instance])  # type: ignore[name-defined]

    def explain(self, rows: Sequence[Any]) -> list[Problem]:
        """Every problem Pydantic sees in ``rows`` (at most MAX_PROBLEMS), or none."""
        try:
            self._rows.validate_python(rows)
        except ValidationError as exc:
            return [_problem(err) for err in exc.errors()[:MAX_PROBLEMS]]
        return []


def _problem(err: Any) -> Problem:
    loc = list(err["loc"])
    index = loc.pop(0) if loc and isinstance(loc[0], int) else None
    # union branches add their type name to the location; it tells a client nothing
    loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p[:1].isupper()))]
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    problem = err["msg"]
    if err.get("type") == "literal_error":
        problem = f"{problem}, got {err.get('input')!r}"
    if err.get("type") == "extra_forbidden":
        problem = "unexpected field"
    return Problem(field or "body", problem, index)
