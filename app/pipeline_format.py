"""The documented shape of ``pipeline.json``, as Pydantic models.

The encoders (``app/encoding/tabular.py``, ``image.py``) read the file as plain data, for speed
and so that they import nothing heavy; these models exist to publish its JSON Schema
(``GET /schemas/pipeline.json``) and to check every committed artifact against it.
Extra keys are allowed, so that a newer encoder's additions stay readable.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class _Feature(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(description="the raw field a client sends")
    description: str = ""
    allow_missing: bool = Field(
        description="missing values are accepted and set an extra indicator column"
    )
    missing_markers: list[str] = Field(
        default_factory=list, description='strings that mean "missing" (Adult\'s "?")'
    )
    ignored: bool = Field(False, description="validated but not fed to the network")


class NumericFeature(_Feature):
    """One column: ``(x - mean) / std`` (after ``log1p`` when ``transform`` says so)."""

    type: Literal["numeric"]
    minimum: float | None = Field(None, description="smallest value a request may send")
    maximum: float | None = Field(None, description="largest value a request may send")
    integer: bool = Field(False, description="only whole numbers are accepted")
    transform: Literal["none", "log1p"] = "none"
    mean: float
    std: float = Field(gt=0)
    seen_min: float | None = None
    seen_max: float | None = None


class CategoricalFeature(_Feature):
    """One-hot: a column per ``vocabulary`` value, then an "other" column when
    ``unknown`` is ``other`` (rare and unseen values share it)."""

    type: Literal["categorical"]
    vocabulary: list[str]
    rare: list[str] = Field(default_factory=list, description="values that share 'other'")
    unknown: Literal["other", "zeros"] = Field(
        description="what an unseen value sets: the 'other' column, or no column"
    )
    integer: bool = Field(
        False,
        description="the values are whole numbers (a Keras IntegerLookup's): JSON integers "
        "are accepted as well as their decimal strings",
    )


class OrdinalFeature(_Feature):
    """One column: the level's index in ``order`` divided by ``len(order) - 1``."""

    type: Literal["ordinal"]
    order: list[str] = Field(description="the levels, lowest first")


Feature = Annotated[
    NumericFeature | CategoricalFeature | OrdinalFeature, Field(discriminator="type")
]


class TabularPipelineFile(BaseModel):
    """Records: each feature's columns in turn, in the order of ``features``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["tabular"]
    features: list[Feature]
    columns: list[str] | None = Field(None, description="the encoded column names (derived)")


class ImagePipelineFile(BaseModel):
    """Images: intensities divided by ``scale`` and reshaped to ``input_shape``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["image"]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    scale: float = Field(gt=0)
    input_shape: list[int]


class PipelineFile(
    RootModel[Annotated[TabularPipelineFile | ImagePipelineFile, Field(discriminator="kind")]]
):
    """``pipeline.json``: how raw inputs become the network's input matrix."""
