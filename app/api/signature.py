"""A model's tensor signature, derived from its card, and the bridge to the model layer.

Standard protocols speak in named tensors. This module says which tensors a model
takes and gives (one input per raw feature, or one image input; outputs
``probabilities`` and ``label``), and turns named values into the model's own
preprocessing calls and its probabilities back into named outputs. It never looks
inside a model: encoding stays in :class:`ServedModel`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.api.errors import ClientError
from app.api.tensors import FLOATS, INTEGERS
from app.artifacts import InputField, ModelCard
from app.encoding import EncodedBatch
from app.serving.model import ServedModel

PROBABILITIES = "probabilities"
LABEL = "label"
NUMERIC = INTEGERS | FLOATS


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: its advertised datatype and shape (first of ``shapes``)."""

    name: str
    datatype: str
    shapes: tuple[tuple[int, ...], ...]  # accepted shapes; -1 is the batch dimension
    accepts: frozenset[str]  # datatypes accepted on input

    @property
    def shape(self) -> list[int]:
        return list(self.shapes[0])

    def fits(self, shape: Sequence[int]) -> bool:
        return any(
            len(shape) == len(p) and all(w in (-1, s) for s, w in zip(shape, p, strict=True))
            for p in self.shapes
        )

    def shape_problem(self, shape: Sequence[int]) -> str:
        wanted = " or ".join(str(list(p)) for p in self.shapes)
        return f"shape {list(shape)} is not accepted; expected {wanted} (-1: any batch size)"

    def datatype_problem(self, datatype: str) -> str:
        if self.accepts == frozenset({self.datatype}):
            return f"datatype {datatype} is not accepted; expected {self.datatype}"
        return (
            f"datatype {datatype} is not accepted; expected {self.datatype} "
            "(any integer or floating-point datatype is also accepted)"
        )


def _input_spec(field: InputField) -> TensorSpec:
    if field.type == "image":
        height, width = field.shape or [28, 28]
        return TensorSpec(field.name, "UINT8", ((-1, height, width), (-1, height * width)), NUMERIC)
    if field.type in ("category", "ordinal"):
        return TensorSpec(field.name, "BYTES", ((-1,), (-1, 1)), frozenset({"BYTES"}))
    datatype = "INT64" if field.type == "integer" else "FP32"
    return TensorSpec(field.name, datatype, ((-1,), (-1, 1)), NUMERIC)


def version_number(text: str) -> int | None:
    """A URL's version segment as a positive integer, or None when it is not one."""
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    return None


def pinned_version(version: str | None) -> int | None:
    """A URL's version segment: both protocols carry versions as strings."""
    if version is None:
        return None
    number = version_number(version)
    if number is None:
        raise ClientError(400, f"model version must be a positive integer, got {version!r}")
    return number


def inputs(card: ModelCard) -> list[TensorSpec]:
    return [_input_spec(f) for f in card.inputs]


def outputs(card: ModelCard) -> list[TensorSpec]:
    return [
        TensorSpec(PROBABILITIES, "FP32", ((-1, len(card.classes)),), frozenset()),
        TensorSpec(LABEL, "BYTES", ((-1,),), frozenset()),
    ]


def classes_parameter(card: ModelCard) -> str:
    """The class order of ``probabilities`` as a JSON array in a string: OIP parameter
    values must be strings, numbers or booleans."""
    return json.dumps(card.classes)


def is_image(card: ModelCard) -> bool:
    return [f.type for f in card.inputs] == ["image"]


def name_problem(card: ModelCard, given: Collection[str]) -> str | None:
    """Why a set of input names does not fit the model, or None when it does."""
    expected = [f.name for f in card.inputs]
    unknown = [n for n in given if n not in expected]
    if unknown:
        return f"unknown input {unknown[0]!r}; {card.name} takes {', '.join(expected)}"
    missing = [n for n in expected if n not in given]
    if missing:
        return f"input {missing[0]!r} is missing; {card.name} takes {', '.join(expected)}"
    return None


def unwrap(value: Any) -> Any:
    """A one-element list stands for its element: per-row shape [1] as well as []."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def encode_columns(model: ServedModel, columns: Mapping[str, Sequence[Any]]) -> EncodedBatch:
    """Raw columns, one per feature and all of one length, through the model's encoding."""
    n = len(next(iter(columns.values()))) if columns else 0
    return model.preprocess_columns(columns, n)


def encode_pixels(model: ServedModel, pixels: np.ndarray) -> EncodedBatch:
    """Raw 0-255 intensities ``[N, H, W]`` or ``[N, H*W]`` through the model's encoding."""
    name = model.card.inputs[0].name
    return model.preprocess_pixels(pixels, name)


def named_outputs(model: ServedModel, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """``probabilities`` FP32 ``[N, classes]`` and ``label`` ``[N]``, labels from the model."""
    labels = np.empty(len(probabilities), dtype=object)
    labels[:] = [p.label for p in model.postprocess(probabilities)]
    return {PROBABILITIES: probabilities.astype(np.float32, copy=False), LABEL: labels}
