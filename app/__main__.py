"""``python -m app``: run the service with uvicorn using the settings."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Generator

import uvicorn

from app.observability.logs import uvicorn_log_config
from app.settings import get_settings


class DrainingServer(uvicorn.Server):
    """Uvicorn, except that a SIGTERM/SIGINT it has drained cleanly exits with status 0.

    Uvicorn re-raises the signal after its graceful shutdown, so the process would end
    "killed by SIGTERM" (status -15) although every request was answered; orchestrators
    and the issue's contract read that as a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                handled = (signal.SIGTERM, signal.SIGINT)
                self._captured_signals = [s for s in self._captured_signals if s not in handled]


def main() -> None:
    settings = get_settings()
    config = uvicorn.Config(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        log_config=uvicorn_log_config(settings.log_level, settings.log_json),
        access_log=False,
        timeout_graceful_shutdown=int(settings.drain_seconds),
    )
    if settings.workers > 1:  # uvicorn's supervisor forks the workers and drains them
        uvicorn.run(
            config.app,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            log_config=config.log_config,
            access_log=False,
            timeout_graceful_shutdown=config.timeout_graceful_shutdown,
        )
        return
    DrainingServer(config).run()


if __name__ == "__main__":
    main()
