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
from app.encoding.tabular import MISSING, OTHER, normalise

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


# ----------------------------------------------------- forgiving categories
VOCAB_SPECS = (
    FeatureSpec("sex", "categorical", min_count=1),
    FeatureSpec("country", "categorical", min_count=2),
    FeatureSpec("work", "categorical", min_count=1),
    FeatureSpec("band", "ordinal", order=("low", "mid-high", "top")),
)
VOCAB_TRAIN = {
    "sex": ["Male", "Female", "Male", "Female"],
    "country": ["United-States", "United-States", "Holand-Netherlands", "Mexico"],
    "work": ["Private", "Self-emp-inc", "Private", "State-gov"],
    "band": ["low", "mid-high", "top", "low"],
}


@pytest.fixture
def vocab() -> TabularPipeline:
    return TabularPipeline.fit(VOCAB_TRAIN, VOCAB_SPECS)


def vrow(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sex": "Male",
        "country": "United-States",
        "work": "Private",
        "band": "low",
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("male", "male"),
        ("MALE ", "male"),
        ("  United   States ", "united-states"),
        ("united_states", "united-states"),
        ("Self - emp__inc", "self-emp-inc"),
    ],
)
def test_normalise_folds_case_spaces_and_separator_runs(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    ("changes", "field", "canonical"),
    [
        ({"sex": "male"}, "sex", "Male"),
        ({"sex": "MALE "}, "sex", "Male"),
        ({"sex": " Male"}, "sex", "Male"),
        ({"country": "United States"}, "country", "United-States"),
        ({"country": "united_states"}, "country", "United-States"),
        ({"work": "self emp inc"}, "work", "Self-emp-inc"),
        ({"band": "MID HIGH"}, "band", "mid-high"),
    ],
)
def test_normalised_values_encode_as_their_canonical_value_and_say_so(
    vocab: TabularPipeline, changes: dict[str, str], field: str, canonical: str
) -> None:
    sent = vocab.encode_rows([vrow(**changes)])
    exact = vocab.encode_rows([vrow(**{field: canonical})])
    np.testing.assert_array_equal(sent.matrix, exact.matrix)
    assert sent.canonical == [{field: canonical}]
    assert sent.unknown == [[]]
    assert exact.canonical == [{}]  # nothing to report when sent as trained


def test_a_rare_training_value_matches_after_normalising_too(vocab: TabularPipeline) -> None:
    sent = vocab.encode_rows([vrow(country="holand netherlands")])
    assert sent.canonical == [{"country": "Holand-Netherlands"}]
    assert sent.unknown == [[]]
    other = vocab.columns.index(f"country={OTHER}")
    assert sent.matrix[0, other] == 1.0


@pytest.mark.parametrize(
    ("changes", "field", "suggestion"),
    [
        ({"work": "Privat"}, "work", "Private"),
        ({"work": "prvate"}, "work", "Private"),
        ({"sex": "Femal"}, "sex", "Female"),
        ({"country": "United-Stats"}, "country", "United-States"),
        ({"band": "mid-hihg"}, "band", "mid-high"),
    ],
)
def test_near_misses_are_rejected_with_a_suggestion(
    vocab: TabularPipeline, changes: dict[str, str], field: str, suggestion: str
) -> None:
    with pytest.raises(EncodingError) as err:
        vocab.encode_rows([vrow(), vrow(**changes)])
    assert err.value.field == field
    assert err.value.index == 1
    assert err.value.suggestion == suggestion
    assert f"did you mean {suggestion!r}?" in err.value.problem
    assert err.value.at(3).suggestion == suggestion  # relocating keeps the structured data


def test_the_problem_text_reads_as_documented(vocab: TabularPipeline) -> None:
    with pytest.raises(EncodingError) as err:
        vocab.encode_rows([vrow(work="Privat")])
    assert err.value.problem == "'Privat' is not a known value; did you mean 'Private'?"
    assert err.value.allowed is None


def test_ordinal_errors_list_the_allowed_levels(vocab: TabularPipeline) -> None:
    with pytest.raises(EncodingError) as err:
        vocab.encode_rows([vrow(band="enormous")])
    assert err.value.allowed == ["low", "mid-high", "top"]
    assert err.value.suggestion is None


