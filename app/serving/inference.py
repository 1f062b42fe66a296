"""The protocol-neutral inference request and response.

Every protocol adapter (native, Open Inference v2, TF Serving, gRPC) decodes its
wire format into one :class:`InferenceRequest` and encodes the
:class:`InferenceResponse` back; the data plane does everything in between.
Inputs are *raw* named values, exactly as a client sent them: validation and
encoding belong to the model version, never to a protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

PROBABILITIES = "probabilities"
LABEL = "label"
PREDICTION = "prediction"  # a regression model's one output: the predicted value
OUTPUT_NAMES = (PROBABILITIES, LABEL)


def head_label(head: str) -> str:
    """The output holding a multi-output model's labels for its classifying output ``head``."""
    return f"{head}_label"


@dataclass(frozen=True)
class Head:
    """One named output of a multi-output model: how the native API groups its tensors."""

    name: str  # its tensor: probabilities [N, classes], or a regression's values [N]
    classes: tuple[str, ...]  # () for a regression output

    @property
    def label(self) -> str:
        return head_label(self.name)


@dataclass
class Rows:
    """Instances as records: ``[{"age": 39, ...}, ...]`` (native, TF Serving rows)."""

    rows: Sequence[Any]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Columns:
    """One sequence (or array) per input, all of one length (OIP v2, TF Serving columns)."""

    columns: Mapping[str, Any]
    size: int

    def __len__(self) -> int:
        return self.size


@dataclass(slots=True)
class Tensor:
    """One named, typed tensor as a standard protocol sent it (OIP v2 over REST or gRPC).

    ``values`` is flat row-major Python data (tabular inputs) or an array of ``shape``.
    The data plane checks name, datatype and shape against the version's signature.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: Any


class TensorView(Protocol):
    """What the data plane reads of an input tensor. :class:`Tensor` is one; a protocol
    may also hand over the objects its decoder made, when they carry these four."""

    @property
    def name(self) -> str: ...
    @property
    def datatype(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def values(self) -> Any: ...


@dataclass
class Tensors:
    tensors: Sequence[TensorView]

    def __len__(self) -> int:
        first = self.tensors[0] if self.tensors else None
        return first.shape[0] if first is not None and first.shape else 0


@dataclass
class ImageFile:
    """An uploaded picture (PNG, JPEG, MPO): decoded and prepared MNIST-style in the plane."""

    data: bytes
    field: str = "file"

    def __len__(self) -> int:
        return 1


Inputs = Rows | Columns | Tensors | ImageFile


@dataclass
class InferenceRequest:
    inputs: Inputs
    outputs: Sequence[str] | None = None  # None: every output
    parameters: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    # when the client stops caring (time.monotonic()); work still queued then is dropped
    deadline: float | None = None
    # asks, without waiting, whether the client went away (HTTP: Request.is_disconnected)
    disconnected: Callable[[], Awaitable[bool]] | None = field(default=None, repr=False)
    protocol: str = ""  # native, v2, tfserving, grpc: for logs that say how it came


@dataclass
class InferenceResponse:
    """Named outputs of one version, plus per-instance notes on how inputs were read."""

    model: str
    version: int
    classes: tuple[str, ...]
    outputs: dict[str, np.ndarray]  # only the requested ones, in request order
    unknown_categories: list[list[str]]
    id: str | None = None
    # per instance, the numeric fields outside the range training saw
    out_of_range: list[list[str]] = field(default_factory=list)
    # per instance, when the request asked for explanations (app/insight/explain.py)
    explanations: list[dict[str, Any]] | None = None
    # per instance, field -> the training value used where the sent one matched only
    # after normalising case and separators ("male" -> "Male")
    canonical: list[dict[str, str]] = field(default_factory=list)
    # per instance, the 28x28 input an image became, when the request asked to ``prepare``
    prepared: list[Any] | None = None
    # a multi-output model's named outputs ((): one output, the usual tensors above)
    heads: tuple[Head, ...] = ()

    def __len__(self) -> int:
        """The number of instances answered."""
        return len(self.unknown_categories)

    def labels(self) -> list[str]:
        return [str(v) for v in self.outputs[LABEL].tolist()] if LABEL in self.outputs else []

    def classes_parameter(self, name: str) -> str | None:
        """The class order of a multi-output model's probabilities tensor ``name``, as the
        JSON-array string OIP parameters carry; None for any other tensor."""
        import json

        head = next((h for h in self.heads if h.name == name and h.classes), None)
        return json.dumps(list(head.classes)) if head is not None else None
