"""``keras-serve import``: turn a user's own Keras model into a served version.

It writes what training writes (``models/<name>/<version>/``: the network as ONNX,
checked against Keras, ``pipeline.json``, the card, and a plot when a history is
given), so the service treats it like any built-in model: validation, encoding,
every protocol, docs, playground and metrics.

Where the encoding comes from, in order:

1. **Keras preprocessing layers** in the model. Each named ``Input`` may pass through
   ``Normalization`` (a number, standardised), ``StringLookup`` or ``IntegerLookup``
   with one-hot output (directly, or ``output_mode="int"`` followed by
   ``CategoryEncoding``) (a category; an ``IntegerLookup``'s values are whole numbers),
   or ``Discretization`` (a number, binned: that layer stays in the served network,
   which ONNX cannot express, so TensorFlow serves it), and every input then meets one
   ``Concatenate`` (or a ``FeatureSpace``'s own, for a model built from
   ``get_encoded_features()``). The other layers are read into ``pipeline.json``; the
   network after the ``Concatenate`` is what is exported. ``Hashing``,
   ``HashedCrossing``, ``TextVectorization`` and a ``FeatureSpace`` applied as one layer
   are refused with the layer's name.
2. **An input description** (YAML or JSON) for a plain network on one input vector:
   each raw field's type and values, in the order the vector was built; statistics
   not given are learned from a sample (CSV, or Parquet with pyarrow).

The whole import is checked end to end: the original Keras model on raw rows and the
served path (pipeline, then ONNX Runtime) must agree to 1e-5. Where the network
cannot be exported to ONNX, the version is served with the TensorFlow runtime and
its card says so (``runtime: tensorflow``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.artifacts import (
    HISTORY_PLOT,
    KERAS_FILE,
    ONNX_FILE,
    PIPELINE_FILE,
    SAVED_MODEL_DIR,
    Metrics,
    ModelCard,
    OutputHead,
    parse_version,
    version_dirs,
    write_card,
)
from app.encoding import TabularPipeline, save_pipeline

if TYPE_CHECKING:
    import keras

TOLERANCE = 1e-5


def difference(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference, relative to the value where it exceeds 1: probabilities are
    compared to 1e-5 absolutely, a regression's prices to 1e-5 of their size (float32
    carries about 7 digits, so 1e-5 absolute is out of reach for values near 100)."""
    scale = np.maximum(1.0, np.abs(expected))
    return float((np.abs(np.asarray(got) - expected) / scale).max())


CHECK_ROWS = 256
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SUPPORTED_LAYERS = (
    "Normalization",
    "StringLookup",
    "IntegerLookup",
    "CategoryEncoding",
    "Discretization",
)
# FeatureSpace.get_encoded_features() joins its inputs with its own TFDConcat layer
CONCATENATIONS = frozenset({"Concatenate", "TFDConcat"})
FEATURE_SPACE = (
    "layer {name!r} (FeatureSpace) is applied as one layer, and its preprocessing cannot "
    "be read from it; build the model from feature_space.get_inputs() and "
    "feature_space.get_encoded_features() (its Normalization, StringLookup, IntegerLookup, "
    "Discretization and CategoryEncoding layers are then read one by one), or apply the "
    "FeatureSpace outside the model and import the network with --description"
)
PREPROCESSING_LAYERS = frozenset(
    {
        *SUPPORTED_LAYERS,
        "IntegerLookup",
        "Discretization",
        "Hashing",
        "HashedCrossing",
        "TextVectorization",
        "FeatureSpace",
    }
)
UNSEEN = "__never_seen_in_training__"


class ImportProblem(Exception):
    """A model or description the importer cannot serve; the message names the culprit."""


# ------------------------------------------------------------- the description
class FieldDescription(BaseModel):
    """One raw field of a plain model, in the order the model's input vector holds it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    type: Literal["number", "integer", "category", "ordinal"]
    description: str = ""
    values: list[str] | None = Field(
        None, description="category: one-hot columns in this order; ordinal: levels, lowest first"
    )
    minimum: float | None = None
    maximum: float | None = None
    scale: Literal["standardize", "none"] = Field(
        "standardize", description="numbers: (x - mean) / std, or fed as they are"
    )
    mean: float | None = None
    std: float | None = Field(None, gt=0)


Task = Literal["binary", "multiclass", "regression"]
Activation = Literal["sigmoid", "softmax", "linear"]


class OutputDescription(BaseModel):
    """One output of a multi-output model, by its Keras name."""

    model_config = ConfigDict(extra="forbid")

    task: Task | None = None
    classes: list[str] | None = None


class Description(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    description: str | None = None
    task: Literal["binary", "multiclass", "regression"] | None = None
    classes: list[str] | None = None
    target: str | None = Field(None, description="the sample's label column, for metrics")
    inputs: list[FieldDescription] = Field(default_factory=list)
    outputs: dict[str, OutputDescription] = Field(
        default_factory=dict, description="a multi-output model's outputs: task and classes"
    )


def read_description(path: Path) -> Description:
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ImportProblem(f"{path}: cannot read the description: {exc}") from None
    except Exception as exc:  # yaml.YAMLError and kin
        raise ImportProblem(f"{path}: not valid YAML: {exc}") from None
    try:
        return Description.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ImportProblem(f"{path}: {problems}") from None


def read_sample(path: Path) -> Any:
    import pandas as pd

    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except ImportError as exc:
        raise ImportProblem(f"{path}: reading Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError) as exc:
        raise ImportProblem(f"{path}: cannot read the sample: {exc}") from None


# ------------------------------------------------------------------ features
def numeric_feature(
    name: str,
    mean: float,
    std: float,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    seen: tuple[float, float] | None = None,
    description: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "numeric",
        "description": description,
        "allow_missing": False,
        "missing_markers": [],
        "ignored": False,
        "minimum": minimum,
        "maximum": maximum,
        "integer": integer,
        "transform": "none",
        "mean": float(mean),
        "std": float(std),
        "seen_min": seen[0] if seen else None,
        "seen_max": seen[1] if seen else None,
    }


def categorical_feature(
    name: str, vocabulary: list[str], other: bool, description: str = "", integer: bool = False
) -> dict[str, Any]:
    feature = {
        "name": name,
        "type": "categorical",
        "description": description,
        "allow_missing": False,
        "missing_markers": [],
        "ignored": False,
        "vocabulary": vocabulary,
        "rare": [],
        "unknown": "other" if other else "zeros",
    }
    if integer:  # IntegerLookup: the values are whole numbers, sent as numbers or strings
        feature["integer"] = True
    return feature


def typed(feature: Mapping[str, Any], value: str) -> Any:
    """A category value as a client sends it: an IntegerLookup's values are numbers."""
    return int(value) if feature.get("integer") else value


