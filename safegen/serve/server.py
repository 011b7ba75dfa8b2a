"""Running the app under uvicorn: its settings (one place), and a background thread (tests, benchmarks).

`safegen serve` runs uvicorn in the foreground; :class:`BackgroundServer` is the same server
(same :func:`uvicorn_config`) on a thread, so a script can start it, talk to it over a real
socket and stop it cleanly.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from safegen.serve.connections import protocol_class

#: uvicorn's own lines (startup banner, one access line per request) are hidden unless asked for.
DEFAULT_LOG_LEVEL = "warning"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def uvicorn_config(app: Any, config: Any = None, *, host: str, port: int, log_level: str = DEFAULT_LOG_LEVEL) -> Any:
    """The uvicorn settings of a safegen server: read deadlines and a connection cap from ``config``.

    ``config`` is the app's :class:`~safegen.serve.config.ServeConfig` (default: the one the
    app was created with). Access lines are written only at ``info`` or louder, since they
    are what the README calls library log lines.
    """
    import uvicorn  # the serve extra: imported when a server is configured

    if config is None:
        config = app.state.service.config
    http = protocol_class(config.header_timeout_s, config.body_timeout_s, config.max_connections)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=log_level in ("info", "debug", "trace"),
        http=http,
    )


def serve_forever(app: Any, config: Any, *, log_level: str = DEFAULT_LOG_LEVEL) -> None:
    """Serve ``app`` in the foreground on ``config``'s host and port until Ctrl-C (`safegen serve`)."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, config, host=config.host, port=config.port, log_level=log_level))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on; stopping is the normal end
        pass


class BackgroundServer:
    """uvicorn serving ``app`` on ``host:port`` (loopback, a free port by default) in a thread.

    Use as a context manager: entering waits until the socket accepts connections,
    leaving asks uvicorn to finish in-flight requests and stop.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_level: str = DEFAULT_LOG_LEVEL,
        config: Any = None,
    ):
        import uvicorn  # the serve extra

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(app, config, host=self.host, port=self.port, log_level=log_level))
        self.thread = threading.Thread(target=self.server.run, name="safegen-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
