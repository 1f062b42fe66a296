"""Where the raw data files come from: a local data directory first, else the internet.

The data directory is a *cache* of the canonical downloads (see
``../shared/data/README.md``). A file found there is used as it is; its SHA-256
is recorded in the model card and compared with the canonical one. A file that
must be downloaded is verified before use, and a failed download says which
file, which URL, and which setting would have avoided it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DATA_DIR_ENV = "DATA_DIR"
DEFAULT_CACHE = Path.home() / ".cache" / "keras-serve" / "data"


@dataclass(frozen=True)
class Source:
    url: str
    sha256: str


SOURCES: dict[str, Source] = {
    "adult.data": Source(
        "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.data",
        "5b00264637dbfec36bdeaab5676b0b309ff9eb788d63554ca0a249491c86603d",
    ),
    "adult.test": Source(
        "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.test",
        "a2a9044bc167a35b2361efbabec64e89d69ce82d9790d2980119aac5fd7e9c05",
    ),
    "mnist.npz": Source(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
        # the shared cache holds a re-packed copy (same images, same order)
        "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",
    ),
    "salary_data_cleaned.csv": Source(
        "https://raw.githubusercontent.com/oyogo/salary_dashboard/master/data/salary_data_cleaned.csv",
        "e798c97e20a63588bd73c2e3f758d6c28ad7705468bb5088d9f89a6cc8ec7196",
    ),
}
# Keras' own copy of mnist.npz is byte-different from the re-packed one above.
ALSO_ACCEPTED = {"mnist.npz": {"731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}}


class DataUnavailable(RuntimeError):
    """A data file is neither in the data directory nor downloadable."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_data_dir(explicit: Path | None = None) -> Path | None:
    """``--data-dir`` wins, then ``$DATA_DIR``; None means 'download into the cache'."""
    if explicit is not None:
        return explicit
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else None


def fetch(filename: str, data_dir: Path | None = None, timeout: float = 30.0) -> Path:
    """Return a local path for ``filename``, downloading and verifying it if needed."""
    source = SOURCES[filename]
    data_dir = resolve_data_dir(data_dir)
    if data_dir is not None and (data_dir / filename).is_file():
        path = data_dir / filename
        digest = sha256_of(path)
        if digest != source.sha256 and digest not in ALSO_ACCEPTED.get(filename, set()):
            log.warning("%s has SHA-256 %s, not the canonical %s", path, digest, source.sha256)
        return path
    target_dir = data_dir or DEFAULT_CACHE
    target = target_dir / filename
    if target.is_file() and sha256_of(target) == source.sha256:
        return target
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with (
            urllib.request.urlopen(source.url, timeout=timeout) as response,  # noqa: S310
            tempfile.NamedTemporaryFile(dir=target_dir, delete=False) as tmp,
        ):
            shutil.copyfileobj(response, tmp)
        partial = Path(tmp.name)
    except OSError as exc:
        where = f"{DATA_DIR_ENV}={data_dir}" if data_dir else f"{DATA_DIR_ENV} (not set)"
        raise DataUnavailable(
            f"{filename} is not in the data directory [{where}] and downloading it from "
            f"{source.url} failed: {exc}. Set {DATA_DIR_ENV} or pass --data-dir to a folder "
            f"holding {filename} (for example ../shared/data)."
        ) from exc
    digest = sha256_of(partial)
    if digest != source.sha256:
        partial.unlink()
        raise DataUnavailable(
            f"{filename} downloaded from {source.url} has SHA-256 {digest}, "
            f"expected {source.sha256}; refusing to use it."
        )
    partial.replace(target)
    return target
