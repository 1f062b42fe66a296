"""``python -m training.reference [--data-dir D] [--models-dir M] [names...]``: write
``reference.json`` (and ``calibration.png``) into every version directory.

It needs only the version's own artifacts (card, pipeline, ONNX graph) and the raw
training data, so it can be re-run on any version, also after a retraining. It is
deterministic (the card's seed picks the splits, the background and the subsets)
and quick (seconds per model on two cores):

* **background** for explanations: k-means (k = 8, seeded) on the encoded training
  split (a seeded 5,000 rows of it); each cluster becomes one *prototype* record,
  the median of each number and the most common value of each category among its
  members, weighted by the cluster's share. Prototypes are valid records (so every
  field is encoded as usual) and aggregates, not rows of the data set.
* **drift** profile of the training split (see ``app/insight/drift.py``).
* **calibration** on the validation split: ECE over 10 confidence bins before and
  after temperature scaling; the temperature is kept only where it lowers the
  validation NLL, else it is 1. The reliability diagram goes to calibration.png.
* **threshold** (binary): the validation precision-recall curve and the threshold of
  maximum F1. The default decision stays 0.5 on the calibrated probability, the
  arg-max, so labels and the card's test accuracy keep meaning the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.artifacts import version_dirs
from app.encoding import TabularPipeline, load_pipeline
from app.insight.calibration import apply_temperature, fit_temperature, nll, reliability
from app.insight.drift import training_profile
from app.insight.layout import Layout
from app.insight.reference import CALIBRATION_PLOT, FORMAT, REFERENCE_FILE
from app.serving.model import read_description

BACKGROUND_ROWS = 8
KMEANS_MAX_ROWS = 5000
MAX_IMAGES = 10_000  # calibration of image models on a seeded subset of validation
PR_POINTS = 101

log = logging.getLogger(__name__)


class Records:
    """Raw records (a sample given to ``keras-serve import``) with the two methods
    ``background`` uses of a training split: ``take`` and ``columns``."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = list(rows)

    def take(self, indices: Sequence[int] | np.ndarray) -> Records:
        return Records([self.rows[int(i)] for i in indices])

    def columns(self) -> dict[str, list[Any]]:
        names = self.rows[0].keys() if self.rows else ()
        return {name: [row.get(name) for row in self.rows] for name in names}


def background(data: Any, x: np.ndarray, pipeline: TabularPipeline, seed: int) -> dict[str, Any]:
    """Cluster prototypes: aggregates of the training split, never rows of it."""
    from collections import Counter

    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(x))[:KMEANS_MAX_ROWS]
    clusters_wanted = min(BACKGROUND_ROWS, len(rows))  # a small sample has fewer rows
    kmeans = KMeans(n_clusters=clusters_wanted, n_init=3, random_state=seed)
    clusters = kmeans.fit_predict(x[rows].astype(np.float64))
    columns = data.take(rows).columns()
    prototypes: list[dict[str, Any]] = []
    weights: list[float] = []
    for k in range(clusters_wanted):
        members = np.flatnonzero(clusters == k)
        if not len(members):
            continue
        record: dict[str, Any] = {}
        for feature in pipeline.features:
            values = [columns[feature["name"]][i] for i in members]
            present = [v for v in values if v is not None]
            if feature["type"] == "numeric":
                if len(present) * 2 < len(values):
                    record[feature["name"]] = None
                    continue
                median = float(np.median(np.asarray(present, dtype=np.float64)))
                record[feature["name"]] = round(median) if feature["integer"] else median
            else:
                record[feature["name"]] = Counter(values).most_common(1)[0][0]
        prototypes.append(record)
        weights.append(len(members) / len(rows))
    return {
        "rows": prototypes,
        "weights": weights,
        "method": f"k-means (k={clusters_wanted}, seed {seed}) on {len(rows)} encoded "
        "training rows; each cluster is one prototype record (median of each number, "
        "most common value of each category) weighted by the cluster's share",
    }


