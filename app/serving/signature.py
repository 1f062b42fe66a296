"""A version's tensor signature, derived from its card: what standard protocols see.

Standard protocols speak in named, typed tensors. A tabular model takes one input
per raw field (``BYTES`` for categories, ``FP32``/``INT64`` for numbers); an image
model takes one tensor of raw intensities. Every classifier gives ``probabilities``
(class order in ``classes``) and ``label``; a regression model gives ``prediction``.
A multi-output model gives one tensor per Keras output, under that output's name
(its probabilities, or its value), and ``NAME_label`` for each classifying one.
Datatype names follow the Open Inference Protocol, which Triton, KServe and the gRPC
API share.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.artifacts import InputField, ModelCard
from app.serving.inference import LABEL, PREDICTION, PROBABILITIES, head_label

INTEGER_DATATYPES = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
)
FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})
NUMERIC_DATATYPES = INTEGER_DATATYPES | FLOAT_DATATYPES


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: its advertised datatype and shape (first of ``shapes``)."""

    name: str
    datatype: str
    shapes: tuple[tuple[int, ...], ...]  # accepted shapes; -1 is the batch dimension
    accepts: frozenset[str]  # datatypes accepted on input
    classes: tuple[str, ...] = ()  # a multi-output model's probabilities: their class order

    @property
    def shape(self) -> list[int]:
        return list(self.shapes[0])

    def fits(self, shape: Sequence[int]) -> bool:
        if len(shape) == 1 and self.shapes[0] == (-1,):  # a column: the common case
            return True
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
        return TensorSpec(
            field.name, "UINT8", ((-1, height, width), (-1, height * width)), NUMERIC_DATATYPES
        )
    if field.type in ("category", "ordinal"):
        return TensorSpec(field.name, "BYTES", ((-1,), (-1, 1)), frozenset({"BYTES"}))
    datatype = "INT64" if field.type == "integer" else "FP32"
    return TensorSpec(field.name, datatype, ((-1,), (-1, 1)), NUMERIC_DATATYPES)


@dataclass(frozen=True)
class Signature:
    """Built once per loaded version; protocol adapters read it, never the card."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    classes: tuple[str, ...]
    _by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.inputs})

    @classmethod
    def of(cls, card: ModelCard) -> Signature:
        inputs = tuple(_input_spec(f) for f in card.inputs)
        if card.heads:
            outputs: list[TensorSpec] = []
            for head in card.heads:
                if head.task == "regression":
                    outputs.append(TensorSpec(head.name, "FP32", ((-1,),), frozenset()))
                    continue
                shape = ((-1, len(head.classes)),)
                outputs.append(
                    TensorSpec(head.name, "FP32", shape, frozenset(), tuple(head.classes))
                )
                outputs.append(TensorSpec(head_label(head.name), "BYTES", ((-1,),), frozenset()))
            return cls(inputs, tuple(outputs), tuple(card.classes))
        if card.task == "regression":  # one value per instance, no classes
            prediction = TensorSpec(PREDICTION, "FP32", ((-1,),), frozenset())
            return cls(inputs, (prediction,), ())
        single = (
            TensorSpec(PROBABILITIES, "FP32", ((-1, len(card.classes)),), frozenset()),
            TensorSpec(LABEL, "BYTES", ((-1,),), frozenset()),
        )
        return cls(inputs, single, tuple(card.classes))

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    @property
    def by_name(self) -> dict[str, TensorSpec]:
        return self._by_name

    def input(self, name: str) -> TensorSpec | None:
        return self._by_name.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return next((s for s in self.outputs if s.name == name), None)

    @property
    def is_image(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].datatype == "UINT8"

    @property
    def classes_parameter(self) -> str:
        """The class order as a JSON array in a string: OIP parameter values must be
        strings, numbers or booleans."""
        return json.dumps(list(self.classes))
