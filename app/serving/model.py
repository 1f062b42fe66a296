"""A served model version: load, preprocess, predict, postprocess (KServe's shape).

It knows its artifacts, its schema, its encoding and its runtime, and nothing about
HTTP or gRPC: the data plane hands it raw named inputs and gets named outputs back.
Everything per version (signature, schema, encoding) is built once, when it loads,
so a request pinned to a version is checked against that version's own fields.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.artifacts import PIPELINE_FILE, ModelCard, read_card
from app.encoding import (
    EncodedBatch,
    EncodingError,
    ImagePipeline,
    Pipeline,
    TabularPipeline,
    load_pipeline,
)
from app.encoding.image import prepare_pixels, prepare_upload
from app.insight.calibration import apply_temperature
from app.insight.reference import ReferenceError, build_insight, read_reference
from app.runtimes import InferenceRuntime, RuntimeLoadError, open_runtime
from app.serving.errors import InvalidInput, Problem, closest
from app.serving.inference import (
    LABEL,
    PREDICTION,
    PROBABILITIES,
    Columns,
    Head,
    ImageFile,
    InferenceResponse,
    Inputs,
    Rows,
    Tensors,
    head_label,
)
from app.serving.schema import RequestSchema
from app.serving.signature import Signature


class ArtifactError(RuntimeError):
    """A version directory is incomplete or inconsistent."""


def read_description(version_dir: Path) -> tuple[ModelCard, Pipeline]:
    """The card and pipeline of a version, checked against each other and the path.

    Cheap (two JSON files), so the app also uses it to pick the card whose request
    schema it documents, before any model is loaded.
    """
    try:
        card = read_card(version_dir)
    except FileNotFoundError:
        raise ArtifactError("model_card.json is missing") from None
    except ValueError as exc:
        raise ArtifactError(f"model_card.json is invalid: {exc}") from None
    if (card.name, str(card.version)) != (version_dir.parent.name, version_dir.name):
        raise ArtifactError(
            f"model card says {card.name} v{card.version}, but it lies in "
            f"{version_dir.parent.name}/{version_dir.name}"
        )
    try:
        pipeline = load_pipeline(version_dir / PIPELINE_FILE)
    except FileNotFoundError:
        raise ArtifactError(f"{PIPELINE_FILE} is missing") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{PIPELINE_FILE} is invalid: {exc}") from None
    _check_card_matches(card, pipeline)
    return card, pipeline


def _check_card_matches(card: ModelCard, pipeline: Pipeline) -> None:
    if isinstance(pipeline, TabularPipeline):
        declared = [f.name for f in card.inputs]
        if declared != pipeline.feature_names:
            raise ArtifactError(
                f"model card inputs {declared} do not match the pipeline's {pipeline.feature_names}"
            )
    elif [f.type for f in card.inputs] != ["image"]:
        raise ArtifactError("model card does not describe an image input")


BATCH = ""  # Problem.field of a problem with the batch as a whole (its size)


@dataclass(frozen=True)
class HeadColumns:
    """Where one output of a multi-output model lies: in the runtime's answer (``raw``:
    one column for a sigmoid) and in the served matrix (``served``: one per class)."""

    name: str
    label: str
    output: str
    classes: np.ndarray  # object array of class names; empty for regression
    raw_start: int
    raw_stop: int
    served_start: int
    served_stop: int


def _head_plan(card: ModelCard) -> list[HeadColumns]:
    plan: list[HeadColumns] = []
    raw = served = 0
    for head in card.heads or ():
        classes = np.asarray(head.classes, dtype=object)
        raw_width = len(head.classes) if head.output == "softmax" else 1
        served_width = max(len(head.classes), 1)
        plan.append(
            HeadColumns(
                head.name,
                head_label(head.name),
                head.output,
                classes,
                raw,
                raw + raw_width,
                served,
                served + served_width,
            )
        )
        raw, served = raw + raw_width, served + served_width
    return plan


def problem_of(exc: EncodingError) -> Problem:
    """An encoding error as data, with the fix it suggests or the values it allows."""
    allowed = tuple(exc.allowed) if exc.allowed else None
    return Problem(exc.field, exc.problem, exc.index, exc.suggestion, allowed)


class ServedModel:
    def __init__(
        self,
        path: Path,
        card: ModelCard,
        pipeline: Pipeline,
        runtime: InferenceRuntime,
        max_instances: int = 1000,
        max_image_pixels: int = 16_000_000,
    ) -> None:
        self.path = path
        self.card = card
        self.name = card.name
        self.version = card.version
        self.classes = card.classes
        self.pipeline = pipeline
        self.runtime = runtime
        self.signature = Signature.of(card)
        self.schema = RequestSchema(card, max_instances)
        self.max_instances = max_instances
        self.max_image_pixels = max_image_pixels
        self.fields = frozenset(f.name for f in card.inputs)
        # raw values one instance carries (784 for a 28x28 image): what encoding costs
        self.values_per_instance = sum(
            math.prod(d for d in spec.shape[1:] if d > 0) for spec in self.signature.inputs
        )
        self._class_array = np.asarray(card.classes, dtype=object)
        self.heads = tuple(Head(h.name, tuple(h.classes)) for h in card.heads or ())
        self._plan = _head_plan(card)
        self.load_seconds = 0.0
        try:  # explanations, drift profile, calibration: reference.json, when present
            self.insight = build_insight(pipeline, read_reference(path), card.example)
        except ReferenceError as exc:
            raise ArtifactError(str(exc)) from None

    # ------------------------------------------------------------------ load
    @classmethod
    def load(
        cls,
        version_dir: Path,
        runtime: Literal["onnx", "tensorflow", "keras"],
        threads: int = 1,
        max_instances: int = 1000,
        max_image_pixels: int = 16_000_000,
    ) -> ServedModel:
        """Read, cross-check and warm up one version; raise with a clear reason."""
        started = time.perf_counter()
        card, pipeline = read_description(version_dir)
        if card.runtime == "tensorflow" and runtime == "onnx":
            runtime = "tensorflow"  # imported with a layer ONNX cannot express
        try:
            engine = open_runtime(runtime, version_dir, threads)
        except RuntimeLoadError as exc:
            raise ArtifactError(str(exc)) from None
        model = cls(version_dir, card, pipeline, engine, max_instances, max_image_pixels)
        model.warm_up()
        model.load_seconds = time.perf_counter() - started
        return model

    def warm_up(self) -> None:
        """One real prediction on the card's example, so the first client isn't slow."""
        try:
            x = self.encode(Rows([self.card.example])).matrix
        except InvalidInput as exc:
            raise ArtifactError(f"the card's example is rejected: {exc}") from None
        try:
            probabilities = self.predict(x)
        except Exception as exc:
            raise ArtifactError(f"warm-up prediction failed: {exc}") from None
        width = 1 if self.is_regression else len(self.classes)
        if self.heads:
            width = self._plan[-1].served_stop
        if probabilities.shape != (1, width) or not np.isfinite(probabilities).all():
            raise ArtifactError(
                f"warm-up gave outputs of shape {list(probabilities.shape)}, expected [1, {width}]"
            )

    @property
    def is_regression(self) -> bool:
        return self.card.task == "regression"

    @property
    def records_predictions(self) -> bool:
        """Live accuracy is for single-output classifiers: one label per instance."""
        return not self.is_regression and not self.heads

    @property
    def is_image(self) -> bool:
        return isinstance(self.pipeline, ImagePipeline)

    # ------------------------------------------------------------ preprocess
    def encode(self, inputs: Inputs, strict: bool = False, prepare: bool = False) -> EncodedBatch:
        """Validate raw inputs against this version's schema and encode them.

        ``strict`` refuses categories training never saw (instead of the trained "other"
        path); ``prepare`` gives image instances of any size the MNIST-style preparation
        uploads get. Raises InvalidInput listing what is wrong, by field and instance.
        """
        n = len(inputs)
        if not 1 <= n <= self.max_instances:
            problem = (
                f"at most {self.max_instances} instances per request, got {n}"
                if n
                else "must hold at least one instance"
            )
            raise InvalidInput([Problem(BATCH, problem)])
        if isinstance(inputs, ImageFile):
            return self._encode_upload(inputs)
        checked = isinstance(inputs, Tensors)  # names checked against the signature
        if isinstance(inputs, Tensors):
            plain = self._plain_tabular(inputs)
            if plain is not None:
                return self._encode_named(plain, strict)
            inputs = self._columns_of(inputs, prepare)
        if isinstance(self.pipeline, ImagePipeline):
            return self._encode_images(self.pipeline, inputs, prepare)
        assert isinstance(self.pipeline, TabularPipeline)
        if isinstance(inputs, Columns):
            if not checked:
                self._check_names(inputs.columns, None)
            return self._encode_named(inputs, strict)
        rows = inputs.rows
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InvalidInput([Problem(BATCH, "must be an object keyed by input name", i)])
            if not row.keys() <= self.fields:
                self._check_names(row, i)
        try:
            return self.pipeline.encode_rows(rows, strict=strict)
        except EncodingError as exc:
            # the schema explains a rejection in full, every problem at once; a near miss
            # or an unseen category in strict mode is the encoding's to explain
            problems = self.schema.explain(rows)
            found = problem_of(exc)
            if not any((p.field, p.index) == (found.field, found.index) for p in problems):
                problems.append(found)
            raise InvalidInput(problems) from None

    def _columns_of(self, inputs: Tensors, prepare: bool = False) -> Columns:
        """Named tensors as columns, each checked against this version's signature."""
        problems: list[Problem] = []
        columns: dict[str, Any] = {}
        sizes: dict[str, int] = {}
        for tensor in inputs.tensors:
            spec = self.signature.input(tensor.name)
            if tensor.name in columns:
                problems.append(Problem(tensor.name, "appears more than once"))
            elif spec is None:
                columns[tensor.name] = None
            elif tensor.datatype not in spec.accepts:
                problems.append(Problem(tensor.name, spec.datatype_problem(tensor.datatype)))
            elif not spec.fits(tensor.shape) and not (prepare and len(tensor.shape) == 3):
                # with prepare, images of any size are accepted: [N, H, W]
                problems.append(Problem(tensor.name, spec.shape_problem(tensor.shape)))
            else:
                values = tensor.values
                if not self.is_image and not isinstance(values, list):
                    values = np.asarray(values).reshape(-1).tolist()
                columns[tensor.name] = values
                sizes[tensor.name] = tensor.shape[0]
        if problems:
            raise InvalidInput(problems)
        self._check_names(columns, None)
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{n}: {s}" for n, s in sizes.items())
            problem = f"all inputs must have the same batch size, got {listed}"
            raise InvalidInput([Problem(BATCH, problem)])
        return Columns(columns, len(inputs))

    def _plain_tabular(self, inputs: Tensors) -> Rows | Columns | None:
        """The common tabular request in one tight pass: every input once, each a flat
        list of the same length, in an accepted datatype, and none missing. One
        instance comes back as a row (the encoder's cheapest path). None sends the
        request through the full check, which names every problem."""
        if self.is_image or len(inputs.tensors) != len(self.fields):
            return None
        columns: dict[str, Any] = {}
        n = len(inputs)
        single = n == 1
        shape = (n,)
        specs = self.signature.by_name
        for tensor in inputs.tensors:
            spec = specs.get(tensor.name)
            if (
                spec is None
                or tensor.datatype not in spec.accepts
                or tensor.shape != shape
                or type(tensor.values) is not list
            ):
                return None
            columns[tensor.name] = tensor.values[0] if single else tensor.values
        if len(columns) != len(self.fields):  # a name given twice (so another is missing)
            return None
        return Rows([columns]) if single else Columns(columns, n)

    def _encode_named(self, inputs: Rows | Columns, strict: bool) -> EncodedBatch:
        """Encode tabular inputs whose names were checked, every input present (columns,
        or the one row :meth:`_plain_tabular` made): a rejection names its one field."""
        assert isinstance(self.pipeline, TabularPipeline)
        try:
            if isinstance(inputs, Rows):
                return self.pipeline.encode_rows(inputs.rows, strict=strict)
            return self.pipeline.encode_columns(inputs.columns, inputs.size, strict=strict)
        except EncodingError as exc:
            raise InvalidInput([problem_of(exc)]) from None

    def _check_names(self, given: Mapping[str, Any], index: int | None) -> None:
        expected = [f.name for f in self.card.inputs]
        problems = [
            Problem(name, "unexpected field", index, suggestion=closest(name, expected))
            for name in given
            if name not in self.fields
        ]
        if index is None:  # columns: every input is required (a row may omit nullable ones)
            problems += [Problem(name, "is missing") for name in expected if name not in given]
        if problems:
            raise InvalidInput(problems)

    def _encode_images(
        self, pipeline: ImagePipeline, inputs: Rows | Columns, prepare: bool = False
    ) -> EncodedBatch:
        name = self.card.inputs[0].name
        if isinstance(inputs, Columns):
            self._check_names(inputs.columns, None)
            images = inputs.columns[name]
            if not prepare and isinstance(images, np.ndarray) and images.dtype.kind in "iuf":
                # a tensor (OIP, gRPC): checked and scaled as one array; only a batch
                # with a bad image takes the per-image path below, which names it
                try:
                    matrix = pipeline.encode(images, name)
                    return EncodedBatch(matrix, [[] for _ in range(len(images))])
                except EncodingError:
                    pass
            rows: Sequence[Any] = [{name: image} for image in images]
        else:
            rows = inputs.rows
        pixels = np.stack([self._image_of(row, i, pipeline, prepare) for i, row in enumerate(rows)])
        try:
            matrix = pipeline.encode(pixels, name)
        except EncodingError as exc:
            raise InvalidInput([Problem(exc.field, exc.problem, exc.index)]) from None
        return EncodedBatch(matrix, [[] for _ in range(len(pixels))])

    def _image_of(
        self, row: Any, i: int, pipeline: ImagePipeline, prepare: bool = False
    ) -> np.ndarray:
        """One instance's image as ``[H, W]``, each bad one named by its index."""
        name = self.card.inputs[0].name
        if not isinstance(row, dict):
            raise InvalidInput([Problem(BATCH, f"must be an object with one field, {name}", i)])
        if row.keys() != {name}:
            self._check_names(row, i)
            raise InvalidInput([Problem(name, "is required", i)])
        if prepare:  # pixels in any position and size, prepared as an upload would be
            try:
                raw = np.asarray(row[name])
            except (ValueError, TypeError, OverflowError):
                raw = np.asarray([], dtype=object)
            try:
                return prepare_pixels(raw, name, self.max_image_pixels)
            except EncodingError as exc:
                raise InvalidInput([Problem(name, exc.problem, i)]) from None
        shape = (pipeline.height, pipeline.width)
        flat = (shape[0] * shape[1],)
        try:
            array = np.asarray(row[name])
        except (ValueError, TypeError, OverflowError):  # ragged nesting, huge integers
            array = np.asarray([], dtype=object)
        if array.dtype.kind not in "iuf" or array.shape not in (shape, flat):
            problem = f"must be a {shape[0]}x{shape[1]} (or {flat[0]}) array of numbers 0-255"
            if array.dtype.kind in "iuf":
                problem += f", got shape {list(array.shape)}"
            raise InvalidInput([Problem(name, problem, i)])
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InvalidInput([Problem(name, "must not contain NaN or Infinity", i)])
        # bytes cannot leave 0-255 (the OIP decoder hands UINT8 tensors over as such)
        if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
            raise InvalidInput([Problem(name, "intensities must be between 0 and 255", i)])
        return array.reshape(shape)

    def _encode_upload(self, upload: ImageFile) -> EncodedBatch:
        if not isinstance(self.pipeline, ImagePipeline):
            raise InvalidInput([Problem(upload.field, "this model takes records, not images")])
        try:
            pixels = prepare_upload(upload.data, self.max_image_pixels, upload.field)
            matrix = self.pipeline.encode(pixels[None], upload.field)
        except EncodingError as exc:
            raise InvalidInput([Problem(exc.field, exc.problem, exc.index)]) from None
        return EncodedBatch(matrix, [[]])

    # --------------------------------------------------------------- predict
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, classes]``, or a regression's values ``[N, 1]``
        (blocking; call it off the event loop)."""
        raw = self.runtime.run(x)
        if self.heads:  # the network's outputs side by side, each made what it serves
            return self._served_heads(raw.reshape(len(x), -1))
        if self.card.output == "linear":
            return raw.reshape(len(x), -1)
        if self.card.output == "sigmoid":
            positive = raw.reshape(-1, 1)
            raw = np.hstack([1.0 - positive, positive])
        # temperature scaling fitted on validation (reference.json): here, after every
        # runtime, so ONNX Runtime, TensorFlow and Keras serve the same probabilities
        return apply_temperature(raw, self.insight.temperature)

    def _served_heads(self, raw: np.ndarray) -> np.ndarray:
        """Per output, its probabilities (a sigmoid made ``[1 - p, p]``) or its value,
        side by side in head order: one matrix, so batching and queues stay as they are."""
        parts = []
        for part in self._plan:
            values = raw[:, part.raw_start : part.raw_stop]
            if part.output == "sigmoid":
                values = np.hstack([1.0 - values, values])
            parts.append(values)
        return np.hstack(parts).astype(np.float32, copy=False)

    # --------------------------------------------------------------- options
    def options(
        self, parameters: Mapping[str, Any], instances: int, max_explained: int
    ) -> tuple[bool, float | None]:
        """The per-request insight options ``explain`` and ``threshold``, checked."""
        problems = []
        explain = parameters.get("explain", False)
        if not isinstance(explain, bool):
            problems.append(Problem("parameters.explain", "must be true or false"))
        elif explain and self.heads:
            problems.append(Problem("parameters.explain", "applies to single-output models only"))
        elif explain and self.is_regression:
            problems.append(Problem("parameters.explain", "applies to classifiers only"))
        elif explain and instances > max_explained:
            problem = f"at most {max_explained} instances per explained request, got {instances}"
            problems.append(Problem("parameters.explain", problem))
        threshold = parameters.get("threshold")
        if threshold is not None:
            if self.heads:
                problem = "applies to single-output binary models only"
                problems.append(Problem("parameters.threshold", problem))
            elif len(self.classes) != 2:
                problem = "applies to binary models only; this one has classes " + ", ".join(
                    self.classes
                )
                problems.append(Problem("parameters.threshold", problem))
            elif (
                isinstance(threshold, bool)
                or not isinstance(threshold, (int, float))
                or not 0.0 <= float(threshold) <= 1.0
            ):
                problems.append(Problem("parameters.threshold", "must be a number from 0 to 1"))
        if problems:
            raise InvalidInput(problems)
        return explain, None if threshold is None else float(threshold)

    def encoding_options(
        self, parameters: Mapping[str, Any], strict_default: bool
    ) -> tuple[bool, bool]:
        """The per-request encoding options ``strict`` (refuse unseen categories) and
        ``prepare`` (MNIST-style preparation of raw pixels), checked."""
        problems = []
        strict = parameters.get("strict", strict_default)
        if not isinstance(strict, bool):
            problems.append(Problem("parameters.strict", "must be true or false"))
        prepare = parameters.get("prepare", False)
        if not isinstance(prepare, bool):
            problems.append(Problem("parameters.prepare", "must be true or false"))
        elif prepare and not self.is_image:
            problems.append(Problem("parameters.prepare", "applies to image models only"))
        if problems:
            raise InvalidInput(problems)
        return bool(strict), bool(prepare)

    def prepared_images(self, matrix: np.ndarray) -> list[Any]:
        """The network input of prepared images, back in 0-255 intensities (what the
        model saw; a client can show it next to the drawing)."""
        assert isinstance(self.pipeline, ImagePipeline)
        shape = (len(matrix), self.pipeline.height, self.pipeline.width)
        pixels = np.rint(matrix.reshape(shape) * self.pipeline.scale).astype(np.int64)
        return pixels.tolist()

    def decide(self, probabilities: np.ndarray, threshold: float | None) -> np.ndarray:
        """Class index per row: the arg-max, or for a binary model with a threshold,
        positive when its probability is at least the threshold."""
        if threshold is None:
            return probabilities.argmax(axis=1)
        return (probabilities[:, 1] >= threshold).astype(np.int64)

    # ----------------------------------------------------------- postprocess
    def select_outputs(self, requested: Sequence[str] | None) -> list[str]:
        """The outputs to build, in request order; unknown or repeated names are refused
        (a repeated name would repeat the whole tensor in the answer)."""
        known = self.signature.output_names
        if requested is None:
            return known
        problems = []
        for i, name in enumerate(requested):
            if name not in known:
                problem = f"unknown output {name!r}; the model gives {', '.join(known)}"
                problems.append(Problem("outputs", problem, suggestion=closest(name, known)))
            elif name in requested[:i]:
                problems.append(Problem("outputs", f"output {name!r} is requested more than once"))
        if problems:
            raise InvalidInput(problems)
        return list(requested)

    def respond(
        self,
        probabilities: np.ndarray,
        encoded: EncodedBatch,
        outputs: Sequence[str],
        request_id: str | None = None,
        decided: np.ndarray | None = None,
        explanations: list[dict[str, Any]] | None = None,
    ) -> InferenceResponse:
        probabilities = probabilities.astype(np.float32, copy=False)
        named: dict[str, np.ndarray] = {}
        if self.heads:
            named = self._named_heads(probabilities, outputs)
        for name in outputs if not self.heads else ():
            if name == PROBABILITIES:
                named[name] = probabilities
            elif name == LABEL:
                chosen = probabilities.argmax(axis=1) if decided is None else decided
                named[name] = self._class_array[chosen]
            elif name == PREDICTION:
                named[name] = probabilities[:, 0]
        layout = self.insight.layout
        outside = layout.out_of_range(encoded.matrix) if layout is not None else []
        return InferenceResponse(
            self.name,
            self.version,
            self.signature.classes,
            named,
            encoded.unknown,
            request_id,
            out_of_range=outside or [[] for _ in encoded.unknown],
            explanations=explanations,
            canonical=encoded.canonical or [{} for _ in encoded.unknown],
            heads=self.heads,
        )

    def _named_heads(self, served: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """A multi-output model's requested tensors, cut from the served matrix."""
        by_name = {part.name: part for part in self._plan}
        by_label = {part.label: part for part in self._plan if part.classes.size}
        named: dict[str, np.ndarray] = {}
        for name in outputs:
            part = by_name.get(name)
            if part is not None:
                values = served[:, part.served_start : part.served_stop]
                named[name] = values if part.classes.size else values[:, 0]
                continue
            part = by_label[name]
            chosen = served[:, part.served_start : part.served_stop].argmax(axis=1)
            named[name] = part.classes[chosen]
        return named

    def close(self) -> None:
        self.runtime.close()
