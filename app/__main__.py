"""``python -m app``: run the service with uvicorn using the settings.

One worker runs in this process. Several run under :class:`app.runner.process.Supervisor`,
which shares one listening socket and one metrics directory between them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn
from pydantic import SecretStr

from app.observability.logs import uvicorn_log_config
from app.observability.metrics import MULTIPROC_ENV, SUPERVISOR_ENV
from app.serving.journal import JOURNAL_ENV, JOURNAL_FILE
from app.settings import Settings, get_settings

log = logging.getLogger("app")
_SECRET_WORDS = ("token", "key", "secret", "password")


def settings_summary(settings: Settings) -> str:
    """``name=value`` for every effective setting, with secrets shown as ``***``."""

    def shown(name: str, value: Any) -> str:
        if value is None or value == [] or value == "":
            return repr(value) if not isinstance(value, list) else "[]"
        if isinstance(value, SecretStr) or any(word in name for word in _SECRET_WORDS):
            return "***"
        if isinstance(value, (list, tuple, set)) and any(isinstance(v, SecretStr) for v in value):
            return f"[{len(value)} x ***]"
        return str(value)

    return " ".join(
        f"{name}={shown(name, getattr(settings, name))}" for name in type(settings).model_fields
    )


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    from app.runner.http import LimitedHttpToolsProtocol

    return uvicorn.Config(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(settings.log_level, settings.log_json),
        access_log=False,  # the app's middleware writes its own (app.observability.logs)
        http=LimitedHttpToolsProtocol,
        timeout_keep_alive=int(settings.keep_alive_timeout_s) or 1,
        timeout_graceful_shutdown=int(settings.drain_seconds),
    )


def main() -> None:
    settings = get_settings()
    run_dir = None
    if settings.workers > 1:
        # this start's directory, made before any worker starts: the admin journal every
        # worker follows, and (unless set by hand) the metrics every worker writes
        from app.runner.process import make_metrics_dir

        run_dir = make_metrics_dir(settings.metrics_dir)
        os.environ[JOURNAL_ENV] = str(run_dir / JOURNAL_FILE)
        if not os.environ.get(MULTIPROC_ENV):
            os.environ[MULTIPROC_ENV] = str(run_dir)
            os.environ[SUPERVISOR_ENV] = str(os.getpid())
    config = uvicorn_config(settings)  # configures logging
    log.info("settings: %s", settings_summary(settings))

    from app.runner.process import DrainingServer, Supervisor

    if settings.workers == 1:
        DrainingServer(config).run()
        return
    Supervisor(config, sockets=[config.bind_socket()], metrics_dir=run_dir).run()


if __name__ == "__main__":
    main()
