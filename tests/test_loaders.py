"""Loaders parse files in the real formats, quirks included, from synthetic copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import datasets
from training.loaders import read_adult, read_mnist, read_salary


def test_adult_train_file(synthetic_dir: Path) -> None:
    data = read_adult(synthetic_dir / "adult.data")
    assert len(data) == 400
    assert list(data.frame.columns)[:3] == ["age", "workclass", "fnlwgt"]
    columns = data.columns()
    assert columns["workclass"][3] is None  # '?' became missing
    assert columns["native_country"][5] is None
    assert set(np.unique(data.labels)) == {0, 1}


def test_adult_test_file_skips_junk_line_and_strips_label_dots(synthetic_dir: Path) -> None:
    data = read_adult(synthetic_dir / "adult.test")
    assert len(data) == 200  # the '|1x3 Cross validator' line and the blank tail are gone
    assert data.frame["age"].dtype.kind == "i"
    assert 0 < data.labels.mean() < 1


def test_adult_rejects_unexpected_labels(tmp_path: Path) -> None:
    path = tmp_path / "adult.data"
    path.write_text(
        "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, "
        "Not-in-family, White, Male, 2174, 0, 40, United-States, maybe\n"
    )
    with pytest.raises(ValueError, match="unexpected income labels"):
        read_adult(path)


def test_salary_file(synthetic_dir: Path) -> None:
    data = read_salary(synthetic_dir / "salary_data_cleaned.csv")
    assert list(data.frame.columns) == ["age", "experience", "education", "gender"]
    assert len(data) == 300
    assert set(np.unique(data.labels)) == {0, 1}


def test_mnist_file(synthetic_dir: Path) -> None:
    x_train, y_train, x_test, _ = read_mnist(synthetic_dir / "mnist.npz")
    assert x_train.shape == (300, 28, 28) and x_test.shape == (100, 28, 28)
    assert y_train.dtype == np.int64


def test_fetch_reads_the_data_directory_first(synthetic_dir: Path) -> None:
    assert datasets.fetch("adult.data", synthetic_dir) == synthetic_dir / "adult.data"


def test_fetch_without_file_or_internet_names_file_url_and_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(datasets.DataUnavailable) as err:
        datasets.fetch("adult.test", tmp_path / "empty")
    message = str(err.value)
    assert "adult.test" in message
    assert datasets.SOURCES["adult.test"].url in message
    assert "DATA_DIR" in message and "--data-dir" in message


def test_fetch_verifies_a_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"tampered"))
    with pytest.raises(datasets.DataUnavailable, match="SHA-256"):
        datasets.fetch("adult.data", tmp_path)
    assert not (tmp_path / "adult.data").exists()
