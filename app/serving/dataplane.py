"""The data plane: the one path from a protocol-neutral request to named outputs.

Every protocol adapter (native, Open Inference v2, TF Serving, gRPC) decodes its
wire format into an :class:`InferenceRequest` and calls :meth:`DataPlane.infer`,
which does the rest once, for the version the request names:

1. look the version up (a ``ModelNotFound`` names what exists);
2. refuse unknown or repeated output names;
3. validate and encode the raw inputs with *that version's* schema and pipeline;
4. run the runtime on a worker thread, through the version's batcher;
5. build the requested outputs.

Work that can take long in Python (decoding an uploaded picture, a request of many
instances, parsing a large body) runs on a small pool of its own, so it neither
stalls the event loop nor crowds out the inference threads.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np

from app.encoding import EncodedBatch
from app.insight.collector import InsightCollector
from app.insight.drift import DriftWindow
from app.insight.drift import report as drift_report
from app.insight.explain import OcclusionPlan, TabularPlan
from app.insight.feedback import FeedbackStore, Label, Record, roc_auc
from app.observability import tracing
from app.observability.context import note_model, request_id
from app.observability.metrics import Metrics
from app.observability.payloads import PayloadLogger
from app.serving import admission
from app.serving.admission import Admission
from app.serving.batching import Batcher
from app.serving.broadcast import Broadcast
from app.serving.errors import (
    DeadlineExceeded,
    FeedbackDisabled,
    ModelNotFound,
    Overloaded,
    ServingError,
)
from app.serving.inference import ImageFile, InferenceRequest, InferenceResponse
from app.serving.journal import Journal, journal_path
from app.serving.model import ServedModel
from app.serving.repository import ModelRepository, VersionRef, VersionState
from app.serving.statistics import Statistics, Timing
from app.settings import Settings

Runner = Callable[[np.ndarray], np.ndarray]
P = ParamSpec("P")
T = TypeVar("T")
# at or above this many raw values a request is encoded off the event loop; below it
# the thread hop (tens of microseconds) costs more than the encoding itself
OFFLOAD_VALUES = 4096


@dataclass
class Lane:
    """What the data plane keeps per served model object: a timed runner and its batcher."""

    model: ServedModel
    run: Runner
    batcher: Batcher | None
    window: DriftWindow  # the version's recent traffic, for drift (app/insight/drift.py)


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
        settings: Settings,
        metrics: Metrics | None = None,
        gate: Admission | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics or Metrics()
        cores = os.cpu_count() or 2
        self.executor = ThreadPoolExecutor(max_workers=max(2, cores), thread_name_prefix="infer")
        self.preparer = ThreadPoolExecutor(max_workers=max(1, cores), thread_name_prefix="prepare")
        # C parsers (orjson) hold the GIL for a whole document: one at a time, so that
        # the event loop gets the GIL back between two large bodies
        self.parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parse")
        self._lanes: dict[tuple[str, int], Lane] = {}
        self.admission = gate or Admission(settings.max_in_flight, settings.max_in_flight_bytes)
        self.payloads: PayloadLogger | None = None
        if settings.payload_log_rate > 0:
            dropped = self.metrics.payload_log_dropped
            self.payloads = PayloadLogger(
                settings.payload_log_rate,
                settings.payload_log_sink,
                settings.payload_log_redact,
                settings.payload_log_buffer,
                on_drop=dropped.inc,
            )
        journal = journal_path()  # several workers: admin changes reach each through it
        self.changes = Broadcast(repository, Journal(journal) if journal else None)
        self.statistics = Statistics()  # per version, in Triton's shape (OIP extension)
        self.feedback: FeedbackStore | None = None
        if settings.feedback:
            self.feedback = FeedbackStore(
                settings.database_location(),
                settings.prediction_max_age_s,
                settings.prediction_max_rows,
                settings.feedback_queue,
            )
        repository.listeners.append(self._forget)
        self.metrics.add_collector(InsightCollector(self))
        self.metrics.track_queue(self.queue_depth)

    # ----------------------------------------------------------------- lookup
    def model(self, name: str, version: VersionRef = None) -> ServedModel:
        """The version a number or label names (None: the default); raises ModelNotFound
        (a 404 in every protocol). Metadata and readiness use it: no canary split."""
        model = self.repository.get(name, version)
        note_model(model.name, model.version)
        return model

    def route(self, name: str, version: VersionRef = None) -> ServedModel:
        """The version that answers an inference request: as ``model``, except that the
        default traffic is split between ``stable`` and ``canary`` as configured."""
        model = self.repository.route(name, version)
        note_model(model.name, model.version)
        return model

    def check_room(self, name: str, version: VersionRef) -> None:
        """Before a request's body is read: ModelNotFound for an unknown model or version,
        and Overloaded when that version's batch queue is already full. Reading and
        parsing a body the queue cannot take would spend the CPU and memory the bound is
        there to protect (a 100-image JSON body parses into megabytes of Python lists)."""
        model = self.repository.get(name, version)
        lane = self._lanes.get((model.name, model.version))
        batcher = lane.batcher if lane is not None and lane.model is model else None
        if batcher is not None and batcher.is_full:
            raise batcher.refuse_full()

    # ------------------------------------------------------------------ infer
    async def infer(
        self, name: str, version: VersionRef, request: InferenceRequest
    ) -> InferenceResponse:
        """Validate, encode, batch, run and answer one request; raises ServingError."""
        payloads = self.payloads
        if payloads is None or not payloads.sampled():
            return await self._infer(name, version, request)
        started = time.perf_counter()
        try:
            response = await self._infer(name, version, request)
        except ServingError as exc:
            payloads.record(request, request.protocol, name, None, started, exc)
            raise
        images = self.repository.get(name, response.version).is_image
        payloads.record(request, request.protocol, name, response, started, None, images)
        return response

    async def _infer(
        self, name: str, version: VersionRef, request: InferenceRequest
    ) -> InferenceResponse:
        model = self.route(name, version)  # the canary split happens here, once
        outputs = model.select_outputs(request.outputs)
        inputs = request.inputs
        explain, threshold = model.options(
            request.parameters, len(inputs), self.settings.max_explain_instances
        )
        strict, prepare = model.encoding_options(
            request.parameters, self.settings.strict_categories
        )
        if isinstance(inputs, ImageFile) and not model.is_image:
            raise ModelNotFound(name, version, "does not offer image uploads")
        entered = not admission.holding.get()
        if entered and not self.admission.try_enter():
            self._dropped(model, "in_flight")
            raise Overloaded(self.admission.refusal())
        stats = self.statistics.of(model.name, model.version)
        started = time.perf_counter_ns()
        try:
            heavy = len(inputs) * model.values_per_instance >= OFFLOAD_VALUES
            if isinstance(inputs, ImageFile) or heavy or prepare:
                encoded = await self.offload(model.encode, inputs, strict, prepare)
            else:
                encoded = model.encode(inputs, strict)
            encoded_at = time.perf_counter_ns()
            self._count_unseen(model, encoded.unknown)
            timing = Timing()
            probabilities = await self.run(
                model, encoded.matrix, request.deadline, request.disconnected, timing
            )
            decided = model.decide(probabilities, threshold)
            explanations = None
            if explain:
                explanations = await self.explain(
                    model, encoded.matrix, decided, request.deadline, request.disconnected
                )
            response = model.respond(
                probabilities, encoded, outputs, request.id, decided, explanations
            )
            if prepare:
                response.prepared = model.prepared_images(encoded.matrix)
            self._observe(model, encoded, probabilities, decided, request.id)
        except BaseException:  # invalid input, dropped, a runtime fault, or the caller left
            stats.failed(started, time.perf_counter_ns())
            raise
        finally:
            if entered:
                self.admission.leave()
        ended = time.perf_counter_ns()
        stats.succeeded(len(inputs), started, encoded_at, timing, ended)
        if tracing.exporter.enabled:
            tracing.note_stages(
                model.name,
                model.version,
                [
                    ("validate_encode", started, encoded_at),
                    ("queue", encoded_at, timing.started_ns),
                    ("inference", timing.started_ns, timing.finished_ns),
                    ("respond", timing.finished_ns, ended),
                ],
            )
        return response

    # ---------------------------------------------------------------- insight
    def _observe(
        self,
        model: ServedModel,
        encoded: EncodedBatch,
        probabilities: np.ndarray,
        decided: np.ndarray,
        given_id: str | None,
    ) -> None:
        """Record an answer for drift and live accuracy: appends to bounded buffers only."""
        if model.insight.layout is not None:
            self._lane(model).window.observe(encoded.matrix, encoded.unknown)
        rid = given_id or request_id()
        if self.feedback is not None and rid != "-" and model.records_predictions:
            binary = len(model.classes) == 2
            self.feedback.record(
                Record(
                    rid,
                    model.name,
                    model.version,
                    [model.classes[i] for i in decided.tolist()],
                    probabilities[:, 1].tolist() if binary else None,
                    time.time(),
                )
            )

    async def explain(
        self,
        model: ServedModel,
        x: np.ndarray,
        targets: np.ndarray,
        deadline: float | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[dict[str, Any]]:
        """Per instance of encoded ``x``, why the model chose ``targets`` (class indices).

        The coalition (or occlusion) rows go through the version's batcher in chunks,
        so explanations queue behind predictions and never hold the runtime long.
        """
        insight = model.insight
        explainer = insight.tabular or insight.image
        if explainer is None:  # pragma: no cover - every pipeline kind has one
            raise ModelNotFound(model.name, model.version, "cannot explain its predictions")
        plans: list[TabularPlan | OcclusionPlan] = [
            await self.offload(explainer.plan, row) for row in x
        ]
        rows = np.concatenate([p.rows for p in plans])
        chunk = self.settings.explain_chunk_rows
        parts = [
            await self.run(model, rows[i : i + chunk], deadline, disconnected)
            for i in range(0, len(rows), chunk)
        ]
        out = np.concatenate(parts)
        results: list[dict[str, Any]] = []
        start = 0
        for plan, target in zip(plans, targets.tolist(), strict=True):
            probabilities = out[start : start + len(plan.rows)]
            start += len(plan.rows)
            label = model.classes[target]
            if insight.tabular is not None and isinstance(plan, TabularPlan):
                e = insight.tabular.combine(plan, probabilities, target)
                results.append(
                    {
                        "method": "shapley",
                        "class": label,
                        "value": e.value,
                        "base": e.base,
                        "attributions": e.attributions,
                    }
                )
            elif insight.image is not None and isinstance(plan, OcclusionPlan):
                saliency = insight.image.combine(plan, probabilities, target)
                results.append(
                    {
                        "method": "occlusion",
                        "class": label,
                        "value": float(probabilities[0, target]),
                        "saliency": np.round(saliency, 6).tolist(),
                    }
                )
        return results

    def drift(self, model: ServedModel) -> dict[str, Any]:
        """The drift report of a version's recent traffic (computed now, on read)."""
        profile = model.insight.drift_profile
        layout = model.insight.layout
        if layout is None:
            raise ModelNotFound(model.name, model.version, "takes images: drift is for tabular")
        if profile is None:
            raise ModelNotFound(
                model.name, model.version, "has no reference.json (python -m training.reference)"
            )
        return drift_report(layout, profile, self._lane(model).window)

    async def label(self, items: list[Label]) -> int:
        """Join true labels with stored predictions (on a worker thread: it is SQL)."""
        store = self._store()

        def classes_of(name: str, version: int) -> list[str] | None:
            state = self.repository.versions(name).get(version)
            return list(state.model.classes) if state and state.model else None

        return await self.offload(store.label, items, classes_of)

    def performance(self, model: ServedModel) -> dict[str, Any]:
        """Live accuracy (and ROC AUC, binary) from feedback, beside the card's test figures.
        With feedback off (the default) the same shape, saying so, and no live figures."""
        if self.feedback is None:
            test = model.card.metrics.get("test")
            return {
                "model": model.name,
                "version": model.version,
                "labelled": 0,
                "stored_predictions": 0,
                "window": self.settings.performance_window,
                "live": {"accuracy": None, "roc_auc": None},
                "card_test": {"accuracy": test.accuracy, "roc_auc": test.roc_auc, "rows": test.rows}
                if test is not None
                else {},
            }
        store = self._store()
        store.flush(1.0)  # answers of the last moment count too
        found = store.performance(model.name, model.version, self.settings.performance_window)
        scores, truths = found.pop("scores", None), found.pop("truths", None)
        auc = None
        if scores is not None and truths is not None and len(model.classes) == 2:
            positive = np.array([t == model.classes[1] for t in truths])
            auc = roc_auc(np.asarray(scores), positive)
        accuracy = found.pop("accuracy")
        live: dict[str, Any] = {"accuracy": accuracy, "roc_auc": auc}
        test = model.card.metrics.get("test")
        card: dict[str, Any] = {}
        if test is not None:
            card = {"accuracy": test.accuracy, "roc_auc": test.roc_auc, "rows": test.rows}
            if accuracy is not None:
                n = found["labelled"]
                live["accuracy_change"] = accuracy - test.accuracy
                # one binomial standard error of the live figure, to judge the change by
                live["accuracy_standard_error"] = float(np.sqrt(accuracy * (1 - accuracy) / n))
        # the same keys whatever the state: optional figures are null inside "live"
        return {
            **found,
            "window": self.settings.performance_window,
            "live": live,
            "card_test": card,
        }

    def _store(self) -> FeedbackStore:
        if self.feedback is None:
            raise FeedbackDisabled("feedback is turned off on this server (FEEDBACK=false)")
        return self.feedback

    async def offload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run slow request preparation (decoding, encoding) on the preparation pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.preparer, lambda: fn(*args, **kwargs))

    async def offload_serial(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run work that holds the GIL throughout (a C parser on a large body) on one
        thread of its own: it cannot stall the event loop for longer than one such job."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.parser, lambda: fn(*args, **kwargs))

    async def run(
        self,
        model: ServedModel,
        x: np.ndarray,
        deadline: float | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        timing: Timing | None = None,
    ) -> np.ndarray:
        """Class probabilities for encoded rows ``x`` of ``model``; ``timing`` gets when
        the runtime call ran (for the statistics)."""
        lane = self._lane(model)
        if lane.batcher is not None:
            return await lane.batcher.submit(x, deadline, disconnected, timing)
        if deadline is not None and time.monotonic() > deadline:
            self._dropped(model, "deadline")
            raise DeadlineExceeded("the request's deadline passed before the model ran")
        self.metrics.batch_size.labels(model.name, str(model.version)).observe(len(x))
        self.statistics.of(model.name, model.version).executed()
        if timing is None:
            return await asyncio.get_running_loop().run_in_executor(self.executor, lane.run, x)

        def timed() -> np.ndarray:
            timing.started_ns = time.perf_counter_ns()
            try:
                return lane.run(x)
            finally:
                timing.finished_ns = time.perf_counter_ns()

        return await asyncio.get_running_loop().run_in_executor(self.executor, timed)

    def _count_unseen(self, model: ServedModel, unknown: list[list[str]]) -> None:
        """Categories training never saw, per model, version and field (they took the
        trained "other" path; in strict mode they were refused instead)."""
        for fields in unknown:
            for field in fields:
                self.metrics.unseen.labels(model.name, str(model.version), field).inc()

    def _dropped(self, model: ServedModel, reason: str) -> None:
        self.metrics.rejected.labels(model.name, str(model.version), reason).inc()

    # ------------------------------------------------------------------ lanes
    def _lane(self, model: ServedModel) -> Lane:
        """The lane of this exact model object; a reloaded version gets a fresh one."""
        key = (model.name, model.version)
        lane = self._lanes.get(key)
        if lane is None or lane.model is not model:
            lane = self._lanes[key] = self._open_lane(model)
        return lane

    def _open_lane(self, model: ServedModel) -> Lane:
        labels = (model.name, str(model.version))
        histogram = self.metrics.inference.labels(*labels)

        def timed(x: np.ndarray) -> np.ndarray:  # runs on a worker thread
            started = time.perf_counter()
            try:
                return model.predict(x)
            finally:
                histogram.observe(time.perf_counter() - started)

        batcher = None
        if self.settings.batching:
            rejected = self.metrics.rejected

            def dropped(reason: str) -> None:
                rejected.labels(*labels, reason).inc()

            observe = self.metrics.batch_size.labels(*labels).observe
            executed = self.statistics.of(model.name, model.version).executed

            def on_batch(rows: int) -> None:
                observe(rows)
                executed()

            batcher = Batcher(
                timed,
                self.executor,
                self.settings.max_batch_size,
                self.settings.max_batch_wait_ms / 1000,
                on_batch=on_batch,
                max_queued=self.settings.max_queued_rows,
                on_drop=dropped,
                name=f"{model.name} v{model.version}",
                inline_budget=self.settings.inline_run_us / 1e6,
                cpu_timed=model.runtime.on_caller_thread,
            )
        return Lane(model, timed, batcher, DriftWindow(self.settings.drift_window))

    def queue_depth(self) -> int:
        return sum(lane.batcher.queue_depth for lane in self._lanes.values() if lane.batcher)

    def _forget(self, state: VersionState) -> None:
        self._lanes.pop((state.name, state.version), None)
        self.metrics.model_loaded.labels(state.name, str(state.version)).set(
            1 if state.model is not None else 0
        )
        if state.model is not None:
            self.metrics.model_load_seconds.labels(state.name, str(state.version)).set(
                state.load_seconds
            )

    def close(self) -> None:
        if self.payloads is not None:
            self.payloads.close()
        if self.feedback is not None:
            self.feedback.close()
        self.parser.shutdown(wait=True, cancel_futures=True)
        self.preparer.shutdown(wait=True, cancel_futures=True)
        self.executor.shutdown(wait=True, cancel_futures=False)
