"""The official platform dialect's routes, at the root (base URL ``{origin}``).

The catch-all ``POST /{model_id}`` must come after every other route of the app.

Shapes the platform's documents leave open, as the mock answers them:

- ``GET /requests/{id}/status`` of a completed generation carries ``expires_at`` (ISO 8601
  UTC, ``2025-01-31T12:00:00Z``): ``result_ttl`` after it completed. Once past, the answer is
  ``{"status": "completed", "request_id", "status_url", "cancel_url", "expires_at": <past>,
  "expired": true, "video": null}`` and every video URL of it answers 410
  ``{"detail": "Gone: the result expired at <expires_at>"}``.
- ``POST /requests/{id}/cancel``: 202 ``{"status": "canceled", "request_id"}`` while queued
  (and again for one already cancelled), 400 ``{"detail": "Request is already being
  processed"}`` once running or finished, 404 for an unknown id.
- A full account queue: 429 ``{"code": "account_queue_full", "detail": "..."}`` + Retry-After.
- ``POST /estimate/{model_id}`` with a submit body: ``{"credits": "1.500", "usd": "0.094"}``,
  see :func:`price`.
- ``GET /v1/custom-references/list?page=1&page_size=20``: ``{"items": [<reference>, ...],
  "page", "page_size", "total"}``, oldest first, each item shaped like
  ``GET /v1/custom-references/{id}``; pages from 1, ``page_size`` 1 to 100.
- ``POST /files/generate-upload-url``: ``upload_headers`` are ``Content-Type`` and
  ``x-amz-tagging: retention=temporary``; a PUT missing either (or with another value) is 403.
"""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.mock.common import (
    PLATFORM,
    create_soul,
    find,
    find_generation,
    guard,
    guarded_body,
    mock_state,
    note,
    submit,
)
from runner.mock.glitches import glitch_answer
from runner.mock.records import Generation, Soul
from runner.mock.state import MockState

IMAGE_URL = re.compile(r"^(?:https?|data):", re.IGNORECASE)

MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
STATUS_WORDS = {"running": "in_progress"}
SOUL_WORDS = {"training": "in_progress", "ready": "completed"}
MAX_SOUL_NAME = 100
MAX_SOUL_IMAGES = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
UPLOAD_HEADERS = {"x-amz-tagging": "retention=temporary"}  # besides Content-Type
# Pricing (illustrative): credits per second of video at 720p, scaled by resolution.
CREDITS_PER_SECOND = 0.3
RESOLUTION_FACTORS = {"480p": 0.5, "720p": 1.0, "1080p": 2.0}
DEFAULT_DURATION = 5
USD_PER_CREDIT = 0.0625


def _invalid(*problems: tuple[str, str]) -> Response:
    """A FastAPI-style 422: ``detail`` is a list of {loc, msg, type}."""
    detail = [
        {"loc": ["body", field], "msg": msg, "type": "value_error"} for field, msg in problems
    ]
    return PLATFORM.error(422, detail)


def _not_an_object() -> Response:
    return _invalid(("body", "Input should be a valid JSON object"))


def _links(request: Request, generation: Generation) -> dict[str, str]:
    origin = str(request.base_url).rstrip("/")
    return {
        "status_url": f"{origin}/requests/{generation.id}/status",
        "cancel_url": f"{origin}/requests/{generation.id}/cancel",
    }


async def generate(request: Request) -> Response:
    """POST /{model_id}: queue a generation."""
    model = request.path_params["model"]
    if not MODEL_ID.fullmatch(model) or model.startswith(("_mock", "api/")):
        return PLATFORM.error(404, "Not Found")
    found = await guarded_body(request, PLATFORM, not_an_object=_not_an_object)
    if isinstance(found, Response):
        return found
    account, body = found
    prompt, image_url = body.get("prompt"), body.get("image_url")
    if prompt is None and image_url is None:
        return _invalid(("prompt", "Field required"))
    if prompt is not None and not isinstance(prompt, str):
        return _invalid(("prompt", "Input should be a valid string"))
    if image_url is not None and not isinstance(image_url, str):
        return _invalid(("image_url", "Input should be a valid string"))
    if image_url is not None and not IMAGE_URL.match(image_url):
        # the platform fetches the image itself: a local path is nothing it can read
        return _invalid(("image_url", "Input should be a valid URL"))
    reference = body.get("custom_reference_id")
    if reference is not None:
        state = mock_state(request)
        soul = state.soul(str(reference), account)
        if soul is None or soul.state(state.now()) != "ready":
            return _invalid(("custom_reference_id", "Custom reference not found or not ready"))

    def answer(generation: Generation) -> dict[str, Any]:
        return {"status": "queued", "request_id": generation.id, **_links(request, generation)}

    return submit(request, PLATFORM, account=account, route=model, body=body, answer=answer)


