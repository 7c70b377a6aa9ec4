"""Provider dialects: contract tests on httpx.MockTransport (from the two API documents) and
against the mock API in-process and over loopback; error classes; secrets."""

from __future__ import annotations

import email.utils
import gzip
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.errors import (
    FatalError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
    UnknownOutcomeError,
    UsageError,
)
from runner.mock import MockOptions
from runner.mock.options import RetryAfterMode
from runner.mock.server import MockServerThread
from runner.mock.testing import FakeClock
from runner.outputs.policy import URLPolicy
from runner.providers import (
    GenerationProvider,
    GenerationStatus,
    Provider,
    ProviderSettings,
    SoulProvider,
    SoulStatus,
    UploadProvider,
    make_provider,
    redact,
    uploader,
)
from runner.providers.base import MAX_ANSWER_BYTES, HttpProvider, Secret
from runner.providers.classify import parse_retry_after
from tests.netfakes import FakeResolver, RecordingBackend, recording_client
from tests.support import InProcessMock
from tests.test_policy import (
    ADDRESS_TABLE,
    RESOLVABLE,
    STRICT,
    case_id,
    expected,
    resolved_form,
)
from tests.test_policy import MALFORMED as MALFORMED_URLS

pytestmark = pytest.mark.anyio

SEED_BASE = "https://higgsfieldapi.com/api/v1"
PLATFORM_BASE = "https://api.higgsfield.ai"
SEED_KEY = "sk-seed-SECRET-0001"
KEY_ID, KEY_SECRET = "kid-0001", "ksecret-SECRET-0002"
ENV = {"HIGGSFIELD_API_KEY": SEED_KEY, "HF_KEY": f"{KEY_ID}:{KEY_SECRET}"}
SECRETS = (SEED_KEY, KEY_ID, KEY_SECRET)

Handler = Callable[[httpx.Request], httpx.Response]


class Fake:
    """A MockTransport handler that records every request and answers from a function."""

    def __init__(self, answer: Handler) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def json_answer(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    return lambda _request: httpx.Response(status, json=doc, headers=headers)


def provider_for(
    name: str, answer: Handler, *, environ: dict[str, str] | None = None, **settings: Any
) -> tuple[Provider, Fake]:
    fake = Fake(answer)
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    env = ENV if environ is None else environ
    provider = make_provider(
        ProviderSettings(name=name, **settings),
        client=client,
        environ=env,
        url_policy=URLPolicy(),  # decided here: no DNS lookup of the (public) base URL
    )
    return provider, fake


def can_upload(provider: Provider) -> UploadProvider:
    """``provider`` as an uploader (the test's dialect must be one)."""
    host = uploader(provider)
    assert host is not None, f"{provider.name} cannot upload"
    return host


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


# --- seed dialect on MockTransport (seed-higgsfield-api.md) --------------------------------

T2V = {
    "type": "text-to-video",
    "prompt": "A fashion influencer walking on a city sidewalk, cinematic lighting",
    "duration": 8,
    "resolution": "1080p",
    "aspect_ratio": "9:16",
    "seed": 42,
}
I2V = {
    "type": "image-to-video",
    "prompt": "Outfit breakdown, smooth camera dolly",
    "image_url": "https://cdn.example.com/look1.jpg",
    "duration": 8,
    "resolution": "1080p",
    "aspect_ratio": "9:16",
    "camera_fixed": False,
}


@pytest.mark.parametrize("request_body", [T2V, I2V], ids=["text", "image"])
async def test_seed_submit_sends_documented_request(request_body: dict[str, Any]) -> None:
    """POST {base}/generate with Bearer auth, the body as given and the Idempotency-Key."""
    answer = {"success": True, "generation_id": "gen-1", "type": request_body["type"]}
    provider, fake = provider_for("higgsfieldapi", json_answer(answer))
    got = await provider.submit(dict(request_body), idempotency_key="abc123-1")
    assert got == "gen-1"
    req = fake.last
    assert (req.method, str(req.url)) == ("POST", f"{SEED_BASE}/generate")
    assert req.headers["Authorization"] == f"Bearer {SEED_KEY}"
    assert req.headers["Idempotency-Key"] == "abc123-1"
    assert req.headers["Content-Type"] == "application/json"
    assert body_of(req) == request_body


async def test_seed_submit_merges_params_and_soul_model_id() -> None:
    """``params`` become body fields (winning clashes); a soul goes in as ``model_id``."""
    provider, fake = provider_for(
        "higgsfieldapi", json_answer({"success": True, "generation_id": "g"})
    )
    request = {**T2V, "params": {"motion": "high", "seed": 7}}
    await provider.submit(request, idempotency_key="k-1", soul_model_id="soul-9")
    assert body_of(fake.last) == {**T2V, "motion": "high", "seed": 7, "model_id": "soul-9"}
    assert "params" not in request or request["params"] == {"motion": "high", "seed": 7}


async def test_seed_submit_success_false_is_permanent() -> None:
    """A 2xx with ``success: false`` is a refusal, with the provider's reason."""
    provider, _ = provider_for(
        "higgsfieldapi", json_answer({"success": False, "error": "prompt rejected"})
    )
    with pytest.raises(PermanentError, match="prompt rejected"):
        await provider.submit(dict(T2V), idempotency_key="k-1")


STATUS_CASES = [
    ("queued", "queued"),
    ("pending", "queued"),
    ("not_ready", "queued"),
    ("processing", "running"),
    ("in_progress", "running"),
    ("generating", "running"),
]


@pytest.mark.parametrize(("word", "state"), STATUS_CASES)
async def test_seed_status_in_flight_words(word: str, state: str) -> None:
    """Queued words → queued; anything unknown and not terminal → running."""
    provider, fake = provider_for("higgsfieldapi", json_answer({"status": word, "type": "t"}))
    got = await provider.status("gen-1")
    assert got == GenerationStatus(state, None, None, word)  # type: ignore[arg-type]
    assert (fake.last.method, str(fake.last.url)) == ("GET", f"{SEED_BASE}/status/gen-1")
    assert fake.last.headers["Authorization"] == f"Bearer {SEED_KEY}"


@pytest.mark.parametrize("word", ["completed", "succeeded", "success", "Completed"])
async def test_seed_status_completed_words(word: str) -> None:
    """Completed words → completed with the video URL."""
    doc = {"status": word, "video_url": "https://cdn.example.com/v.mp4", "type": "image-to-video"}
    provider, _ = provider_for("higgsfieldapi", json_answer(doc))
    got = await provider.status("gen-1")
    assert got == GenerationStatus("completed", "https://cdn.example.com/v.mp4", None, word)


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"status": "failed", "error": "GPU on fire"}, "failed: GPU on fire"),
        ({"status": "error"}, "error"),
        ({"status": "nsfw"}, "nsfw"),
        ({"status": "canceled"}, "canceled"),
        ({"status": "cancelled", "message": "by user"}, "cancelled: by user"),
    ],
)
async def test_seed_status_failed_words_keep_the_word(doc: dict[str, Any], error: str) -> None:
    """Failed words → failed, the word kept in ``error`` with the provider's text."""
    provider, _ = provider_for("higgsfieldapi", json_answer(doc))
    got = await provider.status("gen-1")
    assert (got.state, got.video_url, got.error) == ("failed", None, error)


