"""The built-in mock Higgsfield API (SPEC §7): both dialects, real MP4s, faults on demand.

Use it in-process through ``httpx.ASGITransport(app=create_app(...))`` or over loopback with
``runner mock-server`` / :class:`runner.mock.server.MockServerThread`. Base URLs for a server at
``{origin}``: ``{origin}/api/v1`` for ``higgsfieldapi``, ``{origin}`` for ``higgsfield``.
"""

from __future__ import annotations

from runner.mock import seed
from runner.mock.app import create_app
from runner.mock.options import MockOptions
from runner.mock.state import MockState
from runner.mock.video import ConnectionDropped

SEED_PREFIX = seed.PREFIX


def base_urls(origin: str) -> dict[str, str]:
    """The base URL of each provider dialect on a mock server at ``origin``."""
    origin = origin.rstrip("/")
    return {"higgsfieldapi": origin + SEED_PREFIX, "higgsfield": origin}


__all__ = [
    "SEED_PREFIX",
    "ConnectionDropped",
    "MockOptions",
    "MockState",
    "base_urls",
    "create_app",
]
