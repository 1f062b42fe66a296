"""Validation-only choice of the digits augmentation: ``python -m training.search_digits``.

Each candidate trains on a fixed subset of the training split for a few epochs and is
scored on the validation split, clean and under every shift of the robustness suite
(applied to validation images, never test ones). Prints one JSON line per candidate.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from training.augment import NONE, Augmentation

MILD = Augmentation(
    rotation_degrees=12,
    scale_low=0.85,
    scale_high=1.15,
    shear=0.1,
    shift_pixels=1.5,
    thickness_probability=0.4,
    blur_probability=0.2,
    contrast_low=0.7,
    noise_std=0.04,
)
STRONG = Augmentation(
    rotation_degrees=22,
    scale_low=0.7,
    scale_high=1.3,
    shear=0.2,
    shift_pixels=2.0,
    thickness_probability=0.5,
    blur_probability=0.3,
    contrast_low=0.6,
    noise_std=0.06,
)
CANDIDATES = {"none": NONE, "mild": MILD, "strong": STRONG}
SUBSET = 20_000
EPOCHS = 8
VALIDATION_ROWS = 3_000


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from app.encoding import ImagePipeline
    from training.augment import training_dataset
    from training.recipes.base import ImageData, encode
    from training.recipes.digits import RECIPES, load
    from training.robustness import evaluate

    data_dir = Path(os.environ["DATA_DIR"]) if "DATA_DIR" in os.environ else None
    raw = load(data_dir, 0)
    assert isinstance(raw.train, ImageData) and isinstance(raw.validation, ImageData)
    train = raw.train.take(np.arange(SUBSET))
    val = raw.validation.take(np.arange(VALIDATION_ROWS))
    wanted = sys.argv[1:]
    for recipe in RECIPES:
        pipeline = recipe.fit_pipeline(train)
        assert isinstance(pipeline, ImagePipeline)
        x_tr = encode(pipeline, train)
        for name, aug in CANDIDATES.items():
            label = f"v{recipe.version} {name}"
            if wanted and label not in wanted:
                continue
            keras.utils.set_random_seed(0)
            model = recipe.build(tuple(x_tr.shape[1:]))
            model.compile(
                keras.optimizers.Adam(recipe.learning_rate),
                "sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            started = time.perf_counter()
            model.fit(
                training_dataset(x_tr, train.labels, recipe.batch_size, 0, aug),
                steps_per_epoch=-(-SUBSET // recipe.batch_size),
                epochs=EPOCHS,
                verbose=0,
            )

            def predict(
                images: np.ndarray, model: keras.Model = model, pipe: ImagePipeline = pipeline
            ) -> np.ndarray:
                x = pipe.encode(images)
                return np.asarray(model.predict(x, batch_size=2048, verbose=0)).argmax(1)

            scores = evaluate(predict, val.images, val.labels, 0)
            print(
                json.dumps(
                    {
                        "candidate": label,
                        "augmentation": aug.describe(),
                        "train_rows": SUBSET,
                        "epochs": EPOCHS,
                        "validation_accuracy": scores["clean"],
                        "validation_worst_shift": min(scores.values()),
                        "validation_shifts": scores,
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