def test_unseen_values_far_from_any_known_one_still_use_other(vocab: TabularPipeline) -> None:
    encoded = vocab.encode_rows([vrow(country="Japan")])
    assert encoded.unknown == [["country"]]
    assert encoded.matrix[0, vocab.columns.index(f"country={OTHER}")] == 1.0
    assert encoded.canonical == [{}]


def test_strict_mode_rejects_unseen_values_listing_the_allowed_ones(
    vocab: TabularPipeline,
) -> None:
    with pytest.raises(EncodingError) as err:
        vocab.encode_rows([vrow(country="Japan")], strict=True)
    assert err.value.field == "country" and err.value.index == 0
    assert err.value.allowed == ["Holand-Netherlands", "Mexico", "United-States"]
    assert "allowed: Holand-Netherlands, Mexico, United-States" in err.value.problem
    # known values, normalised ones and rare ones still pass in strict mode
    ok = vocab.encode_rows([vrow(country="united states"), vrow(country="Mexico")], strict=True)
    assert ok.unknown == [[], []]


def test_strict_mode_applies_to_column_input(vocab: TabularPipeline) -> None:
    columns = {k: [v] for k, v in vrow(sex="Other").items()}
    assert vocab.encode_columns(columns, 1).unknown == [["sex"]]
    with pytest.raises(EncodingError) as err:
        vocab.encode_columns(columns, 1, strict=True)
    assert err.value.field == "sex" and err.value.allowed == ["Female", "Male"]


def test_training_values_that_collide_when_normalised_match_exactly_only() -> None:
    spec = (FeatureSpec("code", "categorical", min_count=1),)
    fitted = TabularPipeline.fit({"code": ["A-B", "a b", "C"]}, spec)
    assert fitted.encode_rows([{"code": "A-B"}]).canonical == [{}]
    assert fitted.encode_rows([{"code": "a b"}]).unknown == [[]]
    encoded = fitted.encode_rows([{"code": "A_B"}])  # ambiguous: neither is guessed
    assert encoded.unknown == [["code"]] and encoded.canonical == [{}]
    assert not encoded.matrix[0, :3].any()


def test_binned_numeric_adds_piecewise_linear_columns() -> None:
    spec = (FeatureSpec("gain", "numeric", minimum=0, maximum=1e6, bins=4),)
    x = [0.0] * 80 + [5000.0] * 20 + [9000.0] * 20
    labels = np.array([0] * 80 + [0] * 20 + [1] * 20)
    fitted = TabularPipeline.fit({"gain": x}, spec, labels=labels)
    edges = fitted.features[0]["bin_edges"]
    assert edges[0] == 0.0 and edges[-1] == 9000.0 and len(edges) >= 3
    assert fitted.columns[0] == "gain" and fitted.columns[1] == "gain@bin1"
    low, high = fitted.encode_rows([{"gain": 0}, {"gain": 9000}]).matrix[:, 1:]
    assert low.tolist() == [0.0] * len(low) and high.tolist() == [1.0] * len(high)
    again = TabularPipeline.from_json(json.loads(json.dumps(fitted.to_json())))
    np.testing.assert_array_equal(
        again.encode_rows([{"gain": 7000}]).matrix, fitted.encode_rows([{"gain": 7000}]).matrix
    )
    with pytest.raises(ValueError, match="labels"):
        TabularPipeline.fit({"gain": x}, spec)


def test_piecewise_bins_equal_the_clipped_linear_formula() -> None:
    """Bin k holds clip((x - e[k-1]) / (e[k] - e[k-1]), 0, 1), below, inside and above."""
    spec = (FeatureSpec("x", "numeric", minimum=-100, maximum=100, bins=6),)
    rng = np.random.default_rng(0)
    x = rng.normal(size=600)
    fitted = TabularPipeline.fit({"x": x.tolist()}, spec, labels=(x > 0.3) ^ (x < -1))
    edges = np.asarray(fitted.features[0]["bin_edges"])
    probes = [-50.0, *edges.tolist(), *rng.uniform(-4, 4, 50).tolist(), 50.0]
    got = fitted.encode_rows([{"x": v} for v in probes]).matrix[:, 1:]
    expected = np.clip((np.asarray(probes)[:, None] - edges[:-1]) / np.diff(edges), 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
