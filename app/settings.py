"""Service settings, read from environment variables (documented in the README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.runtimes import RuntimeChoice

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="where models/<name>/<version>/ live")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
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
    watch_interval_s: float = Field(
        5.0, ge=0, description="poll the models directory for new versions; 0 = off"
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
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="extra wait for batch-mates, spent only when others are queued; 0 = merge "
        "only what queued while the previous call ran (fastest in the benchmark)",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