def unseen(feature: Mapping[str, Any]) -> Any:
    """A category value training never saw (it exercises the out-of-vocabulary column)."""
    if feature.get("integer"):
        return max(int(v) for v in feature["vocabulary"]) + 1
    return UNSEEN


def ordinal_feature(name: str, order: list[str], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "type": "ordinal",
        "description": description,
        "allow_missing": False,
        "missing_markers": [],
        "ignored": False,
        "order": order,
    }


# --------------------------------------------------- reading preprocessing layers
class LayerReading:
    """What the preprocessing layers say: features, the raw-to-network permutation,
    and the tensor where the network proper starts (the ``Concatenate``'s output).

    ``parts`` has, per input of the ``Concatenate`` in order, the pipeline columns it
    reads and the layers kept in the served network on top of them (``Discretization``:
    the pipeline passes the raw number, the layer bins it, as in the original model)."""

    def __init__(
        self,
        features: list[dict[str, Any]],
        order: list[int],
        start: Any,
        notes: list[str],
        parts: list[tuple[list[int], list[Any]]] | None = None,
    ) -> None:
        self.features = features
        self.order = order  # network column j reads pipeline column order[j]
        self.start = start
        self.notes = notes
        self.parts = parts or []

    @property
    def keeps_layers(self) -> bool:
        return any(layers for _, layers in self.parts)


def _kind(layer: Any) -> str:
    return type(layer).__name__


def _inbound(layer: Any) -> list[Any]:
    import keras

    return list(keras.tree.flatten(layer.input))


def read_layers(model: keras.Model) -> LayerReading:
    """Read each input's preprocessing chain up to the one ``Concatenate``."""
    import keras

    producer = {id(layer.output): layer for layer in model.layers}
    starts = PREPROCESSING_LAYERS | {"InputLayer"}
    concats = [
        layer
        for layer in model.layers
        if _kind(layer) in CONCATENATIONS
        and any(_kind(producer.get(id(t))) in starts for t in _inbound(layer))
    ]
    for layer in model.layers:
        kind = _kind(layer)
        if kind == "FeatureSpace":
            raise ImportProblem(FEATURE_SPACE.format(name=layer.name))
        if kind in PREPROCESSING_LAYERS and kind not in SUPPORTED_LAYERS:
            raise ImportProblem(
                f"layer {layer.name!r} ({kind}) is not supported; the importer reads "
                f"{', '.join(SUPPORTED_LAYERS)} (see 'keras-serve import --help')"
            )
    if len(concats) != 1:
        raise ImportProblem(
            "the model's inputs must each pass through their preprocessing layers into one "
            f"Concatenate layer; found {len(concats)} such Concatenate layers"
        )
    concat = concats[0]
    if concat.axis not in (-1, 1):
        raise ImportProblem(f"layer {concat.name!r}: only Concatenate(axis=-1) is supported")
    features: list[dict[str, Any]] = []
    order: list[int] = []
    notes: list[str] = []
    parts: list[tuple[list[int], list[Any]]] = []
    offset = 0
    for tensor in _inbound(concat):
        chain: list[Any] = []
        layer = producer.get(id(tensor))
        while layer is not None and _kind(layer) != "InputLayer":
            if len(_inbound(layer)) != 1:
                raise ImportProblem(
                    f"layer {layer.name!r} ({_kind(layer)}) between an input and "
                    f"{concat.name!r} takes several inputs; only one-input preprocessing "
                    "chains are supported"
                )
            chain.append(layer)
            layer = producer.get(id(_inbound(layer)[0]))
        if layer is None:
            raise ImportProblem(f"layer {concat.name!r}: an input of it is not a model input")
        name = layer.name
        chain.reverse()
        feature, columns, note, kept = _read_chain(name, chain, layer)
        features.append(feature)
        notes.append(note)
        order.extend(offset + c for c in columns)
        parts.append(([offset + c for c in columns], kept))
        offset += len(columns)
    names = [f["name"] for f in features]
    inputs = [producer[id(t)].name for t in keras.tree.flatten(model.inputs)]
    unused = [n for n in inputs if n not in names]
    if unused:
        raise ImportProblem(
            f"input {unused[0]!r} does not reach {concat.name!r}; every input must pass "
            "through its preprocessing into the one Concatenate"
        )
    if len(set(names)) != len(names):
        raise ImportProblem(f"an input feeds {concat.name!r} twice: {names}")
    return LayerReading(features, order, concat.output, notes, parts)


