"""Response bodies of the native API, for the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.artifacts import InputField


class ClassPrediction(BaseModel):
    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="probability of every class")
    unknown_categories: list[str] = Field(
        default_factory=list,
        description="fields whose category the model never saw; encoded as training decided",
    )


class ValuePrediction(BaseModel):
    prediction: float = Field(description="the predicted value (a regression model)")
    unknown_categories: list[str] = Field(default_factory=list)


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[ClassPrediction | ValuePrediction] = Field(
        description="one per instance: classes for a classifier, a value for a regression"
    )


class VersionInfo(BaseModel):
    version: int
    status: str
    reason: str = ""
    runtime: str | None = None
    device: str | None = None
    load_seconds: float | None = None


class ModelSummary(BaseModel):
    name: str
    default_version: int | None = Field(
        description="the version unpinned requests reach: 'stable' if set, else the highest"
    )
    labels: dict[str, int] = Field(default_factory=dict, description="label to version")
    canary_percent: float = Field(0, description="share of default traffic sent to 'canary'")
    versions: list[VersionInfo]


class ModelMetadata(ModelSummary):
    version: int | None = Field(description="the version this card describes")
    title: str | None = None
    description: str | None = None
    classes: list[str] = []
    inputs: list[InputField] = []
    metrics: dict[str, Any] = {}
    card: dict[str, Any] | None = Field(None, description="the full model card")