def threshold(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_curve

    precision, recall, cuts = precision_recall_curve(labels, probabilities[:, 1])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    pick = np.unique(np.linspace(0, len(cuts) - 1, PR_POINTS).astype(int))
    return {
        "default": 0.5,
        "rule": "0.5 on the calibrated probability of the positive class (the arg-max, as "
        "in the card's test figures); max_f1 is the validation threshold of maximum F1, "
        "for clients that pass it as their threshold",
        "max_f1": {
            "threshold": float(cuts[best]),
            "f1": float(f1[best]),
            "precision": float(precision[best]),
            "recall": float(recall[best]),
        },
        "pr_curve": [
            {
                "threshold": float(cuts[i]),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
            }
            for i in pick
        ],
    }


def calibration(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    before = nll(probabilities, labels)
    temperature = fit_temperature(probabilities, labels)
    calibrated = apply_temperature(probabilities, temperature)
    after = nll(calibrated, labels)
    if after >= before - 1e-6:  # keep the network's probabilities when T does not help
        temperature, calibrated, after = 1.0, probabilities, before
    raw = reliability(probabilities, labels)
    fitted = reliability(calibrated, labels)
    return {
        "split": "validation",
        "rows": len(labels),
        "method": "temperature scaling: softmax(log(p) / T), T fitted by minimising "
        "validation NLL; T = 1 when that does not lower it",
        "temperature": temperature,
        "nll": before,
        "nll_calibrated": after,
        "ece": raw["ece"],
        "ece_calibrated": fitted["ece"],
        "bins": raw["bins"],
        "bins_calibrated": fitted["bins"],
    }


def plot(report: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="perfect")
    for key, label, colour in (
        ("bins", f"network (ECE {report['ece']:.3f})", "#d62728"),
        (
            "bins_calibrated",
            f"served, T={report['temperature']:.2f} (ECE {report['ece_calibrated']:.3f})",
            "#1f77b4",
        ),
    ):
        pts = [(b["confidence"], b["accuracy"]) for b in report[key] if b["count"]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colour, label=label)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}: reliability on validation")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def generate(version_dir: Path, data_dir: Path | None) -> dict[str, Any]:
    """Write reference.json and calibration.png for one version directory."""
    from app.runtimes import open_runtime
    from training.evaluate import class_probabilities
    from training.recipes import RECIPES
    from training.recipes.base import encode

    card, _ = read_description(version_dir)
    seed = card.seed if card.seed is not None else 0  # training always writes one
    pipeline = load_pipeline(version_dir / "pipeline.json")
    recipe = next(r for r in RECIPES[card.name] if r.version == card.version)
    splits = recipe.load(data_dir, seed)
    runtime = open_runtime("onnx", version_dir, threads=os.cpu_count() or 1)
    rng = np.random.default_rng(seed)
    validation = splits.validation
    if not isinstance(pipeline, TabularPipeline) and len(validation) > MAX_IMAGES:
        validation = validation.take(np.sort(rng.permutation(len(validation))[:MAX_IMAGES]))
    x_val = encode(pipeline, validation)
    probabilities = np.vstack(
        [class_probabilities(runtime.run(x_val[i : i + 4096])) for i in range(0, len(x_val), 4096)]
    )
    runtime.close()
    reference: dict[str, Any] = {"format": FORMAT, "seed": seed}
    if isinstance(pipeline, TabularPipeline):
        x_train = encode(pipeline, splits.train)
        reference["background"] = background(splits.train, x_train, pipeline, seed)
        reference["drift"] = training_profile(Layout.of(pipeline), x_train)
    reference["calibration"] = calibration(probabilities, validation.labels)
    if len(card.classes) == 2:
        calibrated = apply_temperature(probabilities, reference["calibration"]["temperature"])
        reference["threshold"] = threshold(calibrated, validation.labels)
    (version_dir / REFERENCE_FILE).write_text(json.dumps(reference, indent=1) + "\n")
    plot(reference["calibration"], f"{card.name} v{card.version}", version_dir / CALIBRATION_PLOT)
    return reference


def from_sample(
    pipeline: TabularPipeline,
    rows: Sequence[Mapping[str, Any]],
    probabilities: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """reference.json for an imported version, from the sample rows given to import.

    Background and drift profile as training writes them (the sample stands in for the
    training split). With labels, calibration is *measured* (ECE, reliability bins) but
    no temperature is fitted: the sample may hold the rows the model trained on, and a
    temperature fitted there would change the served probabilities for the worse. No
    threshold either, for the same reason.
    """
    x = pipeline.encode_rows(rows).matrix
    reference: dict[str, Any] = {
        "format": FORMAT,
        "seed": seed,
        "source": f"{len(rows)} sample rows given to keras-serve import",
        "background": background(Records(rows), x, pipeline, seed),
        "drift": training_profile(Layout.of(pipeline), x),
    }
    if probabilities is not None and labels is not None:
        measured = reliability(probabilities, labels)
        reference["calibration"] = {
            "split": "sample",
            "rows": len(labels),
            "method": "measured on the import sample; no temperature is fitted (the sample "
            "may be training rows), so the served probabilities are the model's own",
            "temperature": 1.0,
            "nll": nll(probabilities, labels),
            "nll_calibrated": nll(probabilities, labels),
            "ece": measured["ece"],
            "ece_calibrated": measured["ece"],
            "bins": measured["bins"],
            "bins_calibrated": measured["bins"],
        }
    return reference


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m training.reference", description=__doc__)
    parser.add_argument("models", nargs="*", help="model names (default: every one)")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--models-dir", type=Path, default=Path(__file__).resolve().parent.parent / "models"
    )
    args = parser.parse_args(argv)
    for name, version, path in version_dirs(args.models_dir):
        if args.models and name not in args.models:
            continue
        started = time.perf_counter()
        ref = generate(path, args.data_dir)
        cal = ref["calibration"]
        print(
            f"{name} v{version}: T={cal['temperature']:.3f} ECE {cal['ece']:.4f} -> "
            f"{cal['ece_calibrated']:.4f} ({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