@pytest.mark.parametrize("video_url", [None, "", 42])
async def test_completed_without_video_url_is_permanent(video_url: Any) -> None:
    """A completed status without a usable video URL is a PermanentError."""
    provider, _ = provider_for(
        "higgsfieldapi", json_answer({"status": "completed", "video_url": video_url})
    )
    with pytest.raises(PermanentError, match="without a video URL"):
        await provider.status("gen-1")


async def test_seed_soul_training_and_status() -> None:
    """POST /soul/train {name, images}; GET /soul/models/{id}: ready/failed/else training."""
    answers = {
        ("POST", "/api/v1/soul/train"): {"model_id": "m-1", "status": "training"},
        ("GET", "/api/v1/soul/models/m-1"): {"model_id": "m-1", "status": "ready"},
    }
    provider, fake = provider_for(
        "higgsfieldapi",
        lambda r: httpx.Response(200, json=answers[(r.method, r.url.path)]),
    )
    images = ["https://cdn.example.com/ava/01.jpg", "https://cdn.example.com/ava/02.jpg"]
    assert await provider.train_soul("brand_influencer_v1", images) == "m-1"
    assert body_of(fake.last) == {"name": "brand_influencer_v1", "images": images}
    assert await provider.soul_status("m-1") == SoulStatus("m-1", "ready", None)
    for word, state in [("training", "training"), ("queued", "training"), ("failed", "failed")]:
        answers[("GET", "/api/v1/soul/models/m-1")] = {"model_id": "m-1", "status": word}
        assert (await provider.soul_status("m-1")).state == state
    answers[("GET", "/api/v1/soul/models/m-1")] = {"status": "error", "error": "bad faces"}
    assert await provider.soul_status("m-1") == SoulStatus("m-1", "failed", "error: bad faces")


async def test_soul_images_must_be_urls() -> None:
    """Local paths are refused before any request (they must be uploaded first)."""
    provider, fake = provider_for("higgsfieldapi", json_answer({"model_id": "m"}))
    with pytest.raises(PermanentError, match="not a URL"):
        await provider.train_soul("ava", ["refs/ava/01.jpg"])
    assert fake.requests == []


async def test_capabilities_by_dialect() -> None:
    """Both dialects generate and train souls; only the platform uploads (the seed API has
    no upload endpoint, so it has no ``upload`` at all)."""
    seed, _ = provider_for("higgsfieldapi", json_answer({}))
    platform, _ = provider_for("higgsfield", json_answer({}))
    for provider in (seed, platform):
        assert isinstance(provider, GenerationProvider)
        assert isinstance(provider, SoulProvider)
        assert isinstance(provider, Provider)
    assert not isinstance(seed, UploadProvider) and uploader(seed) is None
    assert not hasattr(seed, "upload")
    assert isinstance(platform, UploadProvider) and uploader(platform) is platform


# --- platform dialect on MockTransport (higgsfield-platform-api.md) ------------------------

QUEUED = {
    "status": "queued",
    "request_id": "req-1",
    "status_url": "https://elsewhere.example.net/requests/req-1/status",
    "cancel_url": "https://elsewhere.example.net/requests/req-1/cancel",
}


@pytest.mark.parametrize(
    ("request_body", "path"),
    [
        ({"type": "text-to-video", "prompt": "p"}, "/higgsfield-ai/dop/standard"),
        (
            {"type": "image-to-video", "prompt": "p", "image_url": "u"},
            "/higgsfield-ai/dop/standard",
        ),
        (
            {"model": "kling-video/v2.1/pro/image-to-video", "prompt": "p", "image_url": "u"},
            "/kling-video/v2.1/pro/image-to-video",
        ),
    ],
)
async def test_platform_submit_posts_to_model(request_body: dict[str, Any], path: str) -> None:
    """POST {base}/{model}; body without model/type; Key auth; Idempotency-Key."""
    provider, fake = provider_for("higgsfield", json_answer(QUEUED))
    assert await provider.submit(dict(request_body), idempotency_key="key-2") == "req-1"
    req = fake.last
    assert (req.method, str(req.url)) == ("POST", PLATFORM_BASE + path)
    assert req.headers["Authorization"] == f"Key {KEY_ID}:{KEY_SECRET}"
    assert req.headers["Idempotency-Key"] == "key-2"
    expected = {k: v for k, v in request_body.items() if k not in ("model", "type")}
    assert body_of(req) == expected


async def test_platform_submit_params_and_custom_reference() -> None:
    """``params`` merged in; the soul goes in as ``custom_reference_id``."""
    provider, fake = provider_for("higgsfield", json_answer(QUEUED))
    request = {"prompt": "p", "params": {"custom_reference_strength": 0.8}}
    await provider.submit(request, idempotency_key="k", soul_model_id="ref-1")
    assert body_of(fake.last) == {
        "prompt": "p",
        "custom_reference_strength": 0.8,
        "custom_reference_id": "ref-1",
    }


@pytest.mark.parametrize("model", ["../requests/x/cancel", "requests/x", "a b", "/abs", "a/../b"])
async def test_platform_refuses_model_ids_that_are_not_paths_of_models(model: str) -> None:
    """A model id that would hit another endpoint (or is malformed) never leaves."""
    provider, fake = provider_for("higgsfield", json_answer(QUEUED))
    with pytest.raises(PermanentError, match="model id"):
        await provider.submit({"model": model, "prompt": "p"}, idempotency_key="k")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"status": "queued"}, GenerationStatus("queued", None, None, "queued")),
        ({"status": "in_progress"}, GenerationStatus("running", None, None, "in_progress")),
        (
            {"status": "completed", "video": {"url": "https://cdn.example.com/v.mp4"}},
            GenerationStatus("completed", "https://cdn.example.com/v.mp4", None, "completed"),
        ),
        (
            {"status": "failed", "error": "Generation failed"},
            GenerationStatus("failed", None, "failed: Generation failed", "failed"),
        ),
        ({"status": "nsfw"}, GenerationStatus("failed", None, "nsfw", "nsfw")),
        ({"status": "canceled"}, GenerationStatus("failed", None, "canceled", "canceled")),
    ],
)
async def test_platform_status_lifecycle(doc: dict[str, Any], expected: GenerationStatus) -> None:
    """GET {base}/requests/{id}/status, built on the base URL (not the returned status_url)."""
    provider, fake = provider_for("higgsfield", json_answer({"request_id": "req-1", **doc}))
    assert await provider.status("req-1") == expected
    assert str(fake.last.url) == f"{PLATFORM_BASE}/requests/req-1/status"