async def status(request: Request) -> Response:
    """GET /requests/{request_id}/status (``expires_at`` once completed; glitches)."""
    found = find_generation(request, PLATFORM, "request_id", "Request not found")
    if isinstance(found, Response):
        return found
    state, generation = found
    base: dict[str, Any] = {"request_id": generation.id, **_links(request, generation)}
    glitch = state.glitch_for(generation)
    if glitch is not None:
        not_found = PLATFORM.error(404, "Request not found")
        return glitch_answer(
            glitch, request, doc=base, running_word="in_progress", not_found=not_found
        )
    word = state.state_of(generation)
    doc: dict[str, Any] = {"status": STATUS_WORDS.get(word, word), **base}
    expires = generation.expires_at
    if expires is not None and word == "completed":
        doc["expires_at"] = state.iso(expires)
    if word == "completed" and generation.expired(state.now()):
        doc.update(expired=True, video=None)
        note(request, note="expired")
    elif word == "completed":
        url = str(request.base_url).rstrip("/") + state.video_path(generation)
        doc["video"] = {"url": url}
    elif word == "failed":
        doc["error"] = "Generation failed"
    return JSONResponse(doc)


async def cancel(request: Request) -> Response:
    """POST /requests/{request_id}/cancel: 202 while queued (refunded), 400 once processing."""
    found = find_generation(request, PLATFORM, "request_id", "Request not found")
    if isinstance(found, Response):
        return found
    state, generation = found
    if state.cancel(generation) == "started":
        return PLATFORM.error(400, "Request is already being processed")
    return JSONResponse({"status": "canceled", "request_id": generation.id}, status_code=202)


def price(body: dict[str, Any]) -> float | None:
    """Credits a body costs: ``CREDITS_PER_SECOND`` × ``duration`` (default 5) × the
    resolution's factor (480p 0.5, 720p 1, 1080p 2, others 1); None when ``duration`` is no
    positive number. Deterministic, so equal shapes get equal prices."""
    duration = body.get("duration", DEFAULT_DURATION)
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        return None
    if not math.isfinite(duration) or duration <= 0:
        return None
    factor = RESOLUTION_FACTORS.get(str(body.get("resolution", "720p")), 1.0)
    return CREDITS_PER_SECOND * duration * factor


async def estimate(request: Request) -> Response:
    """POST /estimate/{model_id} with a submit body: its price, as decimal strings."""
    model = request.path_params["model"]
    if not MODEL_ID.fullmatch(model):
        return PLATFORM.error(404, "Not Found")
    found = await guarded_body(request, PLATFORM, not_an_object=_not_an_object)
    if isinstance(found, Response):
        return found
    credits = price(found[1])
    if credits is None:
        return _invalid(("duration", "Input should be a positive number"))
    mock_state(request).count("estimates")
    return JSONResponse({"credits": f"{credits:.3f}", "usd": f"{credits * USD_PER_CREDIT:.3f}"})


async def create_reference(request: Request) -> Response:
    """POST /v1/custom-references: start a soul (custom reference) training."""
    found = await guarded_body(request, PLATFORM, not_an_object=_not_an_object)
    if isinstance(found, Response):
        return found
    account, body = found
    name, images = body.get("name"), body.get("input_images")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_SOUL_NAME:
        return _invalid(("name", f"String should have 1 to {MAX_SOUL_NAME} characters"))
    urls = _image_urls(images)
    if urls is None:
        return _invalid(("input_images", f"1 to {MAX_SOUL_IMAGES} {{type: image_url}} items"))
    state = mock_state(request)
    return create_soul(
        request,
        PLATFORM,
        account=account,
        name=name,
        images=urls,
        body=body,
        answer=lambda soul: _reference(state, soul),
    )


