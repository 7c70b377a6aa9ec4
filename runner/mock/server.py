"""Serving the mock over loopback with uvicorn, on a socket bound here so the port is known.

``serve(app, sock)`` blocks (the CLI; uvicorn handles SIGINT/SIGTERM); ``MockServerThread`` runs
it in a background thread for tests and scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from runner.mock import base_urls
from runner.mock.state import MockState
from runner.mock.video import ConnectionDropped

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8808
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs an app exception with a traceback; a drop we asked for is not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


def _install_drop_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateDrops) for f in logger.filters):
        logger.addFilter(_HideDeliberateDrops())


def bind_socket(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it from ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say they
    # are TCP; left on, some answers wait ~40 ms for a delayed ACK, which no provider does.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def origin_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts bracketed)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(
    app: Starlette, *, access_log: bool = False, configure_logging: bool = True
) -> uvicorn.Server:
    """A uvicorn server for ``app``; quiet unless ``access_log`` (which logs paths, not headers).

    ``configure_logging=False`` leaves the process's logging set-up alone (tests, embedding).
    """
    _install_drop_filter()
    kwargs: dict[str, Any] = {} if configure_logging else {"log_config": None}
    config = uvicorn.Config(
        app,
        **kwargs,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


class _Announcing(uvicorn.Server):
    """A server that says when it is ready: after its start-up, so after it has taken over
    SIGINT and SIGTERM (whoever reads the announcement may stop it with either at once)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._announce()


def serve(
    app: Starlette,
    sock: socket.socket,
    *,
    access_log: bool = False,
    announce: Callable[[], None] = lambda: None,
) -> None:
    """Serve until SIGINT/SIGTERM (blocking; call from the main thread); ``announce()`` once
    connections are accepted and the signals are the server's."""
    _Announcing(make_server(app, access_log=access_log).config, announce).run(sockets=[sock])


class MockServerThread:
    """The mock over loopback in a background thread; a context manager.

    ``origin``, ``seed_base_url`` and ``platform_base_url`` are valid once started; ``state``
    is the app's :class:`MockState`.
    """

    def __init__(self, app: Starlette, *, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.app = app
        self.state: MockState = app.state.mock
        self._sock = bind_socket(host, port)
        self.origin = origin_of(self._sock)
        urls = base_urls(self.origin)
        self.seed_base_url = urls["higgsfieldapi"]
        self.platform_base_url = urls["higgsfield"]
        self._server = make_server(app, configure_logging=False)
        self._thread = threading.Thread(target=self._run, name="mock-server", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # surfaced by start()/stop() in the caller's thread
            self._error = exc

    def start(self) -> MockServerThread:
        """Start serving; returns once uvicorn accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"mock server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("mock server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SHUTDOWN_TIMEOUT)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> MockServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
