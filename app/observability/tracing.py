"""Trace context (W3C ``traceparent``) and, when asked for, OpenTelemetry spans.

Every HTTP request joins the caller's trace when it sends a valid ``traceparent``
(https://www.w3.org/TR/trace-context/), or starts a new one (in
app/observability/middleware.py); the answer carries a
``traceparent`` naming this server's span, and log lines carry the ``trace_id``.

Spans are exported only with the ``opentelemetry`` extra installed and an OTLP
endpoint set (``OTEL_EXPORTER_OTLP_ENDPOINT``, as every OpenTelemetry SDK reads it).
They are written after the fact from timestamps the data plane takes anyway (the
statistics' ``perf_counter_ns`` stamps): receive, validate/encode, queue, inference
and respond. Without an exporter nothing is created, so tracing costs a header
parse per request.
"""

from __future__ import annotations

import logging
import os
import random
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
# perf_counter_ns() + this = nanoseconds since the epoch (what span times are in)
EPOCH_OFFSET_NS = time.time_ns() - time.perf_counter_ns()


@dataclass
class TraceContext:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits: this server's span
    parent_id: str | None  # the caller's span, when it sent one
    sampled: bool
    started_ns: int = 0  # perf_counter_ns when the request arrived
    # (stage, start ns, end ns, attributes) the data plane noted, exported at the end
    marks: list[tuple[str, int, int, dict[str, Any]]] = field(default_factory=list)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


current_trace: ContextVar[TraceContext | None] = ContextVar("trace", default=None)
_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: str | None) -> tuple[str, str, bool] | None:
    """(trace id, parent span id, sampled) from a valid ``traceparent``, else None."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_id, parent_id, flags = parts[:4]
    if version == "00" and len(parts) != 4:
        return None
    if len(trace_id) != 32 or len(parent_id) != 16 or len(flags) != 2:
        return None
    if not set(trace_id + parent_id + flags + version) <= _HEX:
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, bool(int(flags, 16) & 1)


def trace_id() -> str:
    context = current_trace.get()
    return context.trace_id if context else "-"


def random_id(bits: int) -> str:
    """A random, non-zero id as lowercase hex. Trace ids need uniqueness, not secrecy
    (W3C trace context), so the fast Mersenne Twister serves; ``secrets`` would cost a
    system call per id on every request."""
    value = 0
    while not value:
        value = random.getrandbits(bits)
    return f"{value:0{bits // 4}x}"


def start_trace(header: str | None) -> TraceContext:
    parsed = parse_traceparent(header)
    now = time.perf_counter_ns()
    if parsed is None:
        return TraceContext(random_id(128), random_id(64), None, True, now)
    trace, parent, sampled = parsed
    return TraceContext(trace, random_id(64), parent, sampled, now)


def note_stages(model: str, version: int, marks: list[tuple[str, int, int]]) -> None:
    """The data plane's stages of the current request, kept for export (no-op unless an
    exporter is configured)."""
    if not exporter.enabled:
        return
    context = current_trace.get()
    if context is not None and context.sampled and marks:
        attributes = {"model": model, "model.version": version}
        receive = ("receive", context.started_ns, marks[0][1])
        context.marks.extend(
            (name, start, end, attributes) for name, start, end in [receive, *marks]
        )


class SpanExporter:
    """OpenTelemetry spans from recorded timestamps; inert unless configured."""

    def __init__(self) -> None:
        self.enabled = False
        self._tracer: Any = None
        self._trace: Any = None

    def configure(self, endpoint: str | None = None, tracer_provider: Any = None) -> bool:
        """Export to ``endpoint`` (or OTEL_EXPORTER_OTLP_ENDPOINT), or to a given provider
        (tests); False when the SDK is not installed or nothing is configured."""
        endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if tracer_provider is None and not endpoint:
            return False
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("OTLP endpoint set, but the opentelemetry extra is not installed")
            return False
        if tracer_provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            name = os.environ.get("OTEL_SERVICE_NAME", "keras-serve")
            tracer_provider = TracerProvider(
                resource=Resource.create({"service.name": name}), id_generator=preset_id_generator()
            )
            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._trace = trace
        self._tracer = tracer_provider.get_tracer("keras-serve")
        self.enabled = True
        return True

    def disable(self) -> None:
        self.enabled, self._tracer, self._trace = False, None, None

    def export(self, context: TraceContext, name: str) -> None:
        """The request's server span (with the span id its answer named) and, as its
        children, the stages the data plane noted."""
        if not context.sampled:
            return
        trace = self._trace
        parent = None
        if context.parent_id:
            remote = trace.SpanContext(
                int(context.trace_id, 16),
                int(context.parent_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(1),
            )
            parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        token = _preset.set((int(context.trace_id, 16), int(context.span_id, 16)))
        try:
            span = self._tracer.start_span(
                name,
                context=parent,
                kind=trace.SpanKind.SERVER,
                start_time=context.started_ns + EPOCH_OFFSET_NS,
            )
        finally:
            _preset.reset(token)
        inside = trace.set_span_in_context(span)
        for stage, start, end, attributes in context.marks:
            if 0 < start <= end:
                child = self._tracer.start_span(
                    stage, context=inside, start_time=start + EPOCH_OFFSET_NS, attributes=attributes
                )
                child.end(end_time=end + EPOCH_OFFSET_NS)
        span.end(end_time=time.perf_counter_ns() + EPOCH_OFFSET_NS)


# the ids the next span gets: the server span must carry the span id its answer named
_preset: ContextVar[tuple[int, int] | None] = ContextVar("preset_ids", default=None)


def preset_id_generator() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class PresetIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            preset = _preset.get()
            return preset[0] if preset else super().generate_trace_id()

        def generate_span_id(self) -> int:
            preset = _preset.get()
            return preset[1] if preset else super().generate_span_id()

    return PresetIds()


exporter = SpanExporter()
