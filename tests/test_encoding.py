"""The encoding pipeline: fitting, missing and unknown values, JSON round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.encoding import (
    EncodingError,
    FeatureSpec,
    ImagePipeline,
    TabularPipeline,
    load_pipeline,
    save_pipeline,
)
from app.encoding.tabular import MISSING, OTHER

SPECS = (
    FeatureSpec("age", "numeric", minimum=0, maximum=120, integer=True),
    FeatureSpec("gain", "numeric", minimum=0, maximum=1e6, transform="log1p"),
    FeatureSpec("job", "categorical", min_count=2, missing_markers=("?",)),
    FeatureSpec("sex", "categorical", min_count=1),
    FeatureSpec("band", "ordinal", order=("low", "mid", "high")),
)
TRAIN = {
    "age": [20, 30, 40, 50],
    "gain": [0, 0, 100, 1000],
    "job": ["Sales", "Sales", "?", "Astronaut"],  # Astronaut is rare (< min_count)
    "sex": ["Male", "Female", "Male", "Female"],
    "band": ["low", "mid", "high", "mid"],
}


@pytest.fixture
def pipeline() -> TabularPipeline:
    return TabularPipeline.fit(TRAIN, SPECS)


def row(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"age": 30, "gain": 0, "job": "Sales", "sex": "Male", "band": "mid"}
    base.update(changes)
    return base


def test_statistics_come_from_the_training_columns(pipeline: TabularPipeline) -> None:
    age = pipeline.features[0]
    assert age["mean"] == pytest.approx(35.0)
    assert age["std"] == pytest.approx(np.std([20, 30, 40, 50]))
    gain = pipeline.features[1]
    assert gain["mean"] == pytest.approx(np.mean(np.log1p([0, 0, 100, 1000])))
    job = pipeline.features[2]
    assert job["vocabulary"] == ["Sales"] and job["rare"] == ["Astronaut"]
    assert job["allow_missing"] and not pipeline.features[3]["allow_missing"]
    assert pipeline.columns == [
        "age",
        "gain",
        "job=Sales",
        f"job={OTHER}",
        f"job={MISSING}",
        "sex=Female",
        "sex=Male",
        "band",
    ]


def test_encoding_a_known_row(pipeline: TabularPipeline) -> None:
    encoded = pipeline.encode_rows([row(age=40, band="high")])
    expected_age = (40 - 35) / np.std([20, 30, 40, 50])
    assert encoded.matrix.dtype == np.float32
    np.testing.assert_allclose(
        encoded.matrix[0], [expected_age, encoded.matrix[0, 1], 1, 0, 0, 0, 1, 1.0], rtol=1e-6
    )
    assert encoded.unknown == [[]]


@pytest.mark.parametrize("missing", [None, "?", " ? ", math.nan])
def test_missing_goes_to_the_missing_column(pipeline: TabularPipeline, missing: object) -> None:
    encoded = pipeline.encode_rows([row(job=missing)])
    job = encoded.matrix[0, 2:5]
    assert job.tolist() == [0, 0, 1]
    assert encoded.unknown == [[]]


def test_missing_is_rejected_where_training_never_saw_it(pipeline: TabularPipeline) -> None:
    with pytest.raises(EncodingError, match="sex") as err:
        pipeline.encode_rows([row(), row(sex=None)])
    assert err.value.index == 1


def test_unseen_category_uses_the_trained_other_column_and_is_flagged(
    pipeline: TabularPipeline,
) -> None:
    encoded = pipeline.encode_rows([row(job="Pilot"), row(job="Astronaut")])
    assert encoded.matrix[0, 2:5].tolist() == [0, 1, 0]
    assert encoded.matrix[1, 2:5].tolist() == [0, 1, 0]
    assert encoded.unknown == [["job"], []]  # a rare-but-seen value is not "unknown"


def test_unseen_category_without_other_column_sets_nothing(pipeline: TabularPipeline) -> None:
    encoded = pipeline.encode_rows([row(sex="Other")])
    assert encoded.matrix[0, 5:7].tolist() == [0, 0]
    assert encoded.unknown == [["sex"]]


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"band": "extreme"}, "band", "allowed values"),
        ({"age": 121}, "age", "between"),
        ({"age": 30.5}, "age", "whole number"),
        ({"age": math.inf}, "age", "finite"),
        ({"age": "thirty"}, "age", "number"),
        ({"age": True}, "age", "number"),
        ({"job": 7}, "job", "string"),
    ],
)
def test_values_the_encoding_cannot_place_name_the_field(
    pipeline: TabularPipeline, changes: dict[str, object], field: str, problem: str
) -> None:
    with pytest.raises(EncodingError) as err:
        pipeline.encode_rows([row(**changes)])
    assert err.value.field == field
    assert problem in err.value.problem


def test_tabular_pipeline_round_trips_through_json(
    pipeline: TabularPipeline, tmp_path: Path
) -> None:
    save_pipeline(pipeline, tmp_path / "pipeline.json")
    assert json.loads((tmp_path / "pipeline.json").read_text())["kind"] == "tabular"
    loaded = load_pipeline(tmp_path / "pipeline.json")
    assert isinstance(loaded, TabularPipeline)
    rows = [row(), row(job=None), row(job="Pilot", band="high")]
    np.testing.assert_array_equal(
        loaded.encode_rows(rows).matrix, pipeline.encode_rows(rows).matrix
    )


def test_image_pipeline_round_trips_and_validates(tmp_path: Path) -> None:
    pipeline = ImagePipeline(28, 28, 255.0, [28, 28, 1])
    save_pipeline(pipeline, tmp_path / "p.json")
    loaded = load_pipeline(tmp_path / "p.json")
    assert isinstance(loaded, ImagePipeline)
    flat = np.full((2, 784), 255, dtype=np.uint8)
    out = loaded.encode(flat)
    assert out.shape == (2, 28, 28, 1) and out.max() == 1.0
    with pytest.raises(EncodingError, match="between 0 and 255"):
        loaded.encode(np.full((1, 28, 28), 300.0))
    with pytest.raises(EncodingError, match="NaN"):
        loaded.encode(np.full((1, 28, 28), np.nan))
    with pytest.raises(EncodingError, match="28x28"):
        loaded.encode(np.zeros((1, 27, 27)))


def test_ordinal_levels_outside_the_order_fail_at_fit_time() -> None:
    with pytest.raises(ValueError, match="not in the order"):
        TabularPipeline.fit(
            {"band": ["low", "huge"]}, (FeatureSpec("band", "ordinal", order=("low",)),)
        )


def test_ignored_numeric_is_validated_but_adds_no_column() -> None:
    specs = (
        FeatureSpec("weight", "numeric", minimum=0, maximum=10, ignored=True),
        FeatureSpec("age", "numeric"),
    )
    pipeline = TabularPipeline.fit({"weight": [1, 2], "age": [20, 40]}, specs)
    assert pipeline.columns == ["age"]
    assert pipeline.encode_rows([{"weight": 5, "age": 30}]).matrix.tolist() == [[0.0]]
    with pytest.raises(EncodingError, match="between"):
        pipeline.encode_rows([{"weight": 11, "age": 30}])


@pytest.mark.parametrize("value", [["mid"], {"level": "mid"}, 1])
def test_ordinal_values_of_other_types_are_refused_by_name(
    pipeline: TabularPipeline, value: object
) -> None:
    with pytest.raises(EncodingError) as err:
        pipeline.encode_rows([row(band=value)])
    assert err.value.field == "band"
