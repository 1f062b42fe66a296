"""``python -m training [names...]``: train and export the served models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "models"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from training.recipes import RECIPES

    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument(
        "models",
        nargs="*",
        choices=[[], *RECIPES],
        metavar="MODEL",
        help=f"models to train (default: all of {', '.join(RECIPES)})",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the raw data files (default: $DATA_DIR, else download)",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="models folder")
    parser.add_argument(
        "--epochs", type=int, default=None, help="cap on epochs (default: recipe's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--versions", type=int, nargs="*", default=None, help="only these versions")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)

    from training.datasets import DataUnavailable
    from training.fit import train
    from training.recipes import RECIPES

    names = args.models or list(RECIPES)
    summaries = []
    for name in names:
        for recipe in RECIPES[name]:
            if args.versions and recipe.version not in args.versions:
                continue
            print(f"== training {name} v{recipe.version}: {recipe.architecture}", flush=True)
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
    print("\nSummary")
    for line in summaries:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
