"""Prometheus gauges of model insight, computed when Prometheus scrapes.

Drift and live accuracy are computed on read, never on the request path, so they
are a custom collector: each scrape measures every serving version's window and
asks the prediction store once per version.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.serving.dataplane import DataPlane

log = logging.getLogger(__name__)


class InsightCollector(Collector):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def collect(self) -> Iterator[GaugeMetricFamily]:
        psi = GaugeMetricFamily(
            "keras_serve_drift_psi",
            "Population stability index of a raw field, recent traffic vs training "
            "(0.1 watch, 0.25 drift)",
            labels=["model", "version", "field"],
        )
        rates = GaugeMetricFamily(
            "keras_serve_drift_rate",
            "Share of recent instances with a missing, unknown or out-of-range value",
            labels=["model", "version", "field", "kind"],
        )
        accuracy = GaugeMetricFamily(
            "keras_serve_live_accuracy",
            "Accuracy of predictions labelled through POST /feedback (latest window)",
            labels=["model", "version"],
        )
        labelled = GaugeMetricFamily(
            "keras_serve_labelled_predictions",
            "Predictions labelled through POST /feedback (latest window)",
            labels=["model", "version"],
        )
        plane = self.dataplane
        for state in plane.repository.states():
            model = state.model
            if model is None:
                continue
            version = str(model.version)
            try:
                if model.insight.layout is not None and model.insight.drift_profile:
                    report = plane.drift(model)
                    for name, entry in report["fields"].items() if report["rows"] else ():
                        psi.add_metric([model.name, version, name], entry["psi"])
                        for kind in ("missing", "unknown", "out_of_range"):
                            if f"{kind}_rate" in entry:
                                rates.add_metric(
                                    [model.name, version, name, kind], entry[f"{kind}_rate"]
                                )
                if plane.feedback is not None:
                    found = plane.performance(model)
                    labelled.add_metric([model.name, version], found["labelled"])
                    if found["live"]["accuracy"] is not None:
                        accuracy.add_metric([model.name, version], found["live"]["accuracy"])
            except Exception:  # a scrape must not fail because one version could not be read
                log.exception("insight metrics of %s v%s", model.name, version)
        yield from (psi, rates, accuracy, labelled)