def _read_chain(
    name: str, chain: list[Any], input_layer: Any
) -> tuple[dict[str, Any], list[int], str, list[Any]]:
    """One input's feature, for each network column the pipeline column it reads, a
    note, and the layers kept in the served network (``Discretization``)."""
    kinds = [_kind(layer) for layer in chain]
    shape = tuple(input_layer.output.shape)
    if shape[1:] not in ((1,), ()):
        raise ImportProblem(
            f"input {name!r}: shape {list(shape)}; one value per field is supported"
        )
    dtype = str(input_layer.output.dtype)
    if kinds == []:
        if "string" in dtype:
            raise ImportProblem(f"input {name!r} is a string fed to the network unencoded")
        return (
            numeric_feature(name, 0.0, 1.0, integer="int" in dtype),
            [0],
            f"{name}: number, as is",
            [],
        )
    if kinds == ["Normalization"]:
        layer = chain[0]
        mean = np.asarray(layer.mean, dtype=np.float64).reshape(-1)
        variance = np.asarray(layer.variance, dtype=np.float64).reshape(-1)
        if mean.size != 1 or getattr(layer, "invert", False):
            raise ImportProblem(
                f"layer {layer.name!r} (Normalization): one scalar mean per input is supported"
            )
        std = max(math.sqrt(float(variance[0])), 1e-7)  # Keras: max(sqrt(var), epsilon)
        feature = numeric_feature(name, float(mean[0]), std, integer="int" in dtype)
        return (
            feature,
            [0],
            f"{name}: number, standardised by {layer.name!r} (mean {mean[0]:.4g}, std {std:.4g})",
            [],
        )
    if kinds and kinds[0] == "Discretization":
        return _read_discretization(name, chain, kinds, dtype)
    if kinds and kinds[0] in ("StringLookup", "IntegerLookup"):
        lookup, kind = chain[0], kinds[0]
        if lookup.mask_token is not None or lookup.invert:
            raise ImportProblem(
                f"layer {lookup.name!r} ({kind}): mask tokens and invert are not supported"
            )
        oov = int(lookup.num_oov_indices)
        if oov > 1:
            raise ImportProblem(f"layer {lookup.name!r} ({kind}): num_oov_indices must be 0 or 1")
        vocabulary = [str(v) for v in lookup.get_vocabulary(include_special_tokens=False)]
        width = oov + len(vocabulary)
        if (kinds == [kind] and lookup.output_mode in ("one_hot", "multi_hot")) or (
            kinds == [kind, "CategoryEncoding"]
            and lookup.output_mode == "int"
            and chain[1].output_mode in ("one_hot", "multi_hot")
            and int(chain[1].num_tokens) == width
        ):
            pass
        else:
            described = " -> ".join(f"{layer.name} ({_kind(layer)})" for layer in chain)
            raise ImportProblem(
                f"input {name!r}: {described} is not supported; use {kind} with "
                "output_mode='one_hot', or output_mode='int' then CategoryEncoding(one_hot) "
                "with num_tokens = vocabulary size"
            )
        # Keras puts the out-of-vocabulary column first; the pipeline puts "other" last
        columns = [len(vocabulary)] * oov + list(range(len(vocabulary)))
        integer = kind == "IntegerLookup"
        feature = categorical_feature(name, vocabulary, other=oov == 1, integer=integer)
        what = "whole-number category" if integer else "category"
        note = f"{name}: {what} of {len(vocabulary)} values, one-hot by {lookup.name!r}"
        return feature, columns, note + (" (others share a column)" if oov else ""), []
    described = " -> ".join(f"{layer.name} ({_kind(layer)})" for layer in chain)
    raise ImportProblem(
        f"input {name!r}: {described} is not supported (supported: {', '.join(SUPPORTED_LAYERS)})"
    )


def _read_discretization(
    name: str, chain: list[Any], kinds: list[str], dtype: str
) -> tuple[dict[str, Any], list[int], str, list[Any]]:
    """A binned number: the field is the raw number, and the bins stay in the network
    (ONNX has no Bucketize, so such a version is served by TensorFlow)."""
    layer = chain[0]
    boundaries = getattr(layer, "bin_boundaries", None)
    encoded = kinds == ["Discretization"] or (
        kinds == ["Discretization", "CategoryEncoding"] and layer.output_mode == "int"
    )
    if boundaries is None or not encoded:
        described = " -> ".join(f"{c.name} ({_kind(c)})" for c in chain)
        raise ImportProblem(
            f"input {name!r}: {described} is not supported; use an adapted (or "
            "bin_boundaries) Discretization, alone or with output_mode='int' then "
            "CategoryEncoding"
        )
    edges = [float(b) for b in boundaries]
    feature = numeric_feature(
        name,
        0.0,
        1.0,
        integer="int" in dtype,
        description=f"binned at {edges} inside the network",
    )
    note = f"{name}: number, binned at {edges} by {layer.name!r} inside the served network"
    return feature, [0], note, list(chain)


