"""``keras-serve``: one command for the service and the tools around it.

``serve`` runs the service (the same as ``python -m app``); ``train`` runs the
training package (``python -m training``, installed with the ``train`` extra),
``import`` turns your own Keras model into a served version (``python -m
training.importer``, the same extra) and
``bench`` the benchmark of a source checkout (``bench/run.py``). Training and the
benchmark run as their own programs, exec'd in place of this one, so the serving
app never imports them and their exit status is the command's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def _exec(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, *argv])  # noqa: S606 - our own interpreter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keras-serve",
        description="Serve Keras models over REST (native, Open Inference Protocol v2, "
        "TF Serving) and gRPC.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run the service (settings come from environment variables; see the README)",
    )
    commands.add_parser(
        "train",
        help="train the built-in models into models/ (see 'keras-serve train --help')",
        add_help=False,  # --help goes to the training program
    )
    commands.add_parser(
        "import",
        help="serve your own Keras model: keras-serve import PATH --name NAME (see --help)",
        add_help=False,
    )
    commands.add_parser(
        "bench",
        help="benchmark the service (needs a source checkout and wrk; see bench/)",
        add_help=False,
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        if rest:
            parser.error(
                f"serve takes no arguments (got {' '.join(rest)}); use environment variables"
            )
        from app.__main__ import main as serve

        serve()
        return 0
    if args.command in ("train", "import"):
        if (
            importlib.util.find_spec("training") is None
            or importlib.util.find_spec("keras") is None
        ):
            parser.error(f"{args.command} needs the train extra: pip install 'keras-serve[train]'")
        module = "training" if args.command == "train" else "training.importer"
        _exec(["-m", module, *rest])
    script = CHECKOUT / "bench" / "run.py"
    if not script.is_file():
        parser.error(
            "the benchmark lives in a source checkout (bench/run.py); clone the repository"
        )
    _exec([str(script), *rest])
    return 0  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
