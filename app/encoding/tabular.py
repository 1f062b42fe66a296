"""Encoding of raw tabular records into the numeric matrix a network consumes.

The pipeline is *data*: it is fitted once on a training split (``fit``), saved as
JSON beside the model, and loaded by the service without TensorFlow. Training and
serving both call :meth:`TabularPipeline.encode`, so the two cannot drift apart.

Design decisions for values the training split did not contain:

* **missing** (``None``, NaN, or a marker such as Adult's ``"?"``): a field that was
  missing in training gets its own indicator column, so the network learned what
  "unknown" means. A field that was never missing in training rejects it.
* **unknown category** (nominal): categories seen fewer than ``min_count`` times in
  training share an "other" column; a category never seen at all goes there too,
  because that column was trained on rare values. When training had no rare
  values the unseen category sets no column at all (it contributes nothing).
  Either way the result reports it, so the service can flag it.
* **unknown ordinal level**: an order cannot place it, so it is rejected.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.encoding.errors import EncodingError

FeatureType = Literal["numeric", "categorical", "ordinal"]
MISSING = "__missing__"
OTHER = "__other__"


@dataclass(frozen=True)
class FeatureSpec:
    """What training declares about one raw field before seeing data."""

    name: str
    type: FeatureType
    description: str = ""
    # numeric: domain bounds a request must respect, integer-ness, skew transform
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    transform: Literal["none", "log1p"] = "none"
    # ordinal: the order of levels, lowest first
    order: tuple[str, ...] = ()
    # categorical: values rarer than this in training share the "other" column
    min_count: int = 10
    # extra strings that mean "missing" in this dataset (Adult uses "?")
    missing_markers: tuple[str, ...] = ()
    # accepted and validated, but not fed to the network (e.g. a sampling weight)
    ignored: bool = False


@dataclass
class EncodedBatch:
    """The encoded matrix plus, per row, the fields whose category was unseen."""

    matrix: np.ndarray
    unknown: list[list[str]] = field(default_factory=list)


def _is_missing(value: Any, markers: Sequence[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() in markers


class TabularPipeline:
    """A fitted encoding: per-feature statistics learned from the training split."""

    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features
        self.columns = self._column_names(features)
        self._index = {f["name"]: f for f in features}
        # lookup tables built once so encoding a row is a few dict hits
        self._slots: dict[str, dict[str, int]] = {}
        for f in features:
            if f["type"] == "categorical":
                self._slots[f["name"]] = {v: i for i, v in enumerate(f["vocabulary"])}
            elif f["type"] == "ordinal":
                self._slots[f["name"]] = {v: i for i, v in enumerate(f["order"])}

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls, columns: Mapping[str, Sequence[Any]], specs: Sequence[FeatureSpec]
    ) -> TabularPipeline:
        """Learn vocabularies and scaling from the *training split only*."""
        features: list[dict[str, Any]] = []
        for spec in specs:
            if spec.ignored and spec.type != "numeric":
                raise ValueError(f"{spec.name}: only numeric features can be ignored")
            values = list(columns[spec.name])
            present = [v for v in values if not _is_missing(v, spec.missing_markers)]
            allow_missing = len(present) < len(values)
            base: dict[str, Any] = {
                "name": spec.name,
                "type": spec.type,
                "description": spec.description,
                "allow_missing": allow_missing,
                "missing_markers": list(spec.missing_markers),
                "ignored": spec.ignored,
            }
            if spec.type == "numeric":
                raw = np.asarray(present, dtype=np.float64)
                transformed = np.log1p(raw) if spec.transform == "log1p" else raw
                std = float(transformed.std())
                base.update(
                    minimum=spec.minimum,
                    maximum=spec.maximum,
                    integer=spec.integer,
                    transform=spec.transform,
                    mean=float(transformed.mean()),
                    std=std if std > 0 else 1.0,
                    seen_min=float(raw.min()),
                    seen_max=float(raw.max()),
                )
            elif spec.type == "categorical":
                counts = Counter(str(v).strip() for v in present)
                vocabulary = sorted(v for v, n in counts.items() if n >= spec.min_count)
                rare = sorted(v for v, n in counts.items() if n < spec.min_count)
                base.update(
                    vocabulary=vocabulary,
                    rare=rare,
                    unknown="other" if rare else "zeros",
                )
            elif spec.type == "ordinal":
                seen = {str(v).strip() for v in present}
                unexpected = seen - set(spec.order)
                if unexpected:
                    raise ValueError(f"{spec.name}: levels {sorted(unexpected)} not in the order")
                base.update(order=list(spec.order))
            else:  # pragma: no cover - guarded by the Literal type
                raise ValueError(f"unknown feature type {spec.type}")
            features.append(base)
        return cls(features)

    # --------------------------------------------------------- serialisation
    def to_json(self) -> dict[str, Any]:
        return {"kind": "tabular", "features": self.features, "columns": self.columns}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TabularPipeline:
        if data.get("kind") != "tabular":
            raise ValueError("not a tabular pipeline")
        pipeline = cls(list(data["features"]))
        if list(data.get("columns", pipeline.columns)) != pipeline.columns:
            raise ValueError("pipeline columns do not match its features")
        return pipeline

    @staticmethod
    def _column_names(features: Sequence[Mapping[str, Any]]) -> list[str]:
        names: list[str] = []
        for f in features:
            n = f["name"]
            if f.get("ignored"):
                continue
            if f["type"] in ("numeric", "ordinal"):
                names.append(n)
            else:
                names.extend(f"{n}={v}" for v in f["vocabulary"])
                if f["unknown"] == "other":
                    names.append(f"{n}={OTHER}")
            if f["allow_missing"]:
                names.append(f"{n}={MISSING}")
        return names

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.features]

    @property
    def width(self) -> int:
        return len(self.columns)

    # --------------------------------------------------------------- encoding
    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> EncodedBatch:
        """Encode records given as mappings from feature name to raw value."""
        columns = {f["name"]: [row.get(f["name"]) for row in rows] for f in self.features}
        return self.encode_columns(columns, len(rows))

    def encode_columns(self, columns: Mapping[str, Sequence[Any]], n: int) -> EncodedBatch:
        """Encode column-wise input; raises EncodingError naming the bad field."""
        out = np.zeros((n, self.width), dtype=np.float32)
        unknown: list[list[str]] = [[] for _ in range(n)]
        col = 0
        for f in self.features:
            name = f["name"]
            if name not in columns:
                raise EncodingError(name, "is required")
            values = columns[name]
            if len(values) != n:
                raise EncodingError(name, f"has {len(values)} values, expected {n}")
            width = self._feature_width(f)
            block = out[:, col : col + width]
            self._encode_feature(f, values, block, unknown)
            col += width
        return EncodedBatch(out, unknown)

    def _feature_width(self, f: Mapping[str, Any]) -> int:
        if f.get("ignored"):
            return 0
        if f["type"] in ("numeric", "ordinal"):
            width = 1
        else:
            width = len(f["vocabulary"]) + (1 if f["unknown"] == "other" else 0)
        return width + (1 if f["allow_missing"] else 0)

    def _encode_feature(
        self,
        f: Mapping[str, Any],
        values: Sequence[Any],
        block: np.ndarray,
        unknown: list[list[str]],
    ) -> None:
        name, kind = f["name"], f["type"]
        markers = f["missing_markers"]
        missing_col = block.shape[1] - 1
        ignored = f.get("ignored", False)
        for i, value in enumerate(values):
            if _is_missing(value, markers):
                if not f["allow_missing"]:
                    raise EncodingError(name, "is required and may not be missing", i)
                if not ignored:
                    block[i, missing_col] = 1.0
                continue
            if kind == "numeric":
                try:
                    scaled = self._scale(f, value)
                except EncodingError as exc:
                    raise exc.at(i) from None
                if not ignored:
                    block[i, 0] = scaled
            elif kind == "ordinal":
                slot = self._slots[name].get(value.strip() if isinstance(value, str) else value)
                if slot is None:
                    raise EncodingError(
                        name, f"{value!r} is not one of the allowed values {f['order']}", i
                    )
                block[i, 0] = slot / max(len(f["order"]) - 1, 1)
            else:
                if not isinstance(value, str):
                    raise EncodingError(name, f"must be a string, got {type(value).__name__}", i)
                slot = self._slots[name].get(value.strip())
                if slot is not None:
                    block[i, slot] = 1.0
                    continue
                if value.strip() not in f["rare"]:
                    unknown[i].append(name)
                if f["unknown"] == "other":
                    block[i, len(f["vocabulary"])] = 1.0

    @staticmethod
    def _scale(f: Mapping[str, Any], value: Any) -> float:
        name = f["name"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EncodingError(name, f"must be a number, got {type(value).__name__}")
        x = float(value)
        if not math.isfinite(x):
            raise EncodingError(name, "must be a finite number")
        if f["integer"] and not x.is_integer():
            raise EncodingError(name, f"must be a whole number, got {value}")
        lo, hi = f.get("minimum"), f.get("maximum")
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise EncodingError(name, f"must be between {lo} and {hi}, got {value}")
        if f["transform"] == "log1p":
            x = math.log1p(x)
        return (x - f["mean"]) / f["std"]