async def test_platform_completed_images_only_is_permanent() -> None:
    """A completed request with images but no ``video.url`` cannot be downloaded as a video."""
    doc = {"status": "completed", "images": [{"url": "https://cdn.example.com/i.png"}]}
    provider, _ = provider_for("higgsfield", json_answer(doc))
    with pytest.raises(PermanentError, match="without a video URL"):
        await provider.status("req-1")


async def test_platform_soul_is_a_custom_reference() -> None:
    """POST /v1/custom-references with input_images; poll GET /v1/custom-references/{id}."""
    status_doc: dict[str, Any] = {"id": "ref-1", "name": "ava", "status": "not_ready"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={**status_doc})
        return httpx.Response(200, json=status_doc)

    provider, fake = provider_for("higgsfield", answer)
    assert await provider.train_soul("ava", ["https://cdn.example.com/a.jpg"]) == "ref-1"
    assert str(fake.last.url) == f"{PLATFORM_BASE}/v1/custom-references"
    assert body_of(fake.last) == {
        "name": "ava",
        "input_images": [{"type": "image_url", "image_url": "https://cdn.example.com/a.jpg"}],
        "model_version": "v1",
    }
    for word in ("not_ready", "queued", "in_progress"):
        status_doc["status"] = word
        assert await provider.soul_status("ref-1") == SoulStatus("ref-1", "training", None)
    status_doc["status"] = "completed"
    assert await provider.soul_status("ref-1") == SoulStatus("ref-1", "ready", None)
    status_doc.update(status="failed", fail_reason="no face found")
    assert await provider.soul_status("ref-1") == SoulStatus(
        "ref-1", "failed", "failed: no face found"
    )
    assert str(fake.last.url) == f"{PLATFORM_BASE}/v1/custom-references/ref-1"


async def test_platform_upload_puts_bytes_without_the_key() -> None:
    """generate-upload-url, then PUT to upload_url with upload_headers and no Authorization."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/files/generate-upload-url":
            return httpx.Response(
                200,
                json={
                    "upload_url": "https://uploads.example-cdn.com/put/abc?sig=1",
                    "public_url": "https://cdn.example-cdn.com/abc.jpg",
                    "upload_headers": {"Content-Type": "image/jpeg", "x-amz-acl": "public-read"},
                },
            )
        return httpx.Response(200)

    provider, fake = provider_for("higgsfield", answer)
    assert await can_upload(provider).upload(b"\xff\xd8jpeg", "image/jpeg") == (
        "https://cdn.example-cdn.com/abc.jpg"
    )
    ask, put = fake.requests
    assert body_of(ask) == {"content_type": "image/jpeg"}
    assert ask.headers["Authorization"].startswith("Key ")
    assert (put.method, str(put.url)) == ("PUT", "https://uploads.example-cdn.com/put/abc?sig=1")
    assert put.content == b"\xff\xd8jpeg"
    assert put.headers["Content-Type"] == "image/jpeg"
    assert put.headers["x-amz-acl"] == "public-read"
    assert "Authorization" not in put.headers


async def test_platform_upload_refused_by_storage_is_not_fatal() -> None:
    """A 403 from the presigned URL says nothing about our credentials: PermanentError."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(
                200, json={"upload_url": "https://s3.example.com/x", "public_url": "https://p/x"}
            )
        return httpx.Response(403, text="SignatureDoesNotMatch")

    provider, _ = provider_for("higgsfield", answer)
    with pytest.raises(PermanentError, match="SignatureDoesNotMatch") as info:
        await can_upload(provider).upload(b"x", "image/png")
    assert type(info.value) is PermanentError


# --- error classes, both dialects -----------------------------------------------------------

DIALECTS = ["higgsfieldapi", "higgsfield"]


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize(
    ("status", "doc", "error_class", "text"),
    [
        (400, {"detail": "prompt too long"}, PermanentError, "prompt too long"),
        (401, {"detail": "Invalid credentials"}, FatalError, "Invalid credentials"),
        (403, {"detail": "Not enough credits"}, FatalError, "Not enough credits"),
        (404, {"message": "no such thing"}, PermanentError, "no such thing"),
        (408, {"error": "timeout"}, TransientError, "timeout"),
        (409, {"error": {"message": "conflict"}}, PermanentError, "conflict"),
        (
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]},
            PermanentError,
            "prompt: Field required",
        ),
        (429, {"detail": "slow down"}, ThrottledError, "slow down"),
        (500, {"detail": "boom"}, TransientError, "boom"),
        (502, None, TransientError, "Bad Gateway"),
        (503, None, TransientError, "HTTP 503"),
        (
            400,
            {"detail": "Maximum number of concurrent requests (4) has been reached"},
            ThrottledError,
            "concurrent requests (4)",
        ),
    ],
)
async def test_http_errors_map_to_error_classes(
    name: str, status: int, doc: Any, error_class: type[Exception], text: str
) -> None:
    """Each status maps to exactly one class, carrying the provider's message."""
    answer: Handler = (
        (lambda _r: httpx.Response(status, json=doc))
        if doc is not None
        else (lambda _r: httpx.Response(status))
    )
    provider, _ = provider_for(name, answer)
    with pytest.raises(error_class) as info:
        await provider.submit({"prompt": "p"}, idempotency_key="k-1")
    assert type(info.value) is error_class
    assert text in str(info.value)
    assert getattr(info.value, "status_code", None) == status


def http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("7", 7.0, 7.0),
        ("0", 0.0, 0.0),
        ("2.5", 2.5, 2.5),
        (None, None, None),
        ("soon", None, None),
        ("-3", 0.0, 0.0),
        ("DATE+30", 29.0, 30.0),  # an HTTP-date drops the fraction of a second
        ("DATE-30", 0.0, 0.0),
    ],
)
async def test_retry_after_forms(
    name: str, header: str | None, low: float | None, high: float | None
) -> None:
    """Retry-After as seconds or HTTP-date becomes seconds from now (never negative)."""
    started = time.time()
    if header is not None and header.startswith("DATE"):
        header = http_date(float(header.removeprefix("DATE")))
    headers = {"Retry-After": header} if header is not None else {}
    provider, _ = provider_for(name, json_answer({"detail": "busy"}, 429, headers))
    with pytest.raises(ThrottledError) as info:
        await provider.status("x")
    # A date is counted down from when it is read: as much less as this test took to get there.
    elapsed = time.time() - started if header is not None and "GMT" in header else 0.0
    if low is None:
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after is not None
        assert max(0.0, low - elapsed) <= info.value.retry_after <= (high or 0.0)