# ------------------------------------------------------------ plain models
def describe_plain(description: Description, sample: Any) -> list[dict[str, Any]]:
    """Features of a plain model from its description, statistics from the sample."""
    if not description.inputs:
        raise ImportProblem(
            "the model has no preprocessing layers: pass --description with its inputs "
            "(see 'Serve your own model' in the README)"
        )
    features = []
    for field in description.inputs:
        column = None
        if sample is not None:
            if field.name not in sample.columns:
                raise ImportProblem(f"input {field.name!r} is not a column of the sample")
            column = sample[field.name].dropna()
        if field.type in ("number", "integer"):
            mean, std = field.mean, field.std
            seen = None
            if column is not None:
                values = column.to_numpy(dtype=np.float64)
                seen = (float(values.min()), float(values.max()))
                mean = float(values.mean()) if mean is None else mean
                spread = float(values.std())
                std = (spread if spread > 0 else 1.0) if std is None else std
            if field.scale == "none":
                mean, std = 0.0, 1.0
            if mean is None or std is None:
                raise ImportProblem(
                    f"input {field.name!r}: give mean and std, scale: none, or a --sample"
                )
            features.append(
                numeric_feature(
                    field.name,
                    mean,
                    std,
                    field.type == "integer",
                    field.minimum,
                    field.maximum,
                    seen,
                    field.description,
                )
            )
        else:
            values = field.values
            if values is None and column is not None:
                values = sorted({str(v).strip() for v in column})
            if not values:
                raise ImportProblem(f"input {field.name!r}: give its values, or a --sample")
            if field.type == "ordinal":
                features.append(ordinal_feature(field.name, values, field.description))
            else:
                features.append(categorical_feature(field.name, values, False, field.description))
    return features


# ------------------------------------------------------------------ outputs
def read_output(
    model: keras.Model, description: Description
) -> tuple[
    Literal["binary", "multiclass", "regression"],
    Literal["sigmoid", "softmax", "linear"],
    list[str],
]:
    """The task, last activation and classes, from the final layer (or the description)."""
    if len(model.outputs) != 1:
        names = [t.name for t in model.outputs]
        raise ImportProblem(f"the model has {len(names)} outputs {names}; use read_heads")
    width = int(model.outputs[0].shape[-1] or 0)
    return _head_kind(model.layers[-1], width, description.task, description.classes)


def _head_kind(
    last: Any, width: int, task: Task | None, given: list[str] | None
) -> tuple[Task, Activation, list[str]]:
    """One output's task, activation and classes, from the layer that gives it."""
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if _kind(last) == "Softmax":
        activation = "softmax"
    if _kind(last) == "TFSMLayer":  # a SavedModel does not say its last activation
        if task is None:
            raise ImportProblem(
                "a SavedModel does not say what its output is: give task (binary, "
                "multiclass or regression) in the description"
            )
        activation = "linear" if task == "regression" else "sigmoid" if width == 1 else "softmax"
    if activation == "sigmoid" and width == 1:
        output: Activation = "sigmoid"
        task = task or "binary"
    elif activation == "softmax" and width >= 2:
        output = "softmax"
        task = task or ("binary" if width == 2 else "multiclass")
    elif activation in ("linear", None) and width == 1:
        output = "linear"
        task = task or "regression"
    else:
        raise ImportProblem(
            f"output layer {last.name!r} gives {width} value(s) with activation {activation}: "
            "supported are sigmoid (1 value, binary), softmax (2 or more, classes) and "
            "linear (1 value, regression)"
        )
    if (task == "regression") != (output == "linear"):
        raise ImportProblem(f"task {task} does not fit output layer {last.name!r} ({activation})")
    if task == "regression":
        return task, output, []
    count = 2 if output == "sigmoid" else width
    classes = given or [str(i) for i in range(count)]
    if len(classes) != count:
        raise ImportProblem(
            f"classes: {len(classes)} given, but output layer {last.name!r} gives {count}"
        )
    return task, output, classes


# the names a multi-output model's outputs may not take: the native answer's own keys
RESERVED_OUTPUTS = frozenset(
    {"probabilities", "label", "prediction", "unknown_categories", "out_of_range", "canonical"}
    | {"explanation", "prepared"}
)


def output_tensors(model: keras.Model) -> list[tuple[str, Any]]:
    """Each Keras output with its name: the dict key, or the name of the layer giving it."""
    structure = model.output
    if isinstance(structure, dict):
        return [(str(k), t) for k, t in structure.items()]
    producer = {id(layer.output): layer for layer in model.layers}
    return [(producer[id(t)].name if id(t) in producer else t.name, t) for t in model.outputs]


