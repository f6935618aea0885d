"""`pdstack-router`: parse settings, set up logging, serve with uvicorn."""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
from collections.abc import Sequence

import orjson
import uvicorn

from pdrouter.config import (
    LogFormat,
    RouterSettings,
    SettingsError,
    load_settings,
    settings_as_env,
)
from pdrouter.logsafe import EscapingFormatter
from pdrouter.tracing.logs import TraceIdFilter


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if trace_id := getattr(record, "trace_id", ""):
            entry["trace_id"] = trace_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TextFormatter(EscapingFormatter):
    """Plain lines (controls escaped); a line logged for a traced request ends with its trace id."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        return f"{line} trace_id={trace_id}" if trace_id else line


def setup_logging(settings: RouterSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(TraceIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # uvicorn's per-request access log would double our own request logging and cost CPU.
    logging.getLogger("uvicorn.access").disabled = True


def app_factory() -> object:
    """Entry point for uvicorn worker processes: settings come back from the environment."""
    from pdrouter.api.app import create_app
    from pdrouter.workers.protocol import CONTROL_SOCKET_ENV

    settings = load_settings([], os.environ)
    setup_logging(settings)
    return create_app(settings, control_socket=os.environ[CONTROL_SOCKET_ENV], serve_signals=True)


def run_workers(settings: RouterSettings, common: dict[str, object]) -> None:
    """N uvicorn workers on one port, fed by a control plane in this process."""
    with tempfile.TemporaryDirectory(prefix="pdstack-router-") as tmp:
        metrics_dir = os.path.join(tmp, "metrics")
        os.mkdir(metrics_dir)
        # Before prometheus_client is imported: the control plane's probe counters then go to
        # the directory every worker's /metrics sums over.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        from pdrouter.workers.control_plane import ControlPlane
        from pdrouter.workers.protocol import CONTROL_SOCKET_ENV

        socket_path = os.path.join(tmp, "control.sock")
        plane = ControlPlane(settings, socket_path)
        plane.start_in_thread()
        os.environ.update(settings_as_env(settings))
        os.environ[CONTROL_SOCKET_ENV] = socket_path
        try:
            uvicorn.run(
                "pdrouter.cli:app_factory",
                factory=True,
                workers=settings.workers,
                **common,  # type: ignore[arg-type]
            )
        finally:
            plane.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        print(f"pdstack-router: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"pdstack-router: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    log = logging.getLogger("pdrouter")
    log.info(
        "starting: %s discovery, routing %s, %d worker(s), listening on %s:%d",
        settings.service_discovery.value,
        settings.routing_logic.value,
        settings.workers,
        settings.host,
        settings.port,
    )
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "loop": "uvloop",
        # httptools with read deadlines (slowloris); an import string, so workers load it too.
        "http": "pdrouter.api.http_protocol:DeadlineHttpProtocol",
        "lifespan": "on",
        # The app cuts what still runs after --shutdown-grace-period (api/shutdown.py); uvicorn
        # cancels what is left a little later, after the cut's last events went out.
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_grace_period) + 3,
        "backlog": 4096,
        # X-Forwarded-* rewriting costs CPU on every request and nothing here needs it.
        "proxy_headers": False,
        "server_header": False,
    }
    if settings.workers > 1:
        run_workers(settings, common)
        return 0
    from pdrouter.api.app import create_app

    try:
        app = create_app(settings, serve_signals=True)
    except ValueError as exc:
        print(f"pdstack-router: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, **common)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