@pytest.mark.parametrize("name", DIALECTS)
async def test_retry_after_on_a_503_is_kept(name: str) -> None:
    """A 503 with Retry-After stays transient (it uses an attempt) but carries the wait, so
    the executor pauses every call for it."""
    provider, _ = provider_for(name, json_answer({"detail": "down"}, 503, {"Retry-After": "7"}))
    with pytest.raises(TransientError) as info:
        await provider.status("x")
    assert type(info.value) is TransientError
    assert info.value.retry_after == 7.0


def test_parse_retry_after_with_a_fixed_now() -> None:
    """HTTP-dates are measured from ``now``; garbage and infinities are None."""
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 120, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(120.0)
    assert parse_retry_after(email.utils.formatdate(now - 5, usegmt=True), now=now) == 0.0
    assert parse_retry_after("inf") is None
    assert parse_retry_after("   ") is None
    assert parse_retry_after("Wed, 99 Foo 2024 99:99:99 GMT") is None


@pytest.mark.parametrize(
    ("exc", "on_submit", "on_status"),
    [
        (httpx.ConnectError("refused"), TransientError, TransientError),
        (httpx.ConnectTimeout("slow"), TransientError, TransientError),
        (httpx.PoolTimeout("pool"), TransientError, TransientError),
        (httpx.ReadTimeout("read"), UnknownOutcomeError, TransientError),
        (httpx.WriteTimeout("write"), UnknownOutcomeError, TransientError),
        (httpx.ReadError("reset"), UnknownOutcomeError, TransientError),
        (httpx.WriteError("broken pipe"), UnknownOutcomeError, TransientError),
        (httpx.RemoteProtocolError("peer closed"), UnknownOutcomeError, TransientError),
    ],
)
@pytest.mark.parametrize("name", DIALECTS)
async def test_transport_errors(
    name: str, exc: Exception, on_submit: type[Exception], on_status: type[Exception]
) -> None:
    """Never-sent failures are plain transient; after sending, a submit's outcome is unknown."""

    def boom(_request: httpx.Request) -> httpx.Response:
        raise exc

    provider, _ = provider_for(name, boom)
    with pytest.raises(on_submit) as info:
        await provider.submit({"prompt": "p"}, idempotency_key="k-1")
    assert type(info.value) is on_submit
    with pytest.raises(on_status) as info2:
        await provider.status("g")
    assert type(info2.value) is on_status


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"unexpected": True}),
        httpx.Response(200, json={"generation_id": None, "request_id": ""}),
        httpx.Response(200, content=b""),
    ],
    ids=["html", "list", "no-id", "empty-id", "empty"],
)
async def test_malformed_submit_answers(name: str, response: httpx.Response) -> None:
    """A 2xx body that is not the expected JSON is a PermanentError, not a crash."""
    provider, _ = provider_for(name, lambda _r: response)
    with pytest.raises(PermanentError, match="malformed response"):
        await provider.submit({"prompt": "p"}, idempotency_key="k-1")


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("doc", [{}, {"status": 3}, {"status": ""}])
async def test_malformed_status_answers(name: str, doc: dict[str, Any]) -> None:
    """A status answer without a status word is malformed."""
    provider, _ = provider_for(name, json_answer(doc))
    with pytest.raises(PermanentError, match="malformed response"):
        await provider.status("g")
    with pytest.raises(PermanentError, match="malformed response"):
        await provider.soul_status("m")


async def test_platform_upload_malformed_answer() -> None:
    """An upload-url answer without upload_url, or with a non-http one, is malformed."""
    for doc in ({"public_url": "https://p/x"}, {"upload_url": "file:///etc/x", "public_url": "p"}):
        provider, fake = provider_for("higgsfield", json_answer(doc))
        with pytest.raises(PermanentError, match="malformed response"):
            await can_upload(provider).upload(b"x", "image/png")
        assert len(fake.requests) == 1


# --- settings: base URL and credentials -----------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "settings_url", "expected"),
    [
        ({}, None, SEED_BASE),
        ({}, "http://proxy.local:9000/api/v1/", "http://proxy.local:9000/api/v1"),
        (
            {"HIGGSFIELD_BASE_URL": "http://127.0.0.1:8808/api/v1"},
            "http://p",
            "http://127.0.0.1:8808/api/v1",
        ),
    ],
)
def test_base_url_precedence(
    environ: dict[str, str], settings_url: str | None, expected: str
) -> None:
    """HIGGSFIELD_BASE_URL > provider.base_url > the dialect's default."""
    provider = make_provider(ProviderSettings(base_url=settings_url), environ={**ENV, **environ})
    assert provider.base_url == expected
    platform = make_provider(ProviderSettings(name="higgsfield"), environ=ENV)
    assert platform.base_url == PLATFORM_BASE


@pytest.mark.parametrize(
    ("name", "environ", "variable"),
    [
        ("higgsfieldapi", {}, "HIGGSFIELD_API_KEY"),
        ("higgsfieldapi", {"HIGGSFIELD_API_KEY": "  "}, "HIGGSFIELD_API_KEY"),
        ("higgsfield", {}, "HF_KEY"),
        ("higgsfield", {"HF_KEY": "no-colon"}, "HF_KEY"),
        ("higgsfield", {"HF_API_KEY": "id-only"}, "HF_API_SECRET"),
    ],
)
def test_missing_credentials_are_usage_errors(
    name: str, environ: dict[str, str], variable: str
) -> None:
    """A missing or malformed key is a UsageError naming the variable, before any request."""
    with pytest.raises(UsageError, match=variable):
        make_provider(ProviderSettings(name=name), environ=environ)


async def test_credentials_from_pair_and_custom_variable() -> None:
    """HF_API_KEY + HF_API_SECRET, and a manifest-named variable, both work."""
    provider, fake = provider_for(
        "higgsfield", json_answer(QUEUED), environ={"HF_API_KEY": "a1b2", "HF_API_SECRET": "s3c4"}
    )
    await provider.submit({"prompt": "p"}, idempotency_key="k")
    assert fake.last.headers["Authorization"] == "Key a1b2:s3c4"
    provider, fake = provider_for(
        "higgsfieldapi",
        json_answer({"generation_id": "g"}),
        environ={"BRAND_KEY": "brand-key-1"},
        api_key_env="BRAND_KEY",
    )
    await provider.submit({"prompt": "p"}, idempotency_key="k")
    assert fake.last.headers["Authorization"] == "Bearer brand-key-1"


@pytest.mark.parametrize(
    "url", ["ftp://x.example.com", "not a url", "https://user:pw@x.example.com", "https://x/?a=1"]
)
def test_bad_base_urls_are_usage_errors(url: str) -> None:
    """Only plain http(s) base URLs without credentials are accepted."""
    with pytest.raises(UsageError):
        make_provider(ProviderSettings(base_url=url), environ=ENV)


