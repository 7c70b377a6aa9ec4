"""The mock Higgsfield API as one Starlette app speaking both dialects.

Base URLs, for a server at ``{origin}`` (e.g. ``http://127.0.0.1:8808``):

- ``higgsfieldapi``: ``{origin}/api/v1``   (``Authorization: Bearer test-key``)
- ``higgsfield``:    ``{origin}``          (``Authorization: Key test-id:test-secret``)

Plus the mock's own routes, which need no key: ``GET /_mock/videos/{id}.mp4?token=…``
(Range supported; 410 once the token or the result expired), ``PUT /_mock/uploads/{token}``
(403 unless it carries every ``upload_headers`` header) and ``GET /_mock/files/{token}``
(presigned uploads), ``GET /_mock/log`` and ``GET /_mock/stats``.
In-process, ``app.state.mock`` is the :class:`~runner.mock.state.MockState` behind them.
"""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.mock import platform, seed
from runner.mock.common import RequestLog, mock_state, note
from runner.mock.options import MockOptions
from runner.mock.state import Clock, MockState
from runner.mock.video import BrokenResponse, RangeNotSatisfiable, parse_range

VIDEO_TYPE = "video/mp4"


async def video(request: Request) -> Response:
    """GET/HEAD /_mock/videos/{id}.mp4?token=…: the generation's MP4, with Range support."""
    state = mock_state(request)
    generation = state.generation(request.path_params["generation_id"])
    if generation is None or state.state_of(generation) != "completed":
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    note(request, generation_id=generation.id)
    verdict = state.check_video_token(generation.id, request.query_params.get("token", ""))
    if verdict == "bad":
        return JSONResponse({"detail": "Forbidden: bad or missing token"}, status_code=403)
    expires = generation.expires_at
    if expires is not None and generation.expired(state.now()):
        state.count("expired_results")
        note(request, note="result expired")
        detail = f"Gone: the result expired at {state.iso(expires)}"
        return JSONResponse({"detail": detail}, status_code=410)
    if verdict == "expired":
        state.count("expired_video_urls")
        note(request, note="expired")
        return JSONResponse({"detail": "Gone: this URL has expired"}, status_code=410)
    data = state.video_bytes(generation.id)
    size = len(data)
    headers = {"Accept-Ranges": "bytes"}
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except RangeNotSatisfiable:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    status_code = 200
    if wanted is not None:
        first, last = wanted
        data = data[first : last + 1]
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        status_code = 206
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(status_code=status_code, headers=headers, media_type=VIDEO_TYPE)
    if len(data) > 1 and state.roll(state.options.truncate_rate):
        state.count("truncated_videos")
        note(request, note="truncated")
        return BrokenResponse(
            data,
            sent=len(data) // 2,
            status_code=status_code,
            headers=headers,
            media_type=VIDEO_TYPE,
        )
    state.count("range_downloads" if status_code == 206 else "video_downloads")
    return Response(data, status_code=status_code, headers=headers, media_type=VIDEO_TYPE)


async def upload_put(request: Request) -> Response:
    """PUT /_mock/uploads/{token}: a presigned upload; every signed header must be sent as
    given (as S3 checks the headers it signed)."""
    state = mock_state(request)
    upload = state.uploads.get(request.path_params["token"])
    if upload is None or upload.data is not None:
        return Response("NoSuchUpload", status_code=404, media_type="text/plain")
    wrong = [name for name, value in upload.headers.items() if request.headers.get(name) != value]
    if wrong:
        state.count("upload_refusals")
        note(request, note="missing upload headers: " + ", ".join(sorted(wrong)))
        return Response("SignatureDoesNotMatch", status_code=403, media_type="text/plain")
    upload.data = await request.body()
    state.count("uploads")
    return Response(status_code=200)


async def upload_get(request: Request) -> Response:
    """GET /_mock/files/{token}: an uploaded file."""
    upload = mock_state(request).uploads.get(request.path_params["token"])
    if upload is None or upload.data is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return Response(upload.data, media_type=upload.content_type)


async def mock_log(request: Request) -> Response:
    """GET /_mock/log: every request so far (no headers, so no credentials)."""
    return JSONResponse(mock_state(request).log_entries())


async def mock_stats(request: Request) -> Response:
    """GET /_mock/stats: the counters."""
    return JSONResponse(mock_state(request).stats())


def create_app(options: MockOptions | None = None, *, clock: Clock | None = None) -> Starlette:
    """The mock API. ``clock`` (seconds; default ``time.monotonic``) drives latencies, URL
    lifetimes and soul training, so tests can fake time instead of sleeping."""
    state = MockState(options or MockOptions(), clock=clock or time.monotonic)
    routes = [
        Route("/_mock/videos/{generation_id}.mp4", video, methods=["GET", "HEAD"]),
        Route("/_mock/uploads/{token}", upload_put, methods=["PUT"]),
        Route("/_mock/files/{token}", upload_get, methods=["GET"]),
        Route("/_mock/log", mock_log, methods=["GET"]),
        Route("/_mock/stats", mock_stats, methods=["GET"]),
        *seed.ROUTES,
        *platform.ROUTES,
        platform.CATCH_ALL,
    ]
    app = Starlette(routes=routes, middleware=[Middleware(RequestLog, state=state)])
    app.state.mock = state
    return app
