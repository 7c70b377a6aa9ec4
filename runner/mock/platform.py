"""The official platform dialect's routes, at the root (base URL ``{origin}``).

The catch-all ``POST /{model_id}`` must come after every other route of the app.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.mock.common import (
    PLATFORM,
    find,
    find_generation,
    guarded_body,
    mock_state,
    submit,
)
from runner.mock.state import Generation

MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
STATUS_WORDS = {"running": "in_progress"}
SOUL_WORDS = {"training": "in_progress", "ready": "completed"}
MAX_SOUL_NAME = 100
MAX_SOUL_IMAGES = 100


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
    """GET /requests/{request_id}/status."""
    found = find_generation(request, PLATFORM, "request_id", "Request not found")
    if isinstance(found, Response):
        return found
    state, generation = found
    word = generation.state(state.now())
    doc: dict[str, Any] = {
        "status": STATUS_WORDS.get(word, word),
        "request_id": generation.id,
        **_links(request, generation),
    }
    if word == "completed":
        url = str(request.base_url).rstrip("/") + state.video_path(generation)
        doc["video"] = {"url": url}
    elif word == "failed":
        doc["error"] = "Generation failed"
    return JSONResponse(doc)


async def cancel(request: Request) -> Response:
    """POST /requests/{request_id}/cancel: 202 while queued, 400 once processing started."""
    found = find_generation(request, PLATFORM, "request_id", "Request not found")
    if isinstance(found, Response):
        return found
    state, generation = found
    now = state.now()
    if generation.state(now) != "queued":
        return PLATFORM.error(400, "Request is already being processed")
    generation.canceled_at = now
    return JSONResponse({"status": "canceled", "request_id": generation.id}, status_code=202)


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
    soul = mock_state(request).create_soul(account=account, name=name, images=urls)
    return JSONResponse(_reference_doc(soul.id, name, "not_ready", None))


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
    word = soul.state(state.now())
    reason = "Not enough usable faces in the input images" if word == "failed" else None
    return JSONResponse(_reference_doc(soul.id, soul.name, SOUL_WORDS.get(word, word), reason))


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


def _reference_doc(soul_id: str, name: str, status: str, reason: str | None) -> dict[str, Any]:
    return {
        "id": soul_id,
        "name": name,
        "status": status,
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
    token = state.new_upload(content_type)
    origin = str(request.base_url).rstrip("/")
    return JSONResponse(
        {
            "upload_url": f"{origin}/_mock/uploads/{token}",
            "public_url": f"{origin}/_mock/files/{token}",
            "upload_headers": {"Content-Type": content_type},
        }
    )


ROUTES = [
    Route("/requests/{request_id}/status", status, methods=["GET"]),
    Route("/requests/{request_id}/cancel", cancel, methods=["POST"]),
    Route("/v1/custom-references", create_reference, methods=["POST"]),
    Route("/v1/custom-references/{reference_id}", get_reference, methods=["GET"]),
    Route("/files/generate-upload-url", generate_upload_url, methods=["POST"]),
]
CATCH_ALL = Route("/{model:path}", generate, methods=["POST"])