def test_unknown_provider_name() -> None:
    """An unknown dialect name is a UsageError listing the known ones."""
    with pytest.raises(UsageError, match="higgsfield or higgsfieldapi"):
        make_provider(ProviderSettings(name="runway"), environ=ENV)


@pytest.mark.parametrize("key", ["has space", "", "k" * 256, "naïve"])
async def test_invalid_idempotency_key_is_a_programming_error(key: str) -> None:
    """Keys must be 1-255 visible ASCII characters; nothing is sent otherwise."""
    provider, fake = provider_for("higgsfieldapi", json_answer({}))
    with pytest.raises(ValueError, match="idempotency key"):
        await provider.submit({"prompt": "p"}, idempotency_key=key)
    assert fake.requests == []


# --- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIALECTS)
def test_repr_hides_the_key(name: str) -> None:
    """Neither the provider's repr nor the Secret's shows the key."""
    provider = make_provider(ProviderSettings(name=name), environ=ENV)
    for text in (repr(provider), str(provider)):
        assert not any(s in text for s in SECRETS)
    assert repr(Secret("abcdef")) == "Secret('***')" == str(Secret("abcdef"))


@pytest.mark.parametrize("name", DIALECTS)
async def test_exception_text_never_holds_the_key(name: str) -> None:
    """A provider echoing the key back, or a transport error quoting it, is redacted."""
    own = {"higgsfieldapi": (SEED_KEY,), "higgsfield": (KEY_ID, KEY_SECRET)}[name]
    echo = f"bad credentials {SEED_KEY} {KEY_ID}:{KEY_SECRET}"
    provider, _ = provider_for(name, json_answer({"detail": echo}, 401))
    with pytest.raises(FatalError) as info:
        await provider.submit({"prompt": "p"}, idempotency_key="k")
    texts = [str(info.value), repr(info.value), info.value.message]

    def leak(_request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"reset while sending Authorization: {echo}")

    provider, _ = provider_for(name, leak)
    with pytest.raises(TransientError) as info2:
        await provider.status("g")
    texts += [str(info2.value), repr(info2.value)]
    assert info2.value.__cause__ is None and info2.value.__suppress_context__
    provider, _ = provider_for(name, lambda _r: httpx.Response(200, text=echo))
    with pytest.raises(PermanentError) as info3:
        await provider.status("g")
    texts.append(str(info3.value))
    for text in texts:
        assert "***" in text
        assert not any(s in text for s in own), text


@pytest.mark.parametrize(
    "other",
    [
        "https://cdn.example.com/requests/x/status",
        "http://api.higgsfield.ai/requests/x/status",
        "https://api.higgsfield.ai:8443/requests/x/status",
        "https://api.higgsfield.ai.evil.example/requests/x/status",
    ],
)
async def test_key_goes_only_to_the_base_url_origin(other: str) -> None:
    """Another scheme, port or host never receives the Authorization header."""
    provider, fake = provider_for("higgsfield", json_answer({"status": "queued"}))
    assert isinstance(provider, HttpProvider)
    await provider.send("GET", other)
    assert "Authorization" not in fake.last.headers
    await provider.send("GET", f"{PLATFORM_BASE}/requests/x/status")
    assert fake.last.headers["Authorization"] == f"Key {KEY_ID}:{KEY_SECRET}"


async def test_redirects_are_not_followed_with_the_key() -> None:
    """A 3xx is not followed (the key would travel); it is a PermanentError."""
    provider, fake = provider_for(
        "higgsfieldapi",
        lambda _r: httpx.Response(302, headers={"Location": "https://evil.example/x"}),
    )
    with pytest.raises(PermanentError, match="HTTP 302"):
        await provider.status("g")
    assert len(fake.requests) == 1


LOOPBACK_SEED_KEY = "sk-loopback-SECRET-7777"
LOOPBACK_PLATFORM = ("lbid-SECRET-1", "lbsecret-SECRET-2")


