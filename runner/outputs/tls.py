"""The TLS context of the runner's HTTP clients, its trusted certificates loaded on first use.

Loading the trusted certificates (certifi's bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``
where the environment is trusted) takes ~35 ms of CPU, once per client, and a run makes two
clients before its first submit (the API's and the downloads'). Against a provider on plain
``http`` (the mock) no TLS connection is ever made, so the load is deferred to the first
connection that needs it: the context is otherwise the one ``httpx`` makes by default
(``ssl.create_default_context``: TLS client, certificates and host names checked), loaded
from the same place.
"""

from __future__ import annotations

import os
import ssl
import sys
import threading
from typing import Any

import certifi


class _TrustOnFirstUse(ssl.SSLContext):
    """A client context that loads its trusted certificates before its first connection."""

    _where: tuple[str | None, str | None] | None  # (cafile, capath) to load; None once loaded
    _lock: threading.Lock

    def _loaded(self) -> None:
        with self._lock:
            if self._where is not None:
                cafile, capath = self._where
                self.load_verify_locations(cafile=cafile, capath=capath)
                self._where = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self._loaded()
        return super().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self._loaded()
        return super().wrap_bio(*args, **kwargs)


def client_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """What ``httpx.create_ssl_context(trust_env=trust_env)`` makes, loaded on first use."""
    context = _TrustOnFirstUse(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if trust_env and os.environ.get("SSL_CERT_FILE"):
        context._where = (os.environ["SSL_CERT_FILE"], None)
    elif trust_env and os.environ.get("SSL_CERT_DIR"):
        context._where = (None, os.environ["SSL_CERT_DIR"])
    else:
        context._where = (certifi.where(), None)
    context._lock = threading.Lock()
    keylog = os.environ.get("SSLKEYLOGFILE")  # as ssl.create_default_context does
    if keylog and not sys.flags.ignore_environment:
        context.keylog_filename = keylog
    return context
