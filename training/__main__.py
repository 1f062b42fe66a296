"""python -m training [MODEL ...]: train, score and export the served models.

Each version is trained with early stopping on its validation split, scored once on
its test split, and written to OUTPUT_DIR/<name>/<version>/ as model.keras, a
SavedModel, model.onnx, pipeline.json, model_card.json and history.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "models"

EPILOG = """examples:
  python -m training                       train every model (refuses to replace versions)
  python -m training digits --versions 2   only digits v2
  python -m training income --overwrite    retrain income v1 in place

Data files are read from --data-dir, else $DATA_DIR, else downloaded and checked
against their SHA-256. A service watching OUTPUT_DIR picks up a new version when its
folder appears (folders are written beside it and renamed into place)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from training.recipes import RECIPES

    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=(__doc__ or "").split("\n", 1)[1].strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "models",
        nargs="*",
        choices=[[], *RECIPES],
        metavar="MODEL",
        help=f"models to train, any of: {', '.join(RECIPES)} (default: all)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder holding the raw data files (default: $DATA_DIR if set, else download "
        "to ~/.cache/keras-serve/data)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help="models folder to write <name>/<version>/ into (default: this checkout's "
        "models/, the folder the service serves)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace versions that already exist in --output-dir (default: refuse, and "
        "train nothing, so a served version is never replaced by accident)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="N",
        help="cap on training epochs (default: each recipe's own cap; early stopping on "
        "validation loss usually ends sooner)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for the data split, weight initialisation, shuffling and augmentation; "
        "the same seed reproduces the same figures (default: 0)",
    )
    parser.add_argument(
        "--versions",
        type=int,
        nargs="*",
        default=None,
        metavar="V",
        help="train only these version numbers of the chosen models (default: all)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no per-epoch progress lines (default: one per epoch)"
    )
    parser.add_argument(
        "--verbose-logs",
        action="store_true",
        help="show TensorFlow, absl and tf2onnx log messages (default: hidden)",
    )
    return parser.parse_args(argv)


def silence_libraries() -> None:
    """Hide the C++, absl and converter chatter that buries the per-model results."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("tensorflow", "absl", "tf2onnx", "onnx", "h5py", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # TensorFlow's C++ side logs through absl before any Python setting applies
    # ("All log messages before absl::InitializeLog()", oneDNN notices): import it
    # with the process's stderr pointed at /dev/null, then restore stderr.
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import keras  # noqa: F401
            import tensorflow as tf

            tf.constant(0.0) + 1.0  # the first op loads the kernels, which log too
    except ImportError:  # training without TensorFlow fails later with a clear message
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; nothing to quiet without it
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose_logs:
        silence_libraries()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from training.datasets import DataUnavailable
    from training.fit import train
    from training.recipes import RECIPES

    names = args.models or list(RECIPES)
    chosen = [
        r
        for name in names
        for r in RECIPES[name]
        if not args.versions or r.version in args.versions
    ]
    existing = [
        args.output_dir / r.name / str(r.version)
        for r in chosen
        if (args.output_dir / r.name / str(r.version)).exists()
    ]
    if existing and not args.overwrite:
        print(
            "error: these versions exist already; pass --overwrite to replace them, or "
            "--output-dir to write elsewhere:\n  " + "\n  ".join(map(str, existing)),
            file=sys.stderr,
        )
        return 2
    summaries = []
    for recipe in chosen:
        print(f"== training {recipe.name} v{recipe.version}: {recipe.architecture}", flush=True)
        try:
            outcome = train(
                recipe,
                args.data_dir,
                args.output_dir,
                args.seed,
                args.epochs,
                verbose=0 if args.quiet else 2,
            )
        except DataUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        summaries.append(outcome.summary())
        from training.reference import generate  # insight data: reference.json

        generate(outcome.path, args.data_dir)
        print(summaries[-1], flush=True)
    print("\nSummary (test split, scored once; baseline: logistic regression)")
    for text in summaries:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
