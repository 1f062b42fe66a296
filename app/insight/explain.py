"""Explanations: exact Shapley values over raw fields, occlusion maps for images.

Both are split in two pure steps around the runtime call: *plan* builds the encoded
rows to evaluate, *combine* turns their probabilities into attributions. The data
plane runs the rows through the version's batcher in between, so explanations queue
with predictions (and behind them), and every runtime gives the same answer.

**Tabular: exact interventional Shapley values against a weighted background set.**
The game of background row ``b`` is ``v_b(S) = f(x_S, b_rest)[c]``: the probability of
the explained class ``c`` when the fields in ``S`` take the instance's values and the
others take ``b``'s. Coalitions are built in the *encoded* space by copying whole
column blocks (one block per raw field), which equals encoding the mixed raw record,
since every field is encoded on its own. The value is ``v(S) = sum_b w_b v_b(S)``,
and Shapley values are linear in the game, so ``phi = sum_b w_b phi(v_b)``.

The trick that makes it exact *and* cheap: a field whose encoded block equals the
background row's is a dummy player of ``v_b`` (swapping it changes nothing), and a
dummy gets 0 and leaves the others' values unchanged. So each ``v_b`` is enumerated
only over the ``k_b`` fields where the instance and ``b`` differ: ``2^k_b`` rows, not
``2^M``. Fields the network does not see (income's ``fnlwgt``) are never players.
Efficiency holds exactly: ``sum(phi) = f(x)[c] - sum_b w_b f(b)[c]``.

**Images: occlusion.** A ``patch`` x ``patch`` square of zeros (the background of an
MNIST-style image) slides with stride ``stride``; a pixel's saliency is the mean drop
in the predicted class's probability over the squares covering it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from app.insight.layout import Layout


@lru_cache(maxsize=32)
def _subsets(k: int) -> tuple[np.ndarray, np.ndarray]:
    """All subsets of ``k`` players as bit masks, and per player the masks without it."""
    masks = np.arange(1 << k, dtype=np.int64)
    without = np.stack([masks[(masks >> t) & 1 == 0] for t in range(k)]) if k else masks[:0]
    return masks, without


@lru_cache(maxsize=32)
def _weights(k: int) -> np.ndarray:
    """Shapley weight ``s! (k-s-1)! / k!`` of a coalition of size ``s`` (without the player)."""
    return np.array(
        [math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)]
    )


def shapley_from_values(values: np.ndarray, k: int) -> np.ndarray:
    """Exact Shapley values of a ``k``-player game given ``v`` at every bit mask."""
    if k == 0:
        return np.zeros(0)
    _, without = _subsets(k)
    sizes = np.bitwise_count(without)
    bits = (np.int64(1) << np.arange(k, dtype=np.int64))[:, None]
    gains = values[without | bits] - values[without]
    result: np.ndarray = (_weights(k)[sizes] * gains).sum(axis=1)
    return result


@dataclass
class TabularPlan:
    """The rows to evaluate for one instance, and how to read them back."""

    rows: np.ndarray  # [sum_b 2^k_b, D] float32
    players: list[list[int]]  # per background row, the active-field indices that differ
    offsets: list[int]  # per background row, where its block of rows starts


class TabularExplainer:
    """Exact Shapley values over raw fields for one model version (see module doc)."""

    def __init__(self, layout: Layout, background: np.ndarray, weights: np.ndarray) -> None:
        if background.ndim != 2 or background.shape[1] != layout.width:
            raise ValueError(
                f"background has shape {background.shape}, expected [B, {layout.width}]"
            )
        self.layout = layout
        self.background = background.astype(np.float32)
        self.weights = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.blocks = layout.active

    def plan(self, x: np.ndarray) -> TabularPlan:
        """Coalition rows of one encoded instance ``x`` (shape ``[D]``)."""
        parts: list[np.ndarray] = []
        players: list[list[int]] = []
        offsets: list[int] = []
        at = 0
        for b in self.background:
            differ = [
                j
                for j, blk in enumerate(self.blocks)
                if not np.array_equal(x[blk.start : blk.stop], b[blk.start : blk.stop])
            ]
            masks, _ = _subsets(len(differ))
            take = np.zeros((len(masks), len(x)), dtype=bool)
            for t, j in enumerate(differ):
                blk = self.blocks[j]
                take[:, blk.start : blk.stop] = ((masks >> t) & 1).astype(bool)[:, None]
            parts.append(np.where(take, x[None, :], b[None, :]).astype(np.float32))
            players.append(differ)
            offsets.append(at)
            at += len(masks)
        return TabularPlan(np.concatenate(parts), players, offsets)

    def combine(self, plan: TabularPlan, probabilities: np.ndarray, target: int) -> Explanation:
        """Attributions per raw field from the coalition rows' probabilities."""
        phi = np.zeros(len(self.blocks))
        base = 0.0
        value = 0.0
        for w, differ, start in zip(self.weights, plan.players, plan.offsets, strict=True):
            k = len(differ)
            v = probabilities[start : start + (1 << k), target].astype(np.float64)
            base += w * v[0]
            value += w * v[-1]
            if k:
                phi[differ] += w * shapley_from_values(v, k)
        by_name = {blk.name: float(p) for blk, p in zip(self.blocks, phi, strict=True)}
        attributions = {name: by_name.get(name, 0.0) for name in self.layout.names}
        return Explanation(base, value, attributions)


@dataclass
class Explanation:
    """Shapley attributions of one instance: ``value = base + sum(attributions)``."""

    base: float
    value: float
    attributions: dict[str, float]


@dataclass
class OcclusionPlan:
    rows: np.ndarray
    squares: list[tuple[int, int]]  # top-left corner of each occluded square


class OcclusionExplainer:
    """Occlusion saliency of an image model (see module doc)."""

    def __init__(self, height: int, width: int, patch: int = 4, stride: int = 2) -> None:
        self.height, self.width, self.patch, self.stride = height, width, patch, stride

    def plan(self, x: np.ndarray) -> OcclusionPlan:
        """The instance itself, then one row per occluded square."""
        image = x.reshape(self.height, self.width)
        squares = [
            (r, c)
            for r in range(0, self.height - self.patch + 1, self.stride)
            for c in range(0, self.width - self.patch + 1, self.stride)
        ]
        rows = np.repeat(image[None], len(squares) + 1, axis=0)
        for i, (r, c) in enumerate(squares, start=1):
            rows[i, r : r + self.patch, c : c + self.patch] = 0.0
        return OcclusionPlan(rows.reshape((len(rows), *x.shape)).astype(np.float32), squares)

    def combine(self, plan: OcclusionPlan, probabilities: np.ndarray, target: int) -> np.ndarray:
        """A ``[height, width]`` map: how much hiding each pixel lowers the probability."""
        drop = probabilities[0, target] - probabilities[1:, target]
        total = np.zeros((self.height, self.width))
        count = np.zeros((self.height, self.width))
        for d, (r, c) in zip(drop, plan.squares, strict=True):
            total[r : r + self.patch, c : c + self.patch] += d
            count[r : r + self.patch, c : c + self.patch] += 1
        saliency: np.ndarray = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        return saliency
