"""Validation-only search for the income network: ``python -m training.search_income``.

Scores each candidate on the validation split (never the test split) and prints a
JSON line per candidate; the chosen one becomes the recipe, and the table goes
into the model card's ``tuning`` field.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Candidate:
    name: str
    widths: tuple[int, ...] = (64, 32)
    dropout: float = 0.3
    bins: bool = False
    seeds: int = 1
    learning_rate: float = 1e-3
    batch_size: int = 256


CANDIDATES = (
    Candidate("64-32 d0.3 (v1 as shipped)"),
    Candidate("128-64 d0.3", widths=(128, 64)),
    Candidate("128-64 d0.5", widths=(128, 64), dropout=0.5),
    Candidate("256-128-64 d0.5", widths=(256, 128, 64), dropout=0.5),
    Candidate("64-32 d0.3 + bins", bins=True),
    Candidate("128-64 d0.5 + bins", widths=(128, 64), dropout=0.5, bins=True),
    Candidate("256-128-64 d0.5 + bins", widths=(256, 128, 64), dropout=0.5, bins=True),
    Candidate("128-64 d0.5 + bins, 5 seeds", widths=(128, 64), dropout=0.5, bins=True, seeds=5),
)


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from training.recipes.base import encode
    from training.recipes.income import FEATURES, load

    data_dir = Path(os.environ["DATA_DIR"]) if "DATA_DIR" in os.environ else None
    raw = load(data_dir, 0)
    from app.encoding import FeatureSpec, TabularPipeline
    from training.loaders import TabularData

    assert isinstance(raw.train, TabularData) and isinstance(raw.validation, TabularData)

    only = set(sys.argv[1:])
    for cand in CANDIDATES:
        if only and cand.name not in only:
            continue
        specs: tuple[FeatureSpec, ...] = FEATURES
        if cand.bins:
            from training.recipes.income import with_bins

            specs = with_bins(FEATURES)
        pipeline = TabularPipeline.fit(raw.train.columns(), specs, labels=raw.train.labels)
        x_tr, x_val = encode(pipeline, raw.train), encode(pipeline, raw.validation)
        y_tr, y_val = raw.train.labels, raw.validation.labels
        started = time.perf_counter()
        probs = []
        epochs = []
        for s in range(cand.seeds):
            keras.utils.set_random_seed(s)
            layers: list[keras.layers.Layer] = [keras.Input(shape=(x_tr.shape[1],))]
            for w in cand.widths:
                layers += [
                    keras.layers.Dense(w, activation="relu"),
                    keras.layers.Dropout(cand.dropout),
                ]
            layers.append(keras.layers.Dense(1, activation="sigmoid"))
            model = keras.Sequential(layers)
            model.compile(keras.optimizers.Adam(cand.learning_rate), "binary_crossentropy")
            stop = keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)
            hist = model.fit(
                x_tr,
                y_tr,
                validation_data=(x_val, y_val),
                epochs=100,
                batch_size=cand.batch_size,
                callbacks=[stop],
                verbose=0,
            )
            epochs.append(len(hist.history["loss"]))
            probs.append(model.predict(x_val, batch_size=4096, verbose=0)[:, 0])
        p = np.clip(np.mean(probs, axis=0), 1e-7, 1 - 1e-7)
        from sklearn.metrics import roc_auc_score

        loss = float(-np.mean(y_val * np.log(p) + (1 - y_val) * np.log(1 - p)))
        print(
            json.dumps(
                {
                    "candidate": cand.name,
                    "validation_loss": round(loss, 4),
                    "validation_accuracy": round(float(((p > 0.5) == y_val).mean()), 4),
                    "validation_roc_auc": round(float(roc_auc_score(y_val, p)), 4),
                    "epochs": epochs,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