async def list_references(request: Request) -> Response:
    """GET /v1/custom-references/list?page=&page_size=: the account's references."""
    account, refusal = guard(request, PLATFORM)
    if refusal is not None:
        return refusal
    page = _positive_int(request.query_params.get("page", "1"))
    size = _positive_int(request.query_params.get("page_size", str(DEFAULT_PAGE_SIZE)))
    if page is None:
        return _query_invalid("page", "Input should be an integer of at least 1")
    if size is None or size > MAX_PAGE_SIZE:
        return _query_invalid("page_size", f"Input should be an integer from 1 to {MAX_PAGE_SIZE}")
    state = mock_state(request)
    state.count("reference_listings")
    souls = state.account_souls(account)
    items = [_reference(state, soul) for soul in souls[(page - 1) * size : page * size]]
    return JSONResponse({"items": items, "page": page, "page_size": size, "total": len(souls)})


def _positive_int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) >= 1 else None


def _query_invalid(field: str, msg: str) -> Response:
    return PLATFORM.error(422, [{"loc": ["query", field], "msg": msg, "type": "value_error"}])


async def get_reference(request: Request) -> Response:
    """GET /v1/custom-references/{id}."""
    found = find(
        request,
        PLATFORM,
        "reference_id",
        "Custom reference not found",
        lambda st, i, a: st.soul(i, a),
    )
    if isinstance(found, Response):
        return found
    state, soul = found
    return JSONResponse(_reference(state, soul))


def _image_urls(images: Any) -> list[str] | None:
    """The URLs of ``input_images`` items, or None when the list is not valid."""
    if not isinstance(images, list) or not 1 <= len(images) <= MAX_SOUL_IMAGES:
        return None
    urls: list[str] = []
    for item in images:
        url = item.get("image_url") if isinstance(item, dict) else None
        if not isinstance(item, dict) or item.get("type") != "image_url":
            return None
        if not isinstance(url, str) or not url:
            return None
        urls.append(url)
    return urls


def _reference(state: MockState, soul: Soul) -> dict[str, Any]:
    """A custom reference as the platform shows it."""
    word = soul.state(state.now())
    reason = "Not enough usable faces in the input images" if word == "failed" else None
    return {
        "id": soul.id,
        "name": soul.name,
        "status": SOUL_WORDS.get(word, word),
        "thumbnail_url": None,
        "fail_reason": reason,
    }


async def generate_upload_url(request: Request) -> Response:
    """POST /files/generate-upload-url: a presigned PUT slot on this server."""

    def no_content_type() -> Response:
        return _invalid(("content_type", "Field required"))

    found = await guarded_body(request, PLATFORM, not_an_object=no_content_type)
    if isinstance(found, Response):
        return found
    content_type = found[1].get("content_type")
    if not isinstance(content_type, str) or "/" not in content_type:
        return no_content_type()
    state = mock_state(request)
    headers = {"Content-Type": content_type, **UPLOAD_HEADERS}
    token = state.new_upload(content_type, headers)
    origin = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "upload_url": f"{origin}/_mock/uploads/{token}",
            "public_url": f"{origin}/_mock/files/{token}",
            "upload_headers": headers,
        }
    )


ROUTES = [
    Route("/requests/{request_id}/status", status, methods=["GET"]),
    Route("/requests/{request_id}/cancel", cancel, methods=["POST"]),
    Route("/estimate/{model:path}", estimate, methods=["POST"]),
    Route("/v1/custom-references", create_reference, methods=["POST"]),
    Route("/v1/custom-references/list", list_references, methods=["GET"]),
    Route("/v1/custom-references/{reference_id}", get_reference, methods=["GET"]),
    Route("/files/generate-upload-url", generate_upload_url, methods=["POST"]),
]
CATCH_ALL = Route("/{model:path}", generate, methods=["POST"])
