"""Drift: the serving traffic of a version against its training distribution.

Both sides work on *encoded* rows read back through the field layout, so a value is
binned exactly the same way in training (``training/reference.py``) and in serving,
whatever protocol or input form (records, columns, tensors) carried it:

* numbers: 10 bins between the training split's deciles (fixed at training, in
  encoded units; equal deciles merge, and a field that is mostly one value, such as
  capital_gain, also gets the deciles of the values above it), plus a "missing" bin;
* categories and ordinal levels: one bin per level, plus "(other)" for rare ones,
  "(unknown)" for never-seen ones and "(missing)".

The measure is the population stability index, ``PSI = sum (a - e) ln(a / e)`` over
the bins (empty bins count as 1e-4). Rule of thumb: below 0.1 stable, 0.1-0.25
moderate shift (``watch``), 0.25 or more significant shift (``drift``). A window of
fewer than ``MIN_ROWS`` (200) rows flags nothing: a sample of ``n`` rows drawn from
the training distribution itself has a PSI of about ``(bins - 1) / n``. Beside it each
field reports the missing rate, the unknown-category rate and the out-of-range rate
(outside the values training saw). Fields the network does not see (income's
``fnlwgt``) are not monitored: their drift cannot move a prediction.

Recording is one ``deque.append`` of the already encoded batch on the request path;
everything else is computed when someone reads the drift.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from app.insight.layout import Layout

PSI_WATCH = 0.1
PSI_DRIFT = 0.25
PSI_FLOOR = 1e-4
# PSI of a sample of n rows from the training distribution itself is about
# (bins - 1) / n: below this many rows in the window, noise alone could cross 0.1
MIN_ROWS = 200


def psi(actual: np.ndarray, expected: np.ndarray) -> float:
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    return float(((a - e) * np.log(a / e)).sum())


def status_of(value: float) -> str:
    return "drift" if value >= PSI_DRIFT else "watch" if value >= PSI_WATCH else "ok"


def numeric_bins(values: np.ndarray, missing: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``len(edges) + 1`` value bins and one missing bin."""
    n = max(len(values), 1)
    counts = np.bincount(
        np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1
    )
    return np.append(counts, missing.sum()) / n


def category_shares(labels: list[str]) -> dict[str, float]:
    n = max(len(labels), 1)
    unique, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True)
    return {str(u): int(c) / n for u, c in zip(unique, counts, strict=True)}


def training_profile(layout: Layout, x: np.ndarray) -> dict[str, Any]:
    """The training side, as stored in reference.json (``drift``)."""
    fields: dict[str, Any] = {}
    for block in layout.active:
        if block.kind == "numeric":
            values, missing = layout.numbers(block, x)
            present = values[~missing]
            deciles = np.linspace(0, 1, 11)[1:-1]
            edges = np.unique(np.quantile(present, deciles))
            tail = present[present > edges.max()]
            if len(edges) < len(deciles) and len(tail):  # mostly one value (capital_gain):
                edges = np.unique(np.append(edges, np.quantile(tail, deciles)))  # bin the tail
            shares = numeric_bins(values, missing, edges)
            fields[block.name] = {
                "type": "numeric",
                "edges": edges.tolist(),
                "edges_raw": block.to_raw(edges).tolist(),
                "shares": shares.tolist(),
                "missing": float(missing.mean()),
            }
        else:
            labels = layout.categories(block, x)
            shares_by = category_shares(labels)
            fields[block.name] = {
                "type": "category",
                "shares": shares_by,
                "missing": shares_by.get("(missing)", 0.0),
            }
    return {"rows": len(x), "fields": fields}


class DriftWindow:
    """The last ``size`` encoded rows a version answered, kept as the batches they came in."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._batches: deque[tuple[np.ndarray, list[list[str]]]] = deque()
        self._rows = 0
        self._lock = threading.Lock()
        self.seen = 0

    def observe(self, matrix: np.ndarray, unknown: list[list[str]]) -> None:
        """Cheap: one append, and drop whole batches that fell out of the window."""
        with self._lock:
            self._batches.append((matrix, unknown))
            self._rows += len(matrix)
            self.seen += len(matrix)
            while self._batches and self._rows - len(self._batches[0][0]) >= self.size:
                self._rows -= len(self._batches.popleft()[0])

    def snapshot(self) -> tuple[np.ndarray | None, list[list[str]]]:
        with self._lock:
            batches = list(self._batches)
        if not batches:
            return None, []
        x = np.concatenate([b[0] for b in batches])[-self.size :]
        unknown = [u for b in batches for u in b[1]][-self.size :]
        return x, unknown


def report(
    layout: Layout, profile: Mapping[str, Any], window: DriftWindow, min_rows: int = MIN_ROWS
) -> dict[str, Any]:
    """Per field: PSI and its status, missing, unknown-category and out-of-range rates.
    With fewer than ``min_rows`` rows in the window every status is ``too_few_rows``."""
    x, unknown = window.snapshot()
    result: dict[str, Any] = {
        "window": window.size,
        "rows": 0 if x is None else len(x),
        "min_rows": min_rows,
        "observed_total": window.seen,
        "measure": "population stability index (PSI)",
        "thresholds": {"watch": PSI_WATCH, "drift": PSI_DRIFT},
        "fields": {},
        "flagged": [],
    }
    if x is None:
        return result
    n = len(x)
    outside = layout.out_of_range(x)
    fields: dict[str, Any] = {}
    for block in layout.active:
        reference = profile["fields"].get(block.name)
        if reference is None:
            continue
        entry: dict[str, Any] = {"type": reference["type"]}
        if reference["type"] == "numeric":
            values, missing = layout.numbers(block, x)
            edges = np.asarray(reference["edges"], dtype=np.float64)
            actual = numeric_bins(values, missing, edges)
            entry["psi"] = psi(actual, np.asarray(reference["shares"]))
            entry["missing_rate"] = float(missing.mean())
            entry["out_of_range_rate"] = sum(block.name in o for o in outside) / n
        else:
            labels = layout.categories(block, x)
            shares = category_shares(labels)
            names = sorted(set(shares) | set(reference["shares"]))
            entry["psi"] = psi(
                np.array([shares.get(k, 0.0) for k in names]),
                np.array([reference["shares"].get(k, 0.0) for k in names]),
            )
            entry["missing_rate"] = shares.get("(missing)", 0.0)
            entry["unknown_rate"] = sum(block.name in u for u in unknown) / n
        entry["status"] = status_of(entry["psi"]) if n >= min_rows else "too_few_rows"
        fields[block.name] = entry
    result["fields"] = fields
    result["flagged"] = [n for n, e in fields.items() if e["status"] in ("watch", "drift")]
    return result
