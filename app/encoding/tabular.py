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

How a sent string is matched to the training vocabulary (categorical and ordinal):

1. exactly, then after stripping surrounding whitespace (the fast path);
2. after :func:`normalise`: case folded, surrounding whitespace removed, and every
   run of spaces, hyphens and underscores made one ``-``; so ``"male"``, ``"MALE "``
   and ``"Male"`` are one value, and ``"United States"`` is ``"United-States"``. The
   batch reports the canonical value used where it differs from what was sent.
   Training values that would collide under normalisation match exactly only;
3. otherwise, a value close to a known one (difflib ratio >= ``SUGGEST_CUTOFF`` on
   the normalised forms) is rejected with ``suggestion`` set ("did you mean"), rather
   than silently landing in "other";
4. anything else is an unseen category (above), or an error in ``strict`` mode.
"""

from __future__ import annotations

import bisect
import difflib
import math
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.encoding.errors import EncodingError

FeatureType = Literal["numeric", "categorical", "ordinal"]
MISSING = "__missing__"
MAX_CATEGORY_LENGTH = 200  # longer strings are no category anyone trained on
OTHER = "__other__"
SUGGEST_CUTOFF = 0.8  # "Privat" -> "Private" is 0.92, "Mal" -> "Male" 0.86
_SEPARATORS = re.compile(r"[\s_-]+")


def normalise(value: str) -> str:
    """The documented matching key: case-folded, trimmed, separator runs made one '-'."""
    return _SEPARATORS.sub("-", value.strip().casefold())


def _normalised_index(values: Sequence[str]) -> dict[str, str]:
    """normalised key -> the one training value it stands for; colliding keys are dropped."""
    index: dict[str, str] = {}
    clashes: set[str] = set()
    for v in values:
        key = normalise(v)
        if key in index and index[key] != v:
            clashes.add(key)
        index[key] = v
    return {k: v for k, v in index.items() if k not in clashes}


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
    # numeric: up to this many target-aware bins, fitted by a decision tree on the
    # training split and fed as piecewise-linear columns beside the scaled value, so a
    # network sees thresholds (capital gain above ~$7,000) that trees find at once
    bins: int = 0


@dataclass
class EncodedBatch:
    """The encoded matrix plus, per row, the fields whose category was unseen and the
    canonical training value used where a sent string matched only after normalising."""

    matrix: np.ndarray
    unknown: list[list[str]] = field(default_factory=list)
    canonical: list[dict[str, str]] = field(default_factory=list)


def _is_missing(value: Any, markers: Collection[str]) -> bool:
    """The one rule for "missing": None, NaN, or a dataset's marker such as Adult's "?"."""
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
        # one precomputed plan per feature, so encoding a value is a few local lookups
        self._plan: list[_FeaturePlan] = []
        offset = 0
        for f in features:
            plan = _FeaturePlan(f, offset)
            self._plan.append(plan)
            offset += plan.width

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        columns: Mapping[str, Sequence[Any]],
        specs: Sequence[FeatureSpec],
        labels: np.ndarray | None = None,
    ) -> TabularPipeline:
        """Learn vocabularies and scaling from the *training split only*.

        ``labels`` (the training split's) are needed only by features with ``bins``.
        """
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
                if spec.bins:
                    if labels is None:
                        raise ValueError(f"{spec.name}: binning needs the training labels")
                    mask = [not _is_missing(v, spec.missing_markers) for v in values]
                    base["bin_edges"] = _bin_edges(
                        transformed, np.asarray(labels)[np.asarray(mask)], spec.bins
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
                edges = f.get("bin_edges") or []
                names.extend(f"{n}@bin{k}" for k in range(1, len(edges)))
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
    def encode_rows(
        self, rows: Sequence[Mapping[str, Any]], *, strict: bool = False
    ) -> EncodedBatch:
        """Encode records given as mappings from feature name to raw value (absent = missing).

        ``strict`` rejects unseen categories (EncodingError listing ``allowed``) instead
        of encoding them as "other".
        """
        n = len(rows)
        out = np.zeros((n, self.width), dtype=np.float32)
        unknown: list[list[str]] = [[] for _ in range(n)]
        canonical: list[dict[str, str]] = [{} for _ in range(n)]
        plans = self._plan
        for i, row in enumerate(rows):
            for plan in plans:
                plan.encode(row.get(plan.name), i, out, unknown, canonical, strict)
        return EncodedBatch(out, unknown, canonical)

    def encode_columns(
        self, columns: Mapping[str, Sequence[Any]], n: int, *, strict: bool = False
    ) -> EncodedBatch:
        """Encode column-wise input; raises EncodingError naming the bad field."""
        out = np.zeros((n, self.width), dtype=np.float32)
        unknown: list[list[str]] = [[] for _ in range(n)]
        canonical: list[dict[str, str]] = [{} for _ in range(n)]
        for plan in self._plan:
            values = columns.get(plan.name)
            if values is None:
                raise EncodingError(plan.name, "is required")
            if len(values) != n:
                raise EncodingError(plan.name, f"has {len(values)} values, expected {n}")
            for i, value in enumerate(values):
                plan.encode(value, i, out, unknown, canonical, strict)
        return EncodedBatch(out, unknown, canonical)


def _bin_edges(x: np.ndarray, y: np.ndarray, bins: int) -> list[float]:
    """Sorted edges ``[min, t1, ..., max]`` from a shallow tree's split thresholds."""
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(
        max_leaf_nodes=bins, min_samples_leaf=max(20, len(x) // 200), random_state=0
    )
    tree.fit(x.reshape(-1, 1), y)
    inner = tree.tree_.threshold[tree.tree_.feature >= 0]
    # rounded before deduplicating: two edges never coincide, so no bin has zero width
    return sorted({round(float(e), 6) for e in (x.min(), x.max(), *inner)})


class _FeaturePlan:
    """One fitted feature, compiled for encoding: its columns and its rules."""

    __slots__ = (
        "allow_missing",
        "allowed",
        "by_norm",
        "edges",
        "exact",
        "ignored",
        "integer",
        "integers",
        "kind",
        "log1p",
        "markers",
        "maximum",
        "mean",
        "minimum",
        "missing_col",
        "name",
        "offset",
        "order",
        "other_col",
        "rare",
        "rare_by_norm",
        "slots",
        "std",
        "width",
    )

    def __init__(self, f: Mapping[str, Any], offset: int) -> None:
        self.name: str = f["name"]
        self.kind: str = f["type"]
        self.offset = offset
        self.allow_missing: bool = f["allow_missing"]
        self.ignored: bool = f.get("ignored", False)
        self.markers = frozenset(f["missing_markers"])
        self.slots: dict[Any, int] = {}
        self.order: list[str] = []
        self.rare: frozenset[str] = frozenset()
        self.other_col = -1
        # normalised key -> training value: built once here, so a miss costs one lookup
        self.by_norm: dict[str, str] = {}
        self.rare_by_norm: dict[str, str] = {}
        self.allowed: list[str] = []
        self.exact: dict[str, int] = {}  # a category sent exactly as trained: its column
        # categories that are whole numbers (an IntegerLookup's): ints are accepted too
        self.integers: bool = bool(f.get("integer", False)) and self.kind == "categorical"
        width = 1
        if self.kind == "categorical":
            self.slots = {v: offset + i for i, v in enumerate(f["vocabulary"])}
            self.rare = frozenset(f["rare"])
            width = len(f["vocabulary"])
            if f["unknown"] == "other":
                self.other_col = offset + width
                width += 1
            known = [*f["vocabulary"], *f["rare"]]
            norm = _normalised_index(known)
            self.by_norm = {k: v for k, v in norm.items() if v in self.slots}
            self.rare_by_norm = {k: v for k, v in norm.items() if v in self.rare}
            self.allowed = sorted(known)
            self.exact = {
                v: col
                for v, col in self.slots.items()
                if v.strip() not in self.markers and len(v) <= MAX_CATEGORY_LENGTH
            }
        elif self.kind == "ordinal":
            self.order = list(f["order"])
            self.slots = {v: i for i, v in enumerate(self.order)}
            self.by_norm = _normalised_index(self.order)
            self.allowed = self.order
        else:
            self.integer: bool = f["integer"]
            self.minimum: float | None = f.get("minimum")
            self.maximum: float | None = f.get("maximum")
            self.log1p = f["transform"] == "log1p"
            self.mean: float = f["mean"]
            self.std: float = f["std"]
            self.edges: list[float] = list(f.get("bin_edges") or [])
            width += max(len(self.edges) - 1, 0)
        if self.ignored:
            width = 0
        elif self.allow_missing:
            width += 1
        self.width = width
        self.missing_col = offset + width - 1

    def encode(
        self,
        value: Any,
        i: int,
        out: np.ndarray,
        unknown: list[list[str]],
        canonical: list[dict[str, str]],
        strict: bool = False,
    ) -> None:
        """Write one raw value into row ``i`` of ``out``; raises EncodingError."""
        kind = self.kind
        # the two common cases first: a category sent exactly as trained, and a number
        # that is present (not None, NaN or a missing marker)
        if kind == "categorical":
            if value.__class__ is str and (col := self.exact.get(value)) is not None:
                if not self.ignored:
                    out[i, col] = 1.0
                return
        elif kind == "numeric":
            cls = value.__class__
            if (cls is int or cls is float) and value == value:
                scaled = self.scale(value, i)
                if not self.ignored:
                    out[i, self.offset] = scaled
                    if self.edges:
                        self.piecewise(value, i, out)
                return
        if _is_missing(value, self.markers):
            if not self.allow_missing:
                raise EncodingError(self.name, "is required and may not be missing", i)
            if not self.ignored:
                out[i, self.missing_col] = 1.0
        elif kind == "numeric":
            scaled = self.scale(value, i)
            if not self.ignored:
                out[i, self.offset] = scaled
                if self.edges:
                    self.piecewise(value, i, out)
        elif kind == "ordinal":
            level: str | None = None
            if isinstance(value, str):
                if value in self.slots:  # the fast path: sent exactly as trained
                    level = value
                elif value.strip() in self.slots:
                    level = value.strip()
                elif len(value) <= MAX_CATEGORY_LENGTH:
                    level = self.by_norm.get(normalise(value))
                if level is not None and level != value:
                    canonical[i][self.name] = level
            if level is None:
                suggestion = self.suggest(value) if isinstance(value, str) else None
                hint = f"; did you mean {suggestion!r}?" if suggestion else ""
                raise EncodingError(
                    self.name,
                    f"{value!r} is not one of the allowed values {self.order}{hint}",
                    i,
                    suggestion=suggestion,
                    allowed=list(self.order),
                )
            out[i, self.offset] = self.slots[level] / max(len(self.order) - 1, 1)
        else:
            if value.__class__ is not str:
                if not (self.integers and value.__class__ is int):
                    wanted = "a whole number or a string" if self.integers else "a string"
                    raise EncodingError(
                        self.name, f"must be {wanted}, got {type(value).__name__}", i
                    )
                value = str(value)
            if len(value) > MAX_CATEGORY_LENGTH:
                raise EncodingError(
                    self.name, f"must be at most {MAX_CATEGORY_LENGTH} characters long", i
                )
            col = self.slots.get(value)
            if col is not None:  # the fast path: sent exactly as trained
                out[i, col] = 1.0
                return
            key = value.strip()
            known = key if (key in self.slots or key in self.rare) else None
            if known is None:
                norm = normalise(value)
                known = self.by_norm.get(norm) or self.rare_by_norm.get(norm)
            if known is not None:
                if known != value:
                    canonical[i][self.name] = known
                col = self.slots.get(known)
                if col is not None:
                    out[i, col] = 1.0
                elif self.other_col >= 0:  # a rare training value: the column it trained
                    out[i, self.other_col] = 1.0
                return
            suggestion = self.suggest(value)
            if suggestion is not None:
                raise EncodingError(
                    self.name,
                    f"{value!r} is not a known value; did you mean {suggestion!r}?",
                    i,
                    suggestion=suggestion,
                    allowed=self.allowed if strict else None,
                )
            if strict:
                raise EncodingError(
                    self.name,
                    f"{value!r} is not a known value; allowed: {', '.join(self.allowed)}",
                    i,
                    allowed=self.allowed,
                )
            unknown[i].append(self.name)
            if self.other_col >= 0:
                out[i, self.other_col] = 1.0

    def suggest(self, value: str) -> str | None:
        """The known value a near miss most likely meant; only computed on a miss."""
        keys = [*self.by_norm, *self.rare_by_norm]
        close = difflib.get_close_matches(normalise(value), keys, n=1, cutoff=SUGGEST_CUTOFF)
        if not close:
            return None
        return self.by_norm.get(close[0]) or self.rare_by_norm[close[0]]

    def piecewise(self, value: Any, i: int, out: np.ndarray) -> None:
        """Piecewise-linear bin columns: 1 for bins below the value, 0 above, a fraction in it.

        Bin k spans ``edges[k-1]..edges[k]``; one bisection finds the partial bin, so a row
        costs two writes however many bins there are (this is on the request path).
        """
        x = float(value)
        if self.log1p:
            x = math.log1p(x)
        edges = self.edges
        j = bisect.bisect_right(edges, x)  # edges[:j] <= x < edges[j:]
        last = len(edges) - 1
        full = min(j - 1, last)
        if full > 0:
            out[i, self.offset + 1 : self.offset + 1 + full] = 1.0
        if 1 <= j <= last:
            lo, hi = edges[j - 1], edges[j]
            out[i, self.offset + j] = (x - lo) / (hi - lo)

    def scale(self, value: Any, index: int) -> float:
        name = self.name
        if value.__class__ not in (int, float) and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            raise EncodingError(name, f"must be a number, got {type(value).__name__}", index)
        try:
            x = float(value)
        except OverflowError:  # an integer literal such as 10**400
            raise EncodingError(name, "is too large to be a number here", index) from None
        if not math.isfinite(x):
            raise EncodingError(name, "must be a finite number", index)
        if self.integer and not x.is_integer():
            raise EncodingError(name, f"must be a whole number, got {value}", index)
        lo, hi = self.minimum, self.maximum
        if (lo is not None and x < lo) or (hi is not None and x > hi):
            raise EncodingError(name, f"must be between {lo} and {hi}, got {value}", index)
        if self.log1p:
            x = math.log1p(x)
        return (x - self.mean) / self.std