async def test_key_never_in_debug_logs_over_a_real_socket(
    mock_server_factory: Callable[..., MockServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger at DEBUG (httpx and httpcore included), real requests over loopback
    leave no trace of either key in the captured log output."""
    options = MockOptions(
        seed_api_keys=(LOOPBACK_SEED_KEY,),
        platform_api_keys=(":".join(LOOPBACK_PLATFORM),),
        latency_min=0.0,
        latency_max=0.0,
        soul_training_seconds=0.0,
        seed=5,
    )
    server = mock_server_factory(options)
    env = {
        "HIGGSFIELD_API_KEY": LOOPBACK_SEED_KEY,
        "HF_KEY": ":".join(LOOPBACK_PLATFORM),
    }
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "runner", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=name)
    for name, base in (
        ("higgsfieldapi", server.seed_base_url),
        ("higgsfield", server.platform_base_url),
    ):
        provider = make_provider(ProviderSettings(name=name, base_url=base), environ=env)
        try:
            gen = await provider.submit({"prompt": "p"}, idempotency_key=f"{name}-1")
            status = await provider.status(gen)
            assert status.state == "completed"
            model = await provider.train_soul("ava", ["https://cdn.example.com/a.jpg"])
            assert (await provider.soul_status(model)).state == "ready"
            if name == "higgsfield":
                url = await can_upload(provider).upload(b"img", "image/png")
                assert url.startswith(server.origin)
            with pytest.raises(PermanentError):
                await provider.status("no-such-generation")
        finally:
            await provider.aclose()
    records = caplog.records
    assert any(r.name.startswith("httpcore") for r in records), "httpcore DEBUG not captured"
    assert any(r.name.startswith("httpx") for r in records), "httpx logs not captured"
    rendered = "\n".join(
        [caplog.text] + [f"{r.getMessage()} {r.args!r} {r.__dict__!r}" for r in records]
    )
    for secret in (LOOPBACK_SEED_KEY, *LOOPBACK_PLATFORM):
        assert secret not in rendered
    assert not any("authorization" in str(entry).lower() for entry in server.state.log_entries())


# --- contract against the mock API, in-process and over loopback ----------------------------


@pytest.mark.parametrize("name", DIALECTS)
async def test_lifecycle_against_the_mock(
    name: str, inprocess_mock: InProcessMock, fake_clock: FakeClock
) -> None:
    """queued → running → completed on the mock's clock; the video is the generation's own."""
    provider = inprocess_mock.provider(name)
    gen = await provider.submit({"type": "text-to-video", "prompt": "p"}, idempotency_key="j-1")
    assert (await provider.status(gen)).state == "queued"
    generation = inprocess_mock.state.generations[gen]
    fake_clock.advance(generation.latency * 0.5)
    assert (await provider.status(gen)).state == "running"
    fake_clock.advance(generation.latency)
    done = await provider.status(gen)
    assert done.state == "completed" and done.video_url is not None
    assert done.video_url.startswith(inprocess_mock.origin + "/_mock/videos/")
    video = await inprocess_mock.client.get(done.video_url)
    assert video.status_code == 200
    assert video.content == inprocess_mock.state.video_bytes(gen)
    assert video.content[4:8] == b"ftyp"


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize(
    ("options", "error"),
    [(MockOptions(seed=3, fail_rate=1.0), "failed"), (MockOptions(seed=3, nsfw_rate=1.0), "nsfw")],
    ids=["failed", "nsfw"],
)
async def test_failures_against_the_mock(
    name: str,
    options: MockOptions,
    error: str,
    inprocess_factory: Callable[..., InProcessMock],
    fake_clock: FakeClock,
) -> None:
    """Failed and NSFW generations come back failed with their word."""
    mock = inprocess_factory(options, clock=fake_clock)
    provider = mock.provider(name)
    gen = await provider.submit({"prompt": "p"}, idempotency_key="j-1")
    fake_clock.advance(10)
    status = await provider.status(gen)
    assert status.state == "failed" and status.error is not None
    assert status.error.startswith(error)


@pytest.mark.parametrize("name", DIALECTS)
async def test_souls_against_the_mock(
    name: str, inprocess_mock: InProcessMock, fake_clock: FakeClock
) -> None:
    """Training takes soul_training_seconds; a soul is refused until ready, then used."""
    provider = inprocess_mock.provider(name)
    model = await provider.train_soul("ava", ["https://cdn.example.com/a.jpg"])
    assert (await provider.soul_status(model)).state == "training"
    with pytest.raises(PermanentError):
        await provider.submit({"prompt": "p"}, idempotency_key="s-1", soul_model_id=model)
    fake_clock.advance(inprocess_mock.state.options.soul_training_seconds)
    assert await provider.soul_status(model) == SoulStatus(model, "ready", None)
    gen = await provider.submit({"prompt": "p"}, idempotency_key="s-1", soul_model_id=model)
    body = inprocess_mock.state.generations[gen].body
    assert body[{"higgsfieldapi": "model_id", "higgsfield": "custom_reference_id"}[name]] == model


async def test_upload_against_the_mock(inprocess_mock: InProcessMock) -> None:
    """The platform upload lands on the mock and the public URL serves the bytes."""
    provider = inprocess_mock.provider("higgsfield")
    url = await can_upload(provider).upload(b"\x89PNG data", "image/png")
    got = await inprocess_mock.client.get(url)
    assert (got.status_code, got.content) == (200, b"\x89PNG data")
    put = next(e for e in inprocess_mock.state.log_entries() if e["method"] == "PUT")
    assert put["auth"] is False and put["status"] == 200


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize(
    ("mode", "low", "high"), [("seconds", 3.0, 3.0), ("date", 1.0, 3.0), ("none", None, None)]
)
async def test_throttling_against_the_mock(
    name: str,
    mode: RetryAfterMode,
    low: float | None,
    high: float | None,
    inprocess_factory: Callable[..., InProcessMock],
) -> None:
    """429 with each Retry-After form becomes ThrottledError with the right retry_after."""
    options = MockOptions(rate_429=1.0, retry_after_mode=mode, retry_after=3, seed=1)
    provider = inprocess_factory(options).provider(name)
    with pytest.raises(ThrottledError) as info:
        await provider.submit({"prompt": "p"}, idempotency_key="k")
    if low is None:
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after is not None and low <= info.value.retry_after <= (high or 0)


@pytest.mark.parametrize("name", DIALECTS)
async def test_error_classes_against_the_mock(
    name: str, inprocess_factory: Callable[..., InProcessMock], fake_clock: FakeClock
) -> None:
    """Wrong key and no credits are fatal; 5xx transient; the concurrency limit throttles;
    a reused key with another body and an unknown id are permanent."""
    mock = inprocess_factory(MockOptions(seed=2, concurrency_limit=1), clock=fake_clock)
    wrong = {"HIGGSFIELD_API_KEY": "nope", "HF_KEY": "no:pe"}
    with pytest.raises(FatalError, match="401"):
        await mock.provider(name, **wrong).submit({"prompt": "p"}, idempotency_key="k")
    provider = mock.provider(name)
    await provider.submit({"prompt": "p"}, idempotency_key="k-1")
    with pytest.raises(ThrottledError) as info:
        await provider.submit({"prompt": "q"}, idempotency_key="k-2")
    assert info.value.status_code == (400 if name == "higgsfield" else 429)
    with pytest.raises(PermanentError, match="422"):
        await provider.submit({"prompt": "other"}, idempotency_key="k-1")
    with pytest.raises(PermanentError, match="404"):
        await provider.status("no-such-id")
    forbidden = inprocess_factory(MockOptions(forbidden_keys=("test-key", "test-id:test-secret")))
    with pytest.raises(FatalError, match="403"):
        await forbidden.provider(name).status("x")
    broken = inprocess_factory(MockOptions(rate_5xx=1.0, seed=4))
    with pytest.raises(TransientError, match="HTTP 50"):
        await broken.provider(name).status("x")


@pytest.mark.parametrize("name", DIALECTS)
async def test_dropped_submit_is_unknown_outcome_then_replayed(
    name: str, inprocess_factory: Callable[..., InProcessMock]
) -> None:
    """In-process: a dropped answer → UnknownOutcomeError; resending the key gets the same id."""
    mock = inprocess_factory(MockOptions(drop_after_accept_rate=1.0, seed=9))
    provider = mock.provider(name)
    with pytest.raises(UnknownOutcomeError):
        await provider.submit({"prompt": "p"}, idempotency_key="job-1")
    gen = await provider.submit({"prompt": "p"}, idempotency_key="job-1")
    assert list(mock.state.generations) == [gen]
    stats = mock.state.stats()
    assert (stats["generations_created"], stats["idempotent_replays"]) == (1, 1)


@pytest.mark.parametrize("name", DIALECTS)
async def test_dropped_submit_over_loopback(
    name: str, mock_server_factory: Callable[..., MockServerThread]
) -> None:
    """Over a real socket too, the drop is an UnknownOutcomeError and the replay succeeds."""
    server = mock_server_factory(MockOptions(drop_after_accept_rate=1.0, seed=9))
    base = server.seed_base_url if name == "higgsfieldapi" else server.platform_base_url
    env = {"HIGGSFIELD_API_KEY": "test-key", "HF_KEY": "test-id:test-secret"}
    provider = make_provider(ProviderSettings(name=name, base_url=base), environ=env)
    try:
        with pytest.raises(UnknownOutcomeError):
            await provider.submit({"prompt": "p"}, idempotency_key="job-1")
        gen = await provider.submit({"prompt": "p"}, idempotency_key="job-1")
    finally:
        await provider.aclose()
    assert list(server.state.generations) == [gen]


# --- hostile answers: every one is a provider error, never a crash --------------------------


def completed_doc(name: str, url: Any) -> dict[str, Any]:
    """A completed status answer of dialect ``name`` with ``url`` as its video URL."""
    if name == "higgsfieldapi":
        return {"status": "completed", "video_url": url}
    return {"status": "completed", "video": {"url": url}}


# Surrounding whitespace is trimmed from a video URL, so those are no cases here.
BAD_VIDEO_URLS = [u for u in MALFORMED_URLS if u == u.strip()]


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("url", BAD_VIDEO_URLS, ids=range(len(BAD_VIDEO_URLS)))
async def test_malformed_video_url_is_a_permanent_error(name: str, url: str) -> None:
    """A port past 65535, `http://[::1/x`, a 64-character label, a space in the host, ...:
    the status answer is malformed (the job fails with that reason), nothing escapes."""
    body = json.dumps(completed_doc(name, url)).encode()  # ASCII: lone surrogates escaped
    provider, _ = provider_for(name, lambda _r: httpx.Response(200, content=body))
    with pytest.raises(PermanentError, match=r"malformed response|without a video URL"):
        await provider.status("g")


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("url", [42, ["https://x.test/v.mp4"], {"u": 1}, True])
async def test_video_url_of_the_wrong_type(name: str, url: Any) -> None:
    provider, _ = provider_for(name, json_answer(completed_doc(name, url)))
    with pytest.raises(PermanentError):
        await provider.status("g")


KEY_IN_URL = [
    ("higgsfieldapi", f"https://cdn.video.test/v.mp4?token={SEED_KEY}"),
    ("higgsfieldapi", f"https://cdn.video.test/{SEED_KEY}/v.mp4"),
    ("higgsfield", f"https://cdn.video.test/v.mp4?token={KEY_SECRET}"),
    ("higgsfield", f"https://cdn.video.test/v.mp4?auth={KEY_ID}%3A{KEY_SECRET}"),
    ("higgsfield", f"https://cdn.video.test/v.mp4?auth={KEY_ID}:{KEY_SECRET}"),
]


@pytest.mark.parametrize(("name", "url"), KEY_IN_URL)
async def test_key_echoed_into_the_video_url_is_refused(name: str, url: str) -> None:
    """A key in the video URL would be stored and sent to the video host: the status is
    refused, and the message does not repeat the key."""
    provider, _ = provider_for(name, json_answer(completed_doc(name, url)))
    with pytest.raises(PermanentError, match="carries the API key") as info:
        await provider.status("g")
    assert not any(secret in str(info.value) for secret in (SEED_KEY, KEY_SECRET))


async def test_a_key_id_alone_in_the_video_url_is_fine() -> None:
    """The public half of an id:secret key is an account name, not a secret."""
    url = f"https://cdn.video.test/{KEY_ID}/v.mp4"
    provider, _ = provider_for("higgsfield", json_answer(completed_doc("higgsfield", url)))
    assert (await provider.status("g")).video_url == url


def test_redaction_covers_url_spellings_and_the_environment() -> None:
    """Secrets are masked as written and percent-encoded; ``redact`` reads the key variables."""
    secret = Secret(f"Key {KEY_ID}:{KEY_SECRET}", parts=(f"{KEY_ID}:{KEY_SECRET}", KEY_SECRET))
    text = f"https://x.test/?a={KEY_ID}%3A{KEY_SECRET}&b={KEY_SECRET}"
    assert KEY_SECRET not in secret.redact(text)
    env = {**ENV, "MY_KEY": "custom-key-0003"}
    text = f"u?t={SEED_KEY}&k={KEY_ID}%3A{KEY_SECRET}&c=custom-key-0003"
    clean = redact(text, environ=env, names=("MY_KEY",))
    assert not any(s in clean for s in (*SECRETS, "custom-key-0003"))
    provider, _ = provider_for("higgsfieldapi", json_answer({}))
    assert SEED_KEY not in redact(f"x {SEED_KEY}", provider=provider)


HOSTILE_BODIES = [
    httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000),
    httpx.Response(200, content=b'{"generation_id": ' + b"9" * 5000 + b"}"),
    httpx.Response(200, content=b'{"status": "\xff\xfe"}'),
    httpx.Response(200, content=b'{"status": "completed", "video_url": "\\ud800"}'),
    httpx.Response(200, content=b"\x00" * 1000),
    httpx.Response(200, json={"generation_id": "x" * 10_000, "request_id": "x" * 10_000}),
    httpx.Response(200, json={"generation_id": -1, "request_id": -1}),
    httpx.Response(200, json={"generation_id": 2**200, "request_id": 2**200}),
    httpx.Response(200, json={"generation_id": "a\nb", "request_id": "a\x00b"}),
    httpx.Response(200, json={"generation_id": 1.5, "request_id": [1]}),
]


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("response", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
async def test_hostile_answer_bodies(name: str, response: httpx.Response) -> None:
    """Deep nesting, 5,000-digit numbers, bad UTF-8, lone surrogates, unusable ids: each is a
    PermanentError from submit and status alike."""
    provider, _ = provider_for(name, lambda _r: response)
    with pytest.raises(PermanentError):
        await provider.submit({"prompt": "p"}, idempotency_key="k-1")
    with pytest.raises(PermanentError):
        await provider.status("g")


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("status", [400, 422, 500])
async def test_hostile_error_bodies(name: str, status: int) -> None:
    """Error answers with deeply nested or huge details still classify, briefly."""
    for body in (
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"detail": [[[[[[[[[[["deep"]]]]]]]]]]] * 10_000}).encode(),
        json.dumps({"detail": {"msg": {"x": 1}, "loc": 5}}).encode(),
        json.dumps({"detail": [{"msg": "m", "loc": "body"}]}).encode(),
    ):
        provider, _ = provider_for(name, lambda _r, b=body: httpx.Response(status, content=b))
        with pytest.raises((PermanentError, TransientError)) as info:
            await provider.status("g")
        assert len(str(info.value)) < 500


@pytest.mark.parametrize("name", DIALECTS)
async def test_answers_past_the_size_cap_are_refused(name: str) -> None:
    """An answer is read up to MAX_ANSWER_BYTES, plain or compressed (a gzip bomb)."""
    big = b'{"status": "' + b"x" * (MAX_ANSWER_BYTES + 10) + b'"}'
    provider, _ = provider_for(name, lambda _r: httpx.Response(200, content=big))
    with pytest.raises(PermanentError, match="larger than"):
        await provider.status("g")
    bomb = gzip.compress(big)
    assert len(bomb) < 100_000
    provider, _ = provider_for(
        name,
        lambda _r: httpx.Response(200, content=bomb, headers={"Content-Encoding": "gzip"}),
    )
    with pytest.raises(PermanentError, match="larger than"):
        await provider.status("g")
    # A small Content-Length is read as it comes; a transport that does not hold to it (no
    # HTTP parser in between) is still held to the cap.
    provider, _ = provider_for(
        name,
        lambda _r: httpx.Response(200, content=big, headers={"Content-Length": "10"}),
    )
    with pytest.raises(PermanentError, match="larger than"):
        await provider.status("g")


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("location", ["http://xn--zz.test/", "http://[::1/x", "http://h:99999/"])
async def test_redirect_with_a_malformed_location(name: str, location: str) -> None:
    """httpx parses Location even when not following: a provider error all the same."""
    provider, fake = provider_for(
        name, lambda _r: httpx.Response(302, headers={"Location": location})
    )
    with pytest.raises(ProviderError):
        await provider.status("g")
    assert len(fake.requests) == 1


@given(st.text(max_size=40) | st.from_regex(r"[0-9eE.+-]{1,30}", fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_parse_retry_after_never_raises(value: str) -> None:
    """Any Retry-After text gives a finite non-negative number of seconds, or None."""
    seconds = parse_retry_after(value, now=0.0)
    assert seconds is None or (seconds >= 0 and seconds != float("inf"))


# --- upload URLs: the same policy table as video URLs ---------------------------------------


def upload_answer(upload_url: str, **extra: Any) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/files/generate-upload-url":
            doc = {"upload_url": upload_url, "public_url": "https://cdn.video.test/a.jpg"}
            return httpx.Response(200, json={**doc, **extra})
        return httpx.Response(200)

    return answer


@pytest.mark.parametrize("lenient", [False, True], ids=["public-base", "private-base"])
@pytest.mark.parametrize("case", ADDRESS_TABLE, ids=case_id)
async def test_upload_url_written_as_an_address(case: tuple[str, str], lenient: bool) -> None:
    """The PUT of a local image goes only where the URL policy allows (0.0.0.0 included)."""
    host, kind = case
    policy = URLPolicy(allow_private=lenient)
    fake = Fake(upload_answer(f"http://{host}:8080/put/abc?sig=1"))
    provider = make_provider(
        ProviderSettings(name="higgsfield"),
        client=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        environ=ENV,
        url_policy=policy,
    )
    if expected(kind, policy):
        with pytest.raises(PermanentError, match="upload URL"):
            await can_upload(provider).upload(b"img", "image/png")
        assert [r.method for r in fake.requests] == ["POST"]
    else:
        await can_upload(provider).upload(b"img", "image/png")
        assert [r.method for r in fake.requests] == ["POST", "PUT"]


@pytest.mark.parametrize("case", RESOLVABLE, ids=case_id)
async def test_upload_url_whose_name_resolves_to_the_address(case: tuple[str, str]) -> None:
    """A named upload host is resolved once and the PUT connects to the checked address."""
    host, kind = case
    address = str(resolved_form(host))
    resolver = FakeResolver({"uploads.video.test": [[address]]})
    backend = RecordingBackend()
    fake = Fake(upload_answer("https://uploads.video.test/put/abc?sig=1"))
    provider = make_provider(
        ProviderSettings(name="higgsfield"),
        client=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        environ=ENV,
        url_policy=STRICT,
        upload_client=recording_client(resolver, backend),
    )
    if expected(kind, STRICT):
        with pytest.raises(PermanentError, match="refusing to connect"):
            await can_upload(provider).upload(b"img", "image/png")
        assert backend.connections == []
    else:
        await can_upload(provider).upload(b"img", "image/png")
        (connection,) = backend.connections
        assert (connection.address, connection.sni) == (address, "uploads.video.test")
        assert b"Authorization" not in bytes(connection.sent)
    assert resolver.calls == ["uploads.video.test"]


async def test_upload_dns_rebinding_gains_nothing() -> None:
    """Public at the first lookup, loopback at the second: the second upload is refused."""
    resolver = FakeResolver({"uploads.video.test": [["8.8.8.8"], ["127.0.0.1"]]})
    backend = RecordingBackend()
    fake = Fake(upload_answer("https://uploads.video.test/put/abc"))
    provider = make_provider(
        ProviderSettings(name="higgsfield"),
        client=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        environ=ENV,
        url_policy=STRICT,
        upload_client=recording_client(resolver, backend),
    )
    await can_upload(provider).upload(b"one", "image/png")
    with pytest.raises(PermanentError, match="loopback"):
        await can_upload(provider).upload(b"two", "image/png")
    assert backend.addresses == ["8.8.8.8"]


@pytest.mark.parametrize(
    "extra",
    [
        {"upload_headers": {"X-Evil": "a\r\nInjected: 1"}},
        {"upload_headers": {"X-Name": "naïve"}},
        {"upload_headers": {"Bad Name": "v"}},
        {"public_url": "http://[::1/x"},
        {"public_url": "https://" + "a" * 64 + ".test/x.jpg"},
    ],
    ids=["crlf", "non-ascii", "bad-name", "public-ipv6", "public-label"],
)
async def test_upload_answers_that_cannot_be_used(extra: dict[str, Any]) -> None:
    """Headers that cannot be sent, a public URL that is no URL: refused before any PUT."""
    provider, fake = provider_for("higgsfield", upload_answer("https://s3.video.test/x", **extra))
    with pytest.raises(PermanentError, match="malformed response"):
        await can_upload(provider).upload(b"img", "image/png")
    assert [r.method for r in fake.requests] == ["POST"]


@pytest.mark.parametrize("name", DIALECTS)
async def test_an_id_carrying_the_key_is_refused(name: str) -> None:
    """An id is stored and printed: one that echoes the key is refused, the key unrepeated."""
    secret = SEED_KEY if name == "higgsfieldapi" else KEY_SECRET
    doc = {"generation_id": f"g-{secret}", "request_id": f"g-{secret}"}
    provider, _ = provider_for(name, json_answer(doc))
    with pytest.raises(PermanentError, match="carries the API key") as info:
        await provider.submit({"prompt": "p", "model": "a/b"}, idempotency_key="k-1")
    assert secret not in str(info.value)


def test_api_calls_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With HTTP_PROXY set, the API client a provider makes for itself sends through that
    proxy (httpx ignores the environment's proxies when it is handed a transport, so the
    small pools give way to httpx's own). The proxy is a recorder on loopback, and so is
    the address asked for (refused if the call went there directly)."""
    seen: list[str] = []
    proxy = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = proxy.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            seen.append(data.split(b"\r\n", 1)[0].decode())
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    threading.Thread(target=serve, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    provider = make_provider(ProviderSettings(), environ=ENV, url_policy=URLPolicy())
    assert isinstance(provider, HttpProvider)

    async def call() -> httpx.Response:
        client = provider._client
        try:
            return await client.get("http://127.0.0.2:9/v1/ping")
        finally:
            await client.aclose()

    with proxy:
        assert anyio.run(call).status_code == 200
    assert seen == ["GET http://127.0.0.2:9/v1/ping HTTP/1.1"]