def read_heads(model: keras.Model, description: Description) -> list[OutputHead]:
    """A multi-output model's outputs, each to be served under its name; [] for one output."""
    if len(model.outputs) < 2:
        if description.outputs:
            raise ImportProblem("outputs: the description names outputs of a one-output model")
        return []
    named = output_tensors(model)
    producer = {id(layer.output): layer for layer in model.layers}
    heads: list[OutputHead] = []
    for name, tensor in named:
        layer = producer.get(id(tensor))
        if layer is None or len(tensor.shape) != 2:
            raise ImportProblem(
                f"output {name!r}: shape {list(tensor.shape)}; each output must be one "
                "[batch, n] tensor given by a layer (Dense, Softmax)"
            )
        given = description.outputs.get(name, OutputDescription())
        task, output, classes = _head_kind(layer, int(tensor.shape[-1]), given.task, given.classes)
        try:
            heads.append(OutputHead(name=name, task=task, output=output, classes=classes))
        except ValidationError:
            raise ImportProblem(
                f"output {name!r}: names must be letters, digits, _ . - (starting with a "
                "letter or _) to be served as tensor names"
            ) from None
    names = [h.name for h in heads]
    clashes = [n for n in names if n in RESERVED_OUTPUTS or n in {f"{m}_label" for m in names}]
    if clashes:
        raise ImportProblem(
            f"output {clashes[0]!r}: the name is taken by the served answer "
            f"({', '.join(sorted(RESERVED_OUTPUTS))}, or another output's NAME_label); "
            "rename the output"
        )
    unknown = sorted(set(description.outputs) - set(names))
    if unknown:
        raise ImportProblem(f"outputs: {unknown[0]!r} is not an output of the model ({names})")
    return heads


def joined(answer: Any, heads: Sequence[OutputHead]) -> np.ndarray:
    """The Keras model's answer as one matrix: its outputs side by side, in head order."""
    if not heads:
        return np.asarray(answer)
    if isinstance(answer, dict):
        return np.hstack([np.asarray(answer[h.name]) for h in heads])
    return np.hstack([np.asarray(a) for a in answer])


