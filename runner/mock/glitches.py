"""Status glitches: answers a real API gives now and then that are not what they mean.

Each kind (``MockOptions.glitches``) hits a generation at most once, on a status call drawn
with ``glitch_rate`` (:meth:`~runner.mock.state.MockState.glitch_for` decides and counts).
The answers, for a generation ``{id}`` (platform shapes; the seed's use its own fields):

==================  ========================================================================
``html``            200, ``text/html``: an HTML error page instead of JSON
``no_status``       200, the status document without ``status``
``numeric_status``  200, ``"status": 3``
``not_found``       404, the dialect's "not found" answer (a replica that lags behind)
``no_url``          200, ``"status": "completed"`` without a video URL (only once completed)
``redirect``        307 to the same path on another origin, ``http://127.0.0.2:{port}``
                    (still loopback, so nothing leaves the machine if it is followed)
``regressed``       200, ``in_progress`` (seed: ``processing``) after the generation was
                    answered ``completed``, as after its video URL expired
==================  ========================================================================
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from runner.mock.common import note
from runner.mock.options import GlitchKind

HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"
)
OTHER_HOST = "127.0.0.2"  # another origin, and still loopback


def glitch_answer(
    kind: GlitchKind,
    request: Request,
    *,
    doc: dict[str, Any],
    running_word: str,
    not_found: Response,
) -> Response:
    """The answer of glitch ``kind`` to a status call. ``doc`` is the dialect's status document
    without ``status`` and without a video URL; ``running_word`` its word for running."""
    note(request, note=f"glitch {kind}")
    if kind == "html":
        return Response(HTML_PAGE, media_type="text/html")
    if kind == "no_status":
        return JSONResponse(doc)
    if kind == "numeric_status":
        return JSONResponse({"status": 3, **doc})
    if kind == "not_found":
        return not_found
    if kind == "no_url":
        return JSONResponse({"status": "completed", **doc})
    if kind == "redirect":
        url = request.url
        port = f":{url.port}" if url.port else ""
        elsewhere = f"{url.scheme}://{OTHER_HOST}{port}{url.path}"
        return RedirectResponse(elsewhere, status_code=307)
    return JSONResponse({"status": running_word, **doc})
