"""Where each raw field lives in the encoded matrix, and how to read it back.

Explanations mix encoded *blocks* (all the columns of one raw field) and drift reads
raw values back out of encoded rows, so both need the same map from field to columns.
It is derived from the fitted pipeline's features by the pipeline's own width rule,
so it needs nothing beyond ``pipeline.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.encoding import TabularPipeline

MISSING = "(missing)"
OTHER = "(other)"
UNKNOWN = "(unknown)"
SMALL_BATCH = 8  # out_of_range: up to this many rows, plain Python is faster than numpy


@dataclass(frozen=True)
class FieldBlock:
    """One raw field: its columns ``[start, stop)`` and how to decode them."""

    name: str
    kind: str  # numeric, categorical, ordinal
    start: int
    stop: int
    ignored: bool
    levels: tuple[str, ...] = ()  # categorical vocabulary or ordinal order
    has_other: bool = False
    missing_col: int = -1  # absolute column of the missing indicator, -1 if none
    mean: float = 0.0
    std: float = 1.0
    log1p: bool = False
    seen_min: float | None = None
    seen_max: float | None = None

    @property
    def width(self) -> int:
        return self.stop - self.start

    def to_raw(self, scaled: np.ndarray) -> np.ndarray:
        """Encoded numeric values back in the units a client sends."""
        raw = scaled.astype(np.float64) * self.std + self.mean
        return np.expm1(raw) if self.log1p else raw

    def scaled_bounds(self) -> tuple[float, float] | None:
        """The training range in encoded units (the encoding is monotone)."""
        if self.seen_min is None or self.seen_max is None:
            return None
        lo, hi = self.seen_min, self.seen_max
        if self.log1p:
            lo, hi = float(np.log1p(lo)), float(np.log1p(hi))
        return (lo - self.mean) / self.std, (hi - self.mean) / self.std


class Layout:
    """The field blocks of a tabular pipeline, in field order."""

    def __init__(self, features: Sequence[Mapping[str, Any]]) -> None:
        blocks: list[FieldBlock] = []
        offset = 0
        for f in features:
            kind = f["type"]
            ignored = bool(f.get("ignored", False))
            levels: tuple[str, ...] = ()
            has_other = False
            width = 1
            if kind == "categorical":
                levels = tuple(f["vocabulary"])
                has_other = f["unknown"] == "other"
                width = len(levels) + (1 if has_other else 0)
            elif kind == "ordinal":
                levels = tuple(f["order"])
            else:  # numeric: the scaled value first, then any bin columns
                width += max(len(f.get("bin_edges") or []) - 1, 0)
            if ignored:
                width = 0
            elif f["allow_missing"]:
                width += 1
            missing_col = offset + width - 1 if f["allow_missing"] and not ignored else -1
            numeric = kind == "numeric"
            blocks.append(
                FieldBlock(
                    name=f["name"],
                    kind=kind,
                    start=offset,
                    stop=offset + width,
                    ignored=ignored,
                    levels=levels,
                    has_other=has_other,
                    missing_col=missing_col,
                    mean=float(f["mean"]) if numeric else 0.0,
                    std=float(f["std"]) if numeric else 1.0,
                    log1p=numeric and f.get("transform") == "log1p",
                    seen_min=f.get("seen_min") if numeric else None,
                    seen_max=f.get("seen_max") if numeric else None,
                )
            )
            offset += width
        self.blocks = blocks
        self.width = offset
        self.names = [b.name for b in blocks]
        self.active = [b for b in blocks if b.width > 0]  # fields the network sees
        self._compile_ranges()

    @classmethod
    def of(cls, pipeline: TabularPipeline) -> Layout:
        layout = cls(pipeline.features)
        if layout.width != pipeline.width:  # pragma: no cover - the rules diverged
            raise ValueError(f"layout width {layout.width} != pipeline width {pipeline.width}")
        return layout

    # -------------------------------------------------------------- decoding
    def categories(self, block: FieldBlock, x: np.ndarray) -> list[str]:
        """Per row of encoded ``x``, the category (or level) of ``block`` as a label."""
        n = len(x)
        if block.missing_col >= 0:
            missing = x[:, block.missing_col] > 0.5
        else:
            missing = np.zeros(n, dtype=bool)
        if block.kind == "ordinal":
            top = max(len(block.levels) - 1, 1)
            index = np.rint(x[:, block.start] * top).astype(int).clip(0, len(block.levels) - 1)
            names = np.asarray(block.levels, dtype=object)[index]
        else:
            k = len(block.levels)
            slots = x[:, block.start : block.start + k]
            names = np.full(n, UNKNOWN, dtype=object)
            if k:
                hit = slots.max(axis=1) > 0.5
                names[hit] = np.asarray(block.levels, dtype=object)[slots[hit].argmax(axis=1)]
            if block.has_other:
                names[x[:, block.start + k] > 0.5] = OTHER
        names[missing] = MISSING
        return [str(v) for v in names.tolist()]

    def numbers(self, block: FieldBlock, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the encoded value of a numeric block and whether it is missing."""
        missing = (
            x[:, block.missing_col] > 0.5
            if block.missing_col >= 0
            else np.zeros(len(x), dtype=bool)
        )
        return x[:, block.start].astype(np.float64), missing

    def out_of_range(self, x: np.ndarray) -> list[list[str]]:
        """Per row, the numeric fields whose value lies outside the training range.

        On every answer, so cheap: vectorised over all numeric fields for a batch, and
        plain Python for a few rows, where numpy's per-call cost would dominate."""
        flagged: list[list[str]] = [[] for _ in range(len(x))]
        if not len(self._range_cols):
            return flagged
        if len(x) <= SMALL_BATCH:
            for row, out in zip(x.tolist(), flagged, strict=True):
                for col, lo, hi, name, missing in self._ranges:
                    value = row[col]
                    if (value < lo or value > hi) and not (missing >= 0 and row[missing] > 0.5):
                        out.append(name)
            return flagged
        values = x[:, self._range_cols]
        outside = (values < self._range_lo) | (values > self._range_hi)
        if not outside.any():
            return flagged
        if self._range_missing is not None:  # a missing value is never out of range
            outside &= ~((x[:, self._range_missing] > 0.5) & self._range_has_missing)
        for i, j in zip(*np.nonzero(outside), strict=True):
            flagged[int(i)].append(self._range_names[int(j)])
        return flagged

    def _compile_ranges(self) -> None:
        cols: list[int] = []
        lo: list[float] = []
        hi: list[float] = []
        names: list[str] = []
        missing: list[int] = []
        for block in self.active:
            bounds = block.scaled_bounds() if block.kind == "numeric" else None
            if bounds is None:
                continue
            slack = 1e-5 * max(1.0, abs(bounds[0]), abs(bounds[1]))  # float32 encoding rounds
            cols.append(block.start)
            lo.append(bounds[0] - slack)
            hi.append(bounds[1] + slack)
            names.append(block.name)
            missing.append(block.missing_col)
        self._ranges = [
            (c, float(np.float32(a)), float(np.float32(b)), n, m)
            for c, a, b, n, m in zip(cols, lo, hi, names, missing, strict=True)
        ]
        self._range_cols = np.asarray(cols, dtype=np.intp)
        self._range_lo = np.asarray(lo, dtype=np.float32)
        self._range_hi = np.asarray(hi, dtype=np.float32)
        self._range_names = names
        has = np.asarray(missing) >= 0
        self._range_has_missing = has
        self._range_missing = np.where(has, missing, 0).astype(np.intp) if has.any() else None
