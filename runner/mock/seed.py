"""The ``higgsfieldapi`` dialect's routes, under ``/api/v1`` (base URL ``{origin}/api/v1``)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.mock.common import (
    SEED,
    create_soul,
    find,
    find_generation,
    guarded_body,
    mock_state,
    submit,
)
from runner.mock.glitches import glitch_answer
from runner.mock.records import Generation

PREFIX = "/api/v1"
TYPES = ("text-to-video", "image-to-video")
STATUS_WORDS = {"running": "processing"}  # the seed's word for running; others pass through
SOUL_WORDS = {"not_ready": "training", "queued": "training"}


def _not_an_object() -> Response:
    return SEED.error(400, "body must be a JSON object")


def _validate(body: dict[str, Any]) -> str | None:
    kind = body.get("type", "text-to-video")
    if kind not in TYPES:
        return f"type must be one of {', '.join(TYPES)}"
    prompt = body.get("prompt")
    if kind == "text-to-video" and (not isinstance(prompt, str) or not prompt.strip()):
        return "prompt is required"
    if prompt is not None and not isinstance(prompt, str):
        return "prompt must be a string"
    if kind == "image-to-video" and not isinstance(body.get("image_url"), str):
        return "image_url is required for image-to-video"
    return None


async def generate(request: Request) -> Response:
    """POST /api/v1/generate."""
    found = await guarded_body(request, SEED, not_an_object=_not_an_object)
    if isinstance(found, Response):
        return found
    account, body = found
    problem = _validate(body)
    if problem:
        return SEED.error(422, problem)
    model_id = body.get("model_id")
    if model_id is not None:
        soul = mock_state(request).soul(str(model_id), account)
        if soul is None:
            return SEED.error(422, f"unknown model_id {model_id!r}")
        if soul.state(mock_state(request).now()) != "ready":
            return SEED.error(400, f"model {model_id!r} is not ready")

    def answer(generation: Generation) -> dict[str, Any]:
        return {
            "success": True,
            "generation_id": generation.id,
            "type": generation.body.get("type", "text-to-video"),
        }

    return submit(request, SEED, account=account, route="generate", body=body, answer=answer)


async def status(request: Request) -> Response:
    """GET /api/v1/status/{generation_id}."""
    found = find_generation(request, SEED, "generation_id", "generation not found")
    if isinstance(found, Response):
        return found
    state, generation = found
    kind = generation.body.get("type", "text-to-video")
    glitch = state.glitch_for(generation)
    if glitch is not None:
        return glitch_answer(
            glitch,
            request,
            doc={"type": kind, "video_url": None},
            running_word="processing",
            not_found=SEED.error(404, "generation not found"),
        )
    word = state.state_of(generation)
    doc: dict[str, Any] = {"status": STATUS_WORDS.get(word, word), "type": kind, "video_url": None}
    if word == "completed":
        doc["video_url"] = str(request.base_url).rstrip("/") + state.video_path(generation)
    elif word == "failed":
        doc["error"] = "generation failed"
    elif word == "nsfw":
        doc["error"] = "content flagged by moderation"
    return JSONResponse(doc)


async def train(request: Request) -> Response:
    """POST /api/v1/soul/train (Idempotency-Key honoured as for generations)."""
    found = await guarded_body(request, SEED, not_an_object=_not_an_object)
    if isinstance(found, Response):
        return found
    account, body = found
    name, images = body.get("name"), body.get("images")
    if not isinstance(name, str) or not name.strip():
        return SEED.error(422, "name is required")
    if (
        not isinstance(images, list)
        or not images
        or not all(isinstance(i, str) and i for i in images)
    ):
        return SEED.error(422, "images must be a non-empty list of URLs")
    return create_soul(
        request,
        SEED,
        account=account,
        name=name,
        images=images,
        body=body,
        answer=lambda soul: {"success": True, "model_id": soul.id, "status": "training"},
    )


async def soul_model(request: Request) -> Response:
    """GET /api/v1/soul/models/{model_id}."""
    found = find(request, SEED, "model_id", "model not found", lambda st, i, a: st.soul(i, a))
    if isinstance(found, Response):
        return found
    state, soul = found
    word = soul.state(state.now())
    doc: dict[str, Any] = {
        "model_id": soul.id,
        "name": soul.name,
        "status": SOUL_WORDS.get(word, word),
    }
    if word == "failed":
        doc["error"] = "training failed: not enough usable faces"
    return JSONResponse(doc)


ROUTES = [
    Route(f"{PREFIX}/generate", generate, methods=["POST"]),
    Route(f"{PREFIX}/status/{{generation_id}}", status, methods=["GET"]),
    Route(f"{PREFIX}/soul/train", train, methods=["POST"]),
    Route(f"{PREFIX}/soul/models/{{model_id}}", soul_model, methods=["GET"]),
]
