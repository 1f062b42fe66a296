"""Service settings, read from environment variables (documented in the README)."""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.runtimes import RuntimeChoice

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="where models/<name>/<version>/ live")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_enabled: bool = Field(True, description="serve the Open Inference Protocol over gRPC")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="gRPC port (8001 as in Triton and KServe); 0 = any free"
    )
    grpc_server: Literal["asyncio", "grpcio"] = Field(
        "asyncio",
        description="asyncio = keras-serve's own HTTP/2 for unary gRPC calls on the event "
        "loop (the fastest here); grpcio = gRPC's grpc.aio server",
    )
    grpc_acceptors: int = Field(
        16,
        ge=1,
        le=64,
        description="GRPC_SERVER=grpcio only: grpc.aio servers sharing GRPC_PORT in each worker "
        "(SO_REUSEPORT): a grpc.aio "
        "server takes new calls one at a time, so several take them in parallel; a client "
        "connection stays with one of them",
    )
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_json: bool = Field(False, description="one JSON object per log line")
    drain_seconds: float = Field(
        20.0, ge=0, description="on SIGTERM, how long in-flight requests may take to finish"
    )

    runtime: RuntimeChoice = Field(
        "auto", description="auto = ONNX Runtime on CPU, TensorFlow on a GPU"
    )
    runtime_threads: int = Field(1, ge=1, le=64, description="intra-op threads per ONNX session")

    max_instances: int = Field(1000, ge=1, description="instances per request")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="request body size")
    max_image_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="uploaded image size")
    max_image_pixels: int = Field(16_000_000, ge=784, description="uploaded image width*height")

    request_timeout_s: float = Field(
        30.0, gt=0, description="a request still running after this gets a 504"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed by CORS; empty = CORS off"
    )
    access_log: bool = Field(True, description="one log line per request")
    admin_token: SecretStr | None = Field(
        None, description="bearer token for /admin; unset = admin endpoints absent"
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="keys for the prediction routes (each the key, or sha256:<hex digest>); "
        "a JSON list or comma-separated; empty = no keys needed",
    )
    api_key_exempt: list[str] = Field(
        default_factory=lambda: [
            "/",
            "/health/*",
            "/v2/health/*",
            "/metrics",
            "/docs",
            "/docs-assets/*",
            "/openapi.json",
            "/playground/*",
            "/admin/*",
            "/v2/repository/*",
        ],
        description="paths open without an API key: exact, or ending in /* for everything "
        "below; the admin routes keep their own token",
    )
    payload_log_rate: float = Field(
        0.0, ge=0, le=1, description="share of inferences whose payloads are logged; 0 = off"
    )
    payload_log_sink: str = Field(
        "stdout",
        description="stdout, a file path (rotated; file:/path also works), or an http(s) URL "
        "that receives CloudEvents as KServe's payload logger sends them",
    )
    payload_log_redact: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="input fields logged as a SHA-256, not their value"
    )
    payload_log_buffer: int = Field(
        1000, ge=1, description="records waiting for the sink; beyond it records are dropped"
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="export OpenTelemetry spans over OTLP/HTTP here (needs the opentelemetry "
        "extra); unset = no spans, only traceparent propagation",
    )
    watch_interval_s: float = Field(
        5.0, ge=0, description="poll the models directory for new versions; 0 = off"
    )

    fast_path: bool = Field(
        True,
        description="serve the routes marked hot (predict, infer) without FastAPI's routing; "
        "the answers are the same, byte for byte",
    )

    strict_categories: bool = Field(
        False,
        description="refuse category values training never saw (a request may ask with "
        "strict); off = they take the trained 'other' path and are flagged",
    )
    max_in_flight: int = Field(
        128,
        ge=1,
        description="inference requests admitted at once per process; beyond it a request "
        "is answered 503 with Retry-After at once",
    )
    max_in_flight_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="request body bytes (by Content-Length) admitted at once per process; "
        "beyond it a request is answered 503 with Retry-After at once (a lone request is "
        "always admitted)",
    )
    max_queued_rows: int = Field(
        2048,
        ge=1,
        description="rows waiting in one model version's batch queue; beyond it a request "
        "is answered 503 with Retry-After at once",
    )
    # HTTP limits, enforced by app.runner.http (see docs/deployment.md)
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request line plus headers; 431 beyond"
    )
    max_headers: int = Field(100, ge=8, description="header fields per request; 431 beyond")
    header_timeout_s: float = Field(
        10.0, gt=0, description="time for a request's line and headers to arrive; 408 after"
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="an idle keep-alive connection is closed after this"
    )
    metrics_dir: Path | None = Field(
        None,
        description="where WORKERS > 1 makes its per-start metrics directory; unset = the "
        "system temporary directory",
    )

    batching: bool = Field(True, description="merge concurrent requests into one runtime call")
    max_batch_size: int = Field(64, ge=1, description="instances per merged runtime call")
    inline_run_us: float = Field(
        300.0,
        ge=0,
        description="a runtime call runs on the event loop, not a worker thread, when it is "
        "expected to take at most this long (the thread hop costs more; measured here, calls "
        "of up to 300 us were cheaper on the loop); 0 = always on a worker thread",
    )
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="extra wait for batch-mates, spent only when others are queued; 0 = merge "
        "only what queued while the previous call ran (fastest in the benchmark)",
    )

    # ------------------------------------------------------------------ insight
    max_explain_instances: int = Field(
        16, ge=1, description="instances per request that may ask for explanations"
    )
    explain_chunk_rows: int = Field(
        1024,
        ge=1,
        description="coalition rows per runtime call of an explanation: predictions queued "
        "meanwhile wait at most one such call",
    )
    drift_window: int = Field(
        1000, ge=10, description="recent instances per model version that drift is measured on"
    )
    feedback: bool = Field(
        False,
        description="store predictions for POST /feedback and live accuracy (opt-in: "
        "measured, it costs about 9% of throughput and a p99 of 2.6 ms at c=1)",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the prediction store (e.g. postgresql+psycopg://...); "
        "empty = SQLite in <tmp>/keras-serve/predictions.db",
    )
    prediction_max_age_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="stored predictions older than this are deleted"
    )
    prediction_max_rows: int = Field(
        1_000_000, ge=1, description="at most this many stored predictions (newest kept)"
    )
    feedback_queue: int = Field(
        50_000,
        ge=1,
        description="predictions waiting to be stored; beyond it they are dropped, never delayed",
    )
    performance_window: int = Field(
        10_000, ge=1, description="latest labelled predictions live accuracy is measured on"
    )

    def database_location(self) -> str:
        if self.database_url:
            return self.database_url
        folder = Path(tempfile.gettempdir()) / "keras-serve"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'predictions.db'}"

    @field_validator("api_keys", "payload_log_redact", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """``API_KEYS=k1,k2`` as well as a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part for part in text.split(",") if part.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