# ------------------------------------------------------------------ check rows
def synthetic_rows(
    features: Sequence[dict[str, Any]], n: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Rows that exercise every column: numbers around the mean, every category, and
    a category never seen (the out-of-vocabulary column)."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for f in features:
        for i, row in enumerate(rows):
            if f["type"] == "numeric":
                value = f["mean"] + f["std"] * float(rng.normal())
                lo, hi = f["minimum"], f["maximum"]
                value = min(
                    max(value, lo if lo is not None else value), hi if hi is not None else value
                )
                row[f["name"]] = round(value) if f["integer"] else value
            elif f["type"] == "ordinal":
                row[f["name"]] = f["order"][i % len(f["order"])]
            else:
                pool = [typed(f, v) for v in f["vocabulary"]]
                pool += [unseen(f)] if f["unknown"] == "other" else []
                row[f["name"]] = pool[i % len(pool)]
    return rows


def sample_rows(sample: Any, features: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    rows = []
    for record in sample.head(n).to_dict(orient="records"):
        row = {}
        for f in features:
            value = record[f["name"]]
            if f["type"] == "numeric":
                value = int(value) if f["integer"] else float(value)
            elif f.get("integer"):
                value = int(value)
            else:
                value = str(value).strip()
            row[f["name"]] = value
        rows.append(row)
    return rows


def keras_inputs(
    features: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Raw rows as the original model's named inputs (TensorFlow tensors: Keras takes
    strings no other way)."""
    import tensorflow as tf

    arrays: dict[str, Any] = {}
    for f in features:
        values = [row[f["name"]] for row in rows]
        if f["type"] == "numeric":
            arrays[f["name"]] = tf.constant(np.asarray(values, dtype=np.float32).reshape(-1, 1))
        elif f.get("integer"):
            arrays[f["name"]] = tf.constant(np.asarray(values, dtype=np.int64).reshape(-1, 1))
        else:
            arrays[f["name"]] = tf.constant(np.asarray(values, dtype=str).reshape(-1, 1))
    return arrays


# ---------------------------------------------------------------------- export
def network(
    model: keras.Model, reading: LayerReading | None, heads: Sequence[OutputHead] = ()
) -> keras.Model:
    """The network the service runs: on the pipeline's matrix, in the pipeline's order,
    with a multi-output model's outputs side by side in one matrix (so every runtime
    gives one array, cut back into named outputs when served)."""
    import keras

    tensors = [t for _, t in output_tensors(model)] if heads else [model.outputs[0]]
    if reading is None:
        if not heads:
            return model
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        together = keras.layers.Concatenate(name="outputs")(tensors)
        return keras.Model(inputs, together, name=f"{model.name}_network")
    body = keras.Model(reading.start, tensors if heads else tensors[0])
    if reading.keeps_layers:
        return _network_with_kept_layers(reading, body, f"{model.name}_network")
    order = reading.order
    inputs = keras.Input(shape=(len(order),), name="encoded")
    x = inputs
    if order != list(range(len(order))):  # an exact permutation: 0/1 weights, no bias
        permutation = np.zeros((len(order), len(order)), dtype=np.float32)
        for j, source in enumerate(order):
            permutation[source, j] = 1.0
        layer = keras.layers.Dense(len(order), use_bias=False, trainable=False, name="columns")
        x = layer(x)
        layer.set_weights([permutation])
    return keras.Model(inputs, _side_by_side(body(x)), name=f"{model.name}_network")


def _side_by_side(outputs: Any) -> Any:
    """Several outputs as one matrix (one array from every runtime); one as it is."""
    import keras

    if isinstance(outputs, (list, tuple)):
        return keras.layers.Concatenate(name="outputs")(list(outputs))
    return outputs


def _selection(width: int, columns: list[int], name: str) -> Any:
    """A Dense layer of 0/1 weights picking ``columns`` of the pipeline's matrix exactly."""
    import keras

    pick = keras.layers.Dense(len(columns), use_bias=False, trainable=False, name=name)
    pick.build((None, width))
    weights = np.zeros((width, len(columns)), dtype=np.float32)
    for j, source in enumerate(columns):
        weights[source, j] = 1.0
    pick.set_weights([weights])
    return pick


def _network_with_kept_layers(reading: LayerReading, body: keras.Model, name: str) -> keras.Model:
    """Each input's columns picked from the pipeline's matrix, the kept layers applied to
    them (the original layer objects, so their state is the model's), then the body."""
    import keras

    width = 1 + max(c for columns, _ in reading.parts for c in columns)
    inputs = keras.Input(shape=(width,), name="encoded")
    pieces = []
    for i, (columns, layers) in enumerate(reading.parts):
        x = _selection(width, columns, f"columns_{i}")(inputs)
        for layer in layers:
            x = layer(x)
        pieces.append(x)
    joined = (
        keras.layers.Concatenate(name="encoded_inputs")(pieces) if len(pieces) > 1 else pieces[0]
    )
    return keras.Model(inputs, _side_by_side(body(joined)), name=name)


def export(
    net: keras.Model, staging: Path, encoded: np.ndarray
) -> tuple[Literal["onnx", "tensorflow"], float | None, str]:
    """ONNX when the network converts and agrees to 1e-5; the SavedModel always."""
    from training.export import onnx_outputs

    net.save(staging / KERAS_FILE)
    net.export(str(staging / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
    expected = np.asarray(net(encoded.astype(np.float32), training=False))
    try:
        net.export(str(staging / ONNX_FILE), format="onnx", verbose=False)
        diff = difference(onnx_outputs(staging / ONNX_FILE, encoded), expected)
    except Exception as exc:  # converters raise anything; the reason goes to the card
        (staging / ONNX_FILE).unlink(missing_ok=True)
        return "tensorflow", None, f"ONNX export failed ({type(exc).__name__}: {exc})"[:300]
    if diff > TOLERANCE:
        (staging / ONNX_FILE).unlink()
        return "tensorflow", diff, f"ONNX differs from Keras by {diff:.1e}"
    return "onnx", diff, ""


def plot(history_path: Path, title: str, path: Path) -> bool:
    """Loss (and accuracy or MAE where logged) per epoch, validation beside training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        history = json.loads(history_path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportProblem(f"{history_path}: cannot read the history: {exc}") from None
    history = history.get("history", history)  # keras History.history, or a dump of it
    shown = [m for m in ("loss", "accuracy", "mae") if isinstance(history.get(m), list)]
    if "loss" not in shown:
        raise ImportProblem(f"{history_path}: a history needs a 'loss' list (History.history)")
    fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], shown, strict=True):
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], label="training")
        if isinstance(history.get(f"val_{metric}"), list):
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


# ------------------------------------------------------------------- metrics
def sample_metrics(
    sample: Any, target: str, probabilities: np.ndarray, task: str, classes: list[str]
) -> Metrics:
    truth = sample[target].head(len(probabilities))
    if task == "regression":
        error = probabilities[:, 0] - truth.to_numpy(dtype=np.float64)
        return Metrics(
            rows=len(error),
            mae=float(np.abs(error).mean()),
            rmse=float(np.sqrt((error**2).mean())),
        )
    predicted = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    return Metrics(
        rows=len(predicted),
        accuracy=float((predicted == truth.astype(str).str.strip().to_numpy()).mean()),
    )


# ---------------------------------------------------------------------- import
def load_keras(path: Path) -> keras.Model:
    import keras

    if not path.exists():
        raise ImportProblem(f"{path}: no such file or directory")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ImportProblem(f"{path}: a directory without saved_model.pb is no SavedModel")
        try:
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
        except Exception as exc:
            raise ImportProblem(f"{path}: cannot load the SavedModel: {exc}") from None
        return _wrap_saved_model(layer, path)
    if path.suffix != ".keras":
        raise ImportProblem(f"{path}: expected a .keras file or a SavedModel directory")
    try:
        return keras.saving.load_model(str(path), safe_mode=True)
    except Exception as exc:
        raise ImportProblem(f"{path}: cannot load the Keras model: {exc}") from None


def _wrap_saved_model(layer: Any, path: Path) -> keras.Model:
    """A SavedModel's serving signature as a one-input Keras model (a plain network)."""
    import keras
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = list(signature.structured_input_signature[1].values())
    if len(specs) != 1 or len(specs[0].shape) != 2:
        raise ImportProblem("the SavedModel's serving_default must take one [batch, n] input")
    inputs = keras.Input(shape=(int(specs[0].shape[1]),), name=specs[0].name or "x")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ImportProblem(f"the SavedModel gives outputs {sorted(outputs)}; one is supported")
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs)


def import_model(
    path: Path,
    name: str,
    models_dir: Path,
    version: int | None = None,
    description_path: Path | None = None,
    sample_path: Path | None = None,
    history_path: Path | None = None,
    overwrite: bool = False,
    title: str | None = None,
) -> tuple[ModelCard, Path, list[str]]:
    """Import one model; returns its card, its directory and what was inferred."""
    from training.fit import tabular_fields  # the card's fields, as training writes them

    started = time.perf_counter()
    description = read_description(description_path) if description_path else Description()
    sample = read_sample(sample_path) if sample_path else None
    existing = [v for n, v, _ in version_dirs(models_dir) if n == name]
    version = version or (max(existing) + 1 if existing else 1)
    destination = models_dir / name / str(version)
    if destination.exists() and not overwrite:
        raise ImportProblem(f"{destination} exists already; pass --overwrite to replace it")

    model = load_keras(path)
    preprocessing = [layer for layer in model.layers if _kind(layer) in PREPROCESSING_LAYERS]
    if preprocessing:
        if description.inputs:
            raise ImportProblem(
                f"the model reads its inputs with layer {preprocessing[0].name!r}; "
                "leave the inputs out of the description"
            )
        reading: LayerReading | None = read_layers(model)
        assert reading is not None
        features, notes = reading.features, reading.notes
    else:
        reading = None
        features = describe_plain(description, sample)
        notes = [_describe(f) for f in features]
        width = int(model.inputs[0].shape[-1] or 0) if len(model.inputs) == 1 else -1
        pipeline_width = TabularPipeline(features).width
        if width != pipeline_width:
            raise ImportProblem(
                f"the model's input {model.inputs[0].name if model.inputs else '?'!r} takes "
                f"{width} values, but the description encodes {pipeline_width} "
                "(a number: 1, a category: one per value, an ordinal: 1)"
            )
    heads = read_heads(model, description)
    if heads:  # the card's task, output and classes repeat the first output's
        task, output, classes = heads[0].task, heads[0].output, list(heads[0].classes)
    else:
        task, output, classes = read_output(model, description)
    pipeline = TabularPipeline(features)

    if sample is not None:
        rows = sample_rows(sample, features, CHECK_ROWS)
    else:
        rows = synthetic_rows(features, CHECK_ROWS)
    encoded = pipeline.encode_rows(rows).matrix
    raw = keras_inputs(features, rows) if reading is not None else encoded
    reference = joined(model(raw, training=False), heads)
    net = network(model, reading, heads)

    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=_mkdir(models_dir / name)))
    try:
        runtime, diff, why = export(net, staging, encoded)
        served = np.asarray(net(encoded, training=False))
        if runtime == "onnx":
            from training.export import onnx_outputs

            served = onnx_outputs(staging / ONNX_FILE, encoded)
        end_to_end = difference(served, reference)
        if end_to_end > TOLERANCE:
            raise ImportProblem(
                f"the served path differs from the Keras model by {end_to_end:.2e} on "
                f"{len(rows)} rows; the preprocessing was not read faithfully"
            )
        save_pipeline(pipeline, staging / PIPELINE_FILE)
        metrics: dict[str, Metrics] = {}
        probabilities = reference if output != "sigmoid" else np.hstack([1 - reference, reference])
        if sample is not None and description.target and not heads:
            if description.target not in sample.columns:
                raise ImportProblem(f"target: {description.target!r} is not a column of the sample")
            metrics["sample"] = sample_metrics(
                sample, description.target, probabilities, task, classes
            )
        notes.append(
            write_reference(
                staging,
                pipeline,
                features,
                sample,
                description,
                probabilities,
                [] if heads else classes,  # no calibration of a multi-output model
            )
        )
        example = dict(rows[0].items())
        for f in features:
            if f["type"] == "categorical" and example.get(f["name"]) == unseen(f):
                example[f["name"]] = typed(f, f["vocabulary"][0])
        if heads:
            notes.extend(
                f"output {h.name!r}: {h.task} ({h.output})"
                + (f", classes {h.classes}, labels as {h.name + '_label'!r}" if h.classes else "")
                for h in heads
            )
        else:
            notes.append(
                f"task: {task} ({output} output)" + (f", classes {classes}" if classes else "")
            )
        notes.append(
            f"runtime: {runtime}"
            + (
                f"; ONNX agrees with Keras to {diff:.1e}"
                if runtime == "onnx" and diff is not None
                else f" ({why})"
            )
        )
        notes.append(f"end-to-end check on {len(rows)} rows: max difference {end_to_end:.1e}")
        card = ModelCard(
            name=name,
            version=version,
            title=title or description.title or name,
            description=description.description or f"Imported from {path.name}.",
            task=task,
            output=output,
            classes=classes,
            inputs=tabular_fields(features),
            example=example,
            architecture=_architecture(net),
            parameters=int(model.count_params()),
            metrics=metrics,
            training_seconds=None,
            libraries=_libraries(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            runtime="tensorflow" if runtime == "tensorflow" else None,
            source=f"imported from {path.name} in {time.perf_counter() - started:.1f} s",
            heads=heads or None,
        )
        write_card(card, staging)
        if history_path is not None and plot(
            history_path, f"{name} v{version}", staging / HISTORY_PLOT
        ):
            notes.append("history plot written")
        if destination.exists():
            shutil.rmtree(destination)
        staging.chmod(0o755)
        staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return card, destination, notes


NO_REFERENCE = (
    "insight: no --sample, so no reference.json: drift and calibration answer 404, and "
    "explanations compare against the card's example alone (import again with --sample)"
)


def write_reference(
    staging: Path,
    pipeline: TabularPipeline,
    features: Sequence[dict[str, Any]],
    sample: Any,
    description: Description,
    probabilities: np.ndarray,
    classes: list[str],
) -> str:
    """reference.json from the sample, as training writes it; the note says what it holds
    or, without a sample, which insight is unavailable."""
    from app.encoding import EncodingError
    from app.insight.reference import REFERENCE_FILE
    from training.reference import from_sample

    if sample is None:
        return NO_REFERENCE
    rows = sample_rows(sample, features, len(sample))
    labels = None
    if classes and description.target:  # measured on the rows the metrics used
        truth = sample[description.target].head(len(probabilities)).astype(str).str.strip()
        index = {c: i for i, c in enumerate(classes)}
        if set(truth) <= index.keys():
            labels = np.asarray([index[t] for t in truth], dtype=np.int64)
    try:
        found = from_sample(pipeline, rows, probabilities if labels is not None else None, labels)
    except EncodingError as exc:
        raise ImportProblem(f"sample: column {exc.field!r}: {exc.problem}") from None
    (staging / REFERENCE_FILE).write_text(json.dumps(found, indent=1) + "\n")
    held = "drift profile, explanation background" + (
        ", calibration measured (no temperature fitted)" if labels is not None else ""
    )
    return f"insight: reference.json from {len(rows)} sample rows ({held})"


def _describe(f: dict[str, Any]) -> str:
    if f["type"] == "numeric":
        if (f["mean"], f["std"]) == (0.0, 1.0):
            return f"{f['name']}: number, fed as it is"
        return f"{f['name']}: number, standardised (mean {f['mean']:.4g}, std {f['std']:.4g})"
    if f["type"] == "ordinal":
        return f"{f['name']}: ordinal, levels {f['order']}"
    return f"{f['name']}: category, one-hot over {f['vocabulary']}"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _architecture(net: keras.Model) -> str:
    kinds = [_kind(layer) for layer in net.layers if _kind(layer) != "InputLayer"]
    return " -> ".join(kinds)[:300] or "Keras model"


def _libraries() -> dict[str, str]:
    from training.fit import library_versions

    return library_versions()


# ------------------------------------------------------------------------ CLI
HELP = f"""\
Import your own Keras model as a served version of models/NAME.

Supported preprocessing layers: {", ".join(SUPPORTED_LAYERS)} (StringLookup and
IntegerLookup with one-hot output, or int output then CategoryEncoding one-hot;
Discretization alone or then CategoryEncoding, kept in the served network, which then
runs on TensorFlow), each input into one Concatenate (or a FeatureSpace's, for a model
built from get_encoded_features()). A plain network on one input vector needs
--description. Tasks: binary (sigmoid), multiclass (softmax), regression (one linear
output). --sample also writes reference.json (drift, explanation background).
"""


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = argparse.ArgumentParser(
        prog="keras-serve import",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="a .keras file or a SavedModel directory")
    parser.add_argument("--name", required=True, help="model name (letters, digits, _ . -)")
    parser.add_argument("--version", help="version number (default: the next one)")
    parser.add_argument("--description", type=Path, help="input description, YAML or JSON")
    parser.add_argument("--sample", type=Path, help="training rows, CSV or Parquet")
    parser.add_argument("--history", type=Path, help="a Keras History.history as JSON: plotted")
    parser.add_argument("--title", help="a human title for the card")
    parser.add_argument(
        "--models-dir", type=Path, default=Path(os.environ.get("MODELS_DIR", "models"))
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing version")
    args = parser.parse_args(argv)
    import re

    if not re.match(NAME_PATTERN, args.name):
        parser.error(f"--name: {args.name!r} must match {NAME_PATTERN}")
    version = None
    if args.version is not None:
        version = parse_version(args.version)
        if version is None:
            parser.error(f"--version: {args.version!r} is not a version number (1, 2, ...)")
    try:
        card, destination, notes = import_model(
            args.path,
            args.name,
            args.models_dir,
            version,
            args.description,
            args.sample,
            args.history,
            args.overwrite,
            args.title,
        )
    except ImportProblem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # never a traceback: say what failed, in one line
        print(f"error: the import failed: {type(exc).__name__}: {exc}"[:2000], file=sys.stderr)
        return 1
    print(f"imported {args.path} as {card.name} v{card.version} into {destination}")
    for note in notes:
        print(f"  {note}")
    port = os.environ.get("PORT", "8000")
    print(
        f"it answers at http://127.0.0.1:{port}/models/{card.name}/versions/{card.version}/predict"
    )
    print(
        f"  (and /v2/models/{card.name}/versions/{card.version}/infer, "
        f"/v1/models/{card.name}/versions/{card.version}:predict) once the service sees it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
