"""The mock API itself, spoken to in raw HTTP: both dialects, idempotency, limits, faults,
videos (a real MP4 with Range), URL expiry, the request log and counters."""

from __future__ import annotations

import ast
import email.utils
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import runner.mock
from runner.mock import ConnectionDropped, MockOptions, create_app
from runner.mock.options import RetryAfterMode
from runner.mock.server import MockServerThread
from runner.mock.testing import FakeClock
from runner.mock.video import RangeNotSatisfiable, parse_range, sample_mp4, video_for
from tests.support import InProcessMock

pytestmark = pytest.mark.anyio

SEED_AUTH = {"Authorization": "Bearer test-key"}
PLATFORM_AUTH = {"Authorization": "Key test-id:test-secret"}
MODEL = "/higgsfield-ai/dop/standard"
InProcessFactory = Callable[..., InProcessMock]


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """Top-level MP4 boxes as (type, payload); asserts the sizes tile the file exactly."""
    out, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert size >= 8, f"bad box size at {offset}"
        out.append((kind, data[offset + 8 : offset + size]))
        offset += size
    assert offset == len(data)
    return out


async def seed_submit(
    mock: InProcessMock, body: dict[str, Any] | None = None, key: str | None = "k-1", **headers: str
) -> httpx.Response:
    hdrs = {**SEED_AUTH, **headers}
    if key is not None:
        hdrs["Idempotency-Key"] = key
    return await mock.client.post("/api/v1/generate", json=body or {"prompt": "p"}, headers=hdrs)


async def platform_submit(
    mock: InProcessMock, body: dict[str, Any] | None = None, key: str | None = "k-1"
) -> httpx.Response:
    hdrs = {**PLATFORM_AUTH, **({"Idempotency-Key": key} if key else {})}
    return await mock.client.post(MODEL, json=body or {"prompt": "p"}, headers=hdrs)


async def completed_video_url(mock: InProcessMock, clock: FakeClock) -> tuple[str, str]:
    gen = (await seed_submit(mock)).json()["generation_id"]
    clock.advance(60)
    status = (await mock.client.get(f"/api/v1/status/{gen}", headers=SEED_AUTH)).json()
    assert status["status"] == "completed"
    return gen, status["video_url"]


# --- the MP4 ----------------------------------------------------------------------------------


def test_fixture_is_a_real_mp4() -> None:
    """The committed fixture starts with ftyp and holds moov and mdat."""
    data = sample_mp4()
    kinds = [kind for kind, _ in boxes(data)]
    assert kinds[0] == b"ftyp" and b"moov" in kinds and b"mdat" in kinds
    assert boxes(data)[0][1][:4] in (b"isom", b"mp42", b"iso5")
    assert 500 < len(data) < 20_000


def test_each_generation_gets_distinct_valid_bytes() -> None:
    """A trailing free box names the generation; padding reaches video_size."""
    a, b = video_for("gen-a"), video_for("gen-b")
    assert a != b and a.startswith(sample_mp4()) and b.startswith(sample_mp4())
    kind, payload = boxes(a)[-1]
    assert kind == b"free" and b"gen-a" in payload
    big = video_for("gen-a", min_size=100_000)
    assert len(big) == 100_000 and boxes(big)[-1][0] == b"free"


async def test_served_video_is_the_generations_mp4(
    inprocess_mock: InProcessMock, fake_clock: FakeClock
) -> None:
    """200 with the exact bytes, ftyp first, and sha256 available for tests."""
    gen, url = await completed_video_url(inprocess_mock, fake_clock)
    got = await inprocess_mock.client.get(url)
    assert got.status_code == 200
    assert got.headers["content-type"] == "video/mp4"
    assert got.headers["accept-ranges"] == "bytes"
    assert int(got.headers["content-length"]) == len(got.content)
    assert boxes(got.content)[0][0] == b"ftyp"
    assert hashlib.sha256(got.content).hexdigest() == inprocess_mock.state.video_sha256(gen)
    assert inprocess_mock.state.stats()["video_downloads"] == 1


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),
        ("bytes=-50", -50, None),
        ("bytes=5-5", 5, 5),
    ],
)
async def test_range_requests(
    inprocess_mock: InProcessMock, fake_clock: FakeClock, header: str, first: int, last: int | None
) -> None:
    """206 with Content-Range and exactly the asked bytes."""
    gen, url = await completed_video_url(inprocess_mock, fake_clock)
    full = inprocess_mock.state.video_bytes(gen)
    size = len(full)
    got = await inprocess_mock.client.get(url, headers={"Range": header})
    assert got.status_code == 206
    start = first if first >= 0 else size + first
    end = last if last is not None else size - 1
    assert got.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert got.content == full[start : end + 1]


@pytest.mark.parametrize(
    "header", ["bytes=999999-", "bytes=10-5", "bytes=abc", "bytes=-0", "bytes=-"]
)
async def test_bad_ranges_are_416(
    inprocess_mock: InProcessMock, fake_clock: FakeClock, header: str
) -> None:
    """Unsatisfiable or malformed byte ranges: 416 with ``bytes */size``."""
    gen, url = await completed_video_url(inprocess_mock, fake_clock)
    got = await inprocess_mock.client.get(url, headers={"Range": header})
    assert got.status_code == 416
    assert got.headers["content-range"] == f"bytes */{len(inprocess_mock.state.video_bytes(gen))}"


def test_ranges_that_are_ignored() -> None:
    """No header, other units and multi-ranges serve the whole file."""
    assert parse_range(None, 10) is None
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=0-1,4-5", 10) is None
    assert parse_range("bytes=2-100", 10) == (2, 9)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=10-", 10)


async def test_head_and_tokens(inprocess_mock: InProcessMock, fake_clock: FakeClock) -> None:
    """HEAD gives the size; a missing or foreign token is 403; an unfinished video 404."""
    gen, url = await completed_video_url(inprocess_mock, fake_clock)
    head = await inprocess_mock.client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(inprocess_mock.state.video_bytes(gen))
    bare = url.split("?")[0]
    assert (await inprocess_mock.client.get(bare)).status_code == 403
    assert (await inprocess_mock.client.get(bare + "?token=forged")).status_code == 403
    other = (await seed_submit(inprocess_mock, key="k-2")).json()["generation_id"]
    assert (await inprocess_mock.client.get(f"/_mock/videos/{other}.mp4")).status_code == 404


async def test_video_urls_expire_and_status_mints_fresh_ones(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """Past url_ttl the URL answers 410; the next status call gives a new URL that works."""
    mock = inprocess_factory(MockOptions(url_ttl=30, seed=1), clock=fake_clock)
    gen, url = await completed_video_url(mock, fake_clock)
    again = (await mock.client.get(f"/api/v1/status/{gen}", headers=SEED_AUTH)).json()
    assert again["video_url"] == url  # stable while valid
    fake_clock.advance(31)
    assert (await mock.client.get(url)).status_code == 410
    fresh = (await mock.client.get(f"/api/v1/status/{gen}", headers=SEED_AUTH)).json()
    assert fresh["video_url"] != url
    assert (await mock.client.get(fresh["video_url"])).status_code == 200
    assert mock.state.stats()["expired_video_urls"] == 1


async def test_truncated_video_in_process(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """In-process a truncated body surfaces as an httpx transport error."""
    mock = inprocess_factory(MockOptions(truncate_rate=1.0, seed=1), clock=fake_clock)
    _gen, url = await completed_video_url(mock, fake_clock)
    with pytest.raises(httpx.RemoteProtocolError):
        await mock.client.get(url)
    assert mock.state.stats()["truncated_videos"] == 1


async def test_truncated_video_over_loopback(
    mock_server_factory: Callable[..., MockServerThread],
) -> None:
    """Over a socket the body stops short of its Content-Length and httpx notices."""
    server = mock_server_factory(MockOptions(truncate_rate=1.0, latency_min=0, latency_max=0))
    async with httpx.AsyncClient(base_url=server.origin) as client:
        gen = (
            await client.post("/api/v1/generate", json={"prompt": "p"}, headers=SEED_AUTH)
        ).json()["generation_id"]
        url = (await client.get(f"/api/v1/status/{gen}", headers=SEED_AUTH)).json()["video_url"]
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", url) as response:
                expected = int(response.headers["content-length"])
                async for chunk in response.aiter_bytes():
                    received += chunk
    assert 0 < len(received) < expected == len(server.state.video_bytes(gen))


# --- dialects and lifecycle ---------------------------------------------------------------------


async def test_seed_lifecycle_on_the_clock(
    inprocess_mock: InProcessMock, fake_clock: FakeClock
) -> None:
    """queued → processing → completed, at the generation's drawn latency."""
    answer = await seed_submit(inprocess_mock, {"type": "text-to-video", "prompt": "p"})
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["success"] is True and doc["type"] == "text-to-video"
    gen = inprocess_mock.state.generations[doc["generation_id"]]
    url = f"/api/v1/status/{gen.id}"
    words = []
    for t in (0.0, gen.latency * 0.5, gen.latency):
        fake_clock.now = gen.created_at + t
        words.append((await inprocess_mock.client.get(url, headers=SEED_AUTH)).json()["status"])
    assert words == ["queued", "processing", "completed"]


async def test_platform_lifecycle_and_links(
    inprocess_mock: InProcessMock, fake_clock: FakeClock
) -> None:
    """Submit answers request_id with status/cancel URLs; status goes to video.url."""
    doc = (await platform_submit(inprocess_mock)).json()
    assert doc["status"] == "queued"
    assert doc["status_url"] == f"{inprocess_mock.origin}/requests/{doc['request_id']}/status"
    assert doc["cancel_url"].endswith(f"/requests/{doc['request_id']}/cancel")
    gen = inprocess_mock.state.generations[doc["request_id"]]
    fake_clock.now = gen.created_at + gen.latency * 0.5
    status = (await inprocess_mock.client.get(doc["status_url"], headers=PLATFORM_AUTH)).json()
    assert status["status"] == "in_progress"
    fake_clock.advance(gen.latency)
    status = (await inprocess_mock.client.get(doc["status_url"], headers=PLATFORM_AUTH)).json()
    assert status["status"] == "completed" and status["video"]["url"].startswith(
        "http://127.0.0.1/"
    )


async def test_platform_cancel(inprocess_mock: InProcessMock, fake_clock: FakeClock) -> None:
    """Cancel is 202 while queued (then status canceled), 400 once processing."""
    first = (await platform_submit(inprocess_mock, key="a")).json()["request_id"]
    got = await inprocess_mock.client.post(f"/requests/{first}/cancel", headers=PLATFORM_AUTH)
    assert got.status_code == 202
    status = await inprocess_mock.client.get(f"/requests/{first}/status", headers=PLATFORM_AUTH)
    assert status.json()["status"] == "canceled"
    second = (await platform_submit(inprocess_mock, {"prompt": "q"}, key="b")).json()["request_id"]
    fake_clock.advance(inprocess_mock.state.generations[second].latency * 0.9)
    got = await inprocess_mock.client.post(f"/requests/{second}/cancel", headers=PLATFORM_AUTH)
    assert got.status_code == 400


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v1/generate", {"Authorization": "Bearer wrong"}),
        ("/api/v1/generate", {"Authorization": "Key test-id:test-secret"}),
        ("/api/v1/generate", {}),
        (MODEL, {"Authorization": "Key test-id:wrong"}),
        (MODEL, {"Authorization": "Bearer test-key"}),
        (MODEL, {}),
    ],
)
async def test_wrong_credentials_are_401(
    inprocess_mock: InProcessMock, path: str, headers: dict[str, str]
) -> None:
    """Each dialect accepts only its own auth form and keys."""
    got = await inprocess_mock.client.post(path, json={"prompt": "p"}, headers=headers)
    assert got.status_code == 401
    assert inprocess_mock.state.generations == {}


async def test_platform_legacy_headers_and_forbidden_keys(
    inprocess_factory: InProcessFactory,
) -> None:
    """hf-api-key + hf-secret authenticate; a forbidden key is 403 "Not enough credits"."""
    mock = inprocess_factory(MockOptions(forbidden_keys=("broke-id:broke",)))
    legacy = {"hf-api-key": "test-id", "hf-secret": "test-secret"}
    assert (await mock.client.post(MODEL, json={"prompt": "p"}, headers=legacy)).status_code == 200
    broke = {"Authorization": "Key broke-id:broke"}
    got = await mock.client.post(MODEL, json={"prompt": "p"}, headers=broke)
    assert (got.status_code, got.json()) == (403, {"detail": "Not enough credits"})


async def test_validation_errors(inprocess_mock: InProcessMock) -> None:
    """Seed: {success: false, error}; platform: a FastAPI detail list. Neither uses the key."""
    got = await seed_submit(inprocess_mock, {"type": "text-to-video"})
    assert got.status_code == 422 and got.json() == {
        "success": False,
        "error": "prompt is required",
    }
    got = await seed_submit(inprocess_mock, {"type": "image-to-video", "prompt": "p"})
    assert got.status_code == 422 and "image_url" in got.json()["error"]
    got = await platform_submit(inprocess_mock, {"duration": 5})
    assert got.status_code == 422
    assert got.json()["detail"][0]["loc"] == ["body", "prompt"]
    bad = await inprocess_mock.client.post(
        "/api/v1/generate", content=b"{not json", headers={**SEED_AUTH, "Idempotency-Key": "k-1"}
    )
    assert bad.status_code == 400
    assert (await seed_submit(inprocess_mock, {"prompt": "ok"})).status_code == 200


async def test_accounts_do_not_see_each_other(inprocess_factory: InProcessFactory) -> None:
    """A generation is 404 to another key's account."""
    mock = inprocess_factory(MockOptions(seed_api_keys=("key-a", "key-b")))
    gen = (
        await mock.client.post(
            "/api/v1/generate", json={"prompt": "p"}, headers={"Authorization": "Bearer key-a"}
        )
    ).json()["generation_id"]
    url = f"/api/v1/status/{gen}"
    assert (
        await mock.client.get(url, headers={"Authorization": "Bearer key-b"})
    ).status_code == 404
    assert (
        await mock.client.get(url, headers={"Authorization": "Bearer key-a"})
    ).status_code == 200


# --- idempotency and limits -----------------------------------------------------------------------


async def test_idempotency_replays_conflicts_and_duplicates(inprocess_mock: InProcessMock) -> None:
    """Same key + body → same id (a replay); same key + other body → 422; same body under
    another key → a new generation counted as a duplicate body."""
    first = (await seed_submit(inprocess_mock, {"prompt": "a"}, key="k-1")).json()
    again = (await seed_submit(inprocess_mock, {"prompt": "a"}, key="k-1")).json()
    assert again == first
    clash = await seed_submit(inprocess_mock, {"prompt": "b"}, key="k-1")
    assert clash.status_code == 422
    other = (await seed_submit(inprocess_mock, {"prompt": "a"}, key="k-2")).json()
    assert other["generation_id"] != first["generation_id"]
    platform = (await platform_submit(inprocess_mock, {"prompt": "a"}, key="k-1")).json()
    assert platform["request_id"] not in (first["generation_id"], other["generation_id"])
    stats = inprocess_mock.state.stats()
    assert stats["generations_created"] == 3
    assert stats["idempotent_replays"] == 1
    assert stats["idempotency_conflicts"] == 1
    assert stats["duplicate_bodies"] == 1


async def test_rejected_requests_do_not_use_the_key(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """Auth failures, validation errors and the concurrency 400 leave the key unused."""
    mock = inprocess_factory(MockOptions(concurrency_limit=1, seed=1), clock=fake_clock)
    hdrs = {"Authorization": "Key test-id:nope", "Idempotency-Key": "k-x"}
    assert (await mock.client.post(MODEL, json={"prompt": "1"}, headers=hdrs)).status_code == 401
    assert (await platform_submit(mock, {"duration": 1}, key="k-x")).status_code == 422
    assert (await platform_submit(mock, {"prompt": "first"}, key="k-1")).status_code == 200
    busy = await platform_submit(mock, {"prompt": "2"}, key="k-x")
    assert busy.status_code == 400
    assert busy.json() == {"detail": "Maximum number of concurrent requests (1) has been reached"}
    fake_clock.advance(60)
    accepted = await platform_submit(mock, {"prompt": "3"}, key="k-x")
    assert accepted.status_code == 200
    assert mock.state.stats()["concurrency_rejections"] == 1


async def test_seed_concurrency_limit_is_429(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """The seed dialect answers 429 (with Retry-After) over the limit; limits are per account."""
    mock = inprocess_factory(MockOptions(concurrency_limit=2, seed=1), clock=fake_clock)
    for i in range(2):
        assert (await seed_submit(mock, {"prompt": str(i)}, key=f"k-{i}")).status_code == 200
    busy = await seed_submit(mock, {"prompt": "x"}, key="k-x")
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert (await platform_submit(mock, {"prompt": "x"}, key="k-p")).status_code == 200
    assert mock.state.stats()["max_in_flight"] == 2
    assert mock.state.stats()["in_flight"] == 3


# --- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["seconds", "date", "none"])
async def test_429_retry_after_modes(
    inprocess_factory: InProcessFactory, mode: RetryAfterMode
) -> None:
    """rate_429 answers 429 on any API call, with the Retry-After form asked for."""
    mock = inprocess_factory(
        MockOptions(rate_429=1.0, retry_after_mode=mode, retry_after=5, seed=1)
    )
    got = await mock.client.get("/requests/x/status", headers=PLATFORM_AUTH)
    assert got.status_code == 429
    header = got.headers.get("retry-after")
    if mode == "seconds":
        assert header == "5"
    elif mode == "date":
        assert header is not None and email.utils.parsedate_to_datetime(header) is not None
    else:
        assert header is None
    assert mock.state.stats()["throttled"] == 1


async def test_mixed_retry_after_is_reproducible(inprocess_factory: InProcessFactory) -> None:
    """ "mixed" varies the form; the same seed gives the same sequence."""

    async def forms(seed: int) -> list[str]:
        mock = inprocess_factory(MockOptions(rate_429=1.0, retry_after_mode="mixed", seed=seed))
        out = []
        for _ in range(12):
            header = (await seed_submit(mock, key=None)).headers.get("retry-after")
            out.append("none" if header is None else "seconds" if header.isdigit() else "date")
        return out

    first = await forms(11)
    assert len(set(first)) >= 2
    assert await forms(11) == first


async def test_server_errors(inprocess_factory: InProcessFactory) -> None:
    """rate_5xx answers 500/502/503 before looking at the request."""
    mock = inprocess_factory(MockOptions(rate_5xx=1.0, seed=1))
    codes = {(await seed_submit(mock, key=None)).status_code for _ in range(10)}
    assert codes <= {500, 502, 503} and codes
    assert mock.state.generations == {}


async def test_drop_after_accept_in_process(inprocess_factory: InProcessFactory) -> None:
    """The generation is recorded, the answer never arrives; a replay returns it."""
    mock = inprocess_factory(MockOptions(drop_after_accept_rate=1.0, seed=1))
    with pytest.raises(ConnectionDropped) as info:
        await seed_submit(mock, key="k-1")
    assert isinstance(info.value, httpx.TransportError)
    (gen,) = mock.state.generations
    assert (await seed_submit(mock, key="k-1")).json()["generation_id"] == gen
    log = mock.state.log_entries()
    assert [e["note"] for e in log] == ["dropped after accept", "replay"]
    assert log[0]["status"] == 200 and log[0]["generation_id"] == gen


async def test_drop_after_accept_over_loopback(
    mock_server_factory: Callable[..., MockServerThread],
) -> None:
    """Over a socket the client sees an httpx transport error, the server kept the submit."""
    server = mock_server_factory(MockOptions(drop_after_accept_rate=1.0, seed=1))
    async with httpx.AsyncClient(base_url=server.origin) as client:
        with pytest.raises(httpx.TransportError):
            await client.post(
                "/api/v1/generate",
                json={"prompt": "p"},
                headers={**SEED_AUTH, "Idempotency-Key": "k"},
            )
    assert server.state.stats()["dropped_connections"] == 1
    assert len(server.state.generations) == 1


async def test_outcomes_are_reproducible_with_a_seed(fake_clock: FakeClock) -> None:
    """Same seed, same requests → same ids and outcomes."""

    async def run() -> list[tuple[str, str]]:
        app = create_app(MockOptions(fail_rate=0.3, nsfw_rate=0.3, seed=42), clock=fake_clock)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client:
            for i in range(20):
                await client.post("/api/v1/generate", json={"prompt": str(i)}, headers=SEED_AUTH)
        return [(g.id, g.outcome) for g in app.state.mock.generations.values()]

    first = await run()
    assert {outcome for _, outcome in first} == {"completed", "failed", "nsfw"}
    assert await run() == first


# --- souls and uploads -------------------------------------------------------------------------


async def test_souls_train_on_the_clock(
    inprocess_mock: InProcessMock, fake_clock: FakeClock
) -> None:
    """Seed: training → ready; platform: not_ready → queued → in_progress → completed."""
    seed = await inprocess_mock.client.post(
        "/api/v1/soul/train", json={"name": "ava", "images": ["https://x/1.jpg"]}, headers=SEED_AUTH
    )
    model = seed.json()["model_id"]
    made = await inprocess_mock.client.post(
        "/v1/custom-references",
        json={
            "name": "ava",
            "input_images": [{"type": "image_url", "image_url": "https://x/1.jpg"}],
        },
        headers=PLATFORM_AUTH,
    )
    ref = made.json()["id"]
    assert made.json()["status"] == "not_ready"
    seconds = inprocess_mock.state.options.soul_training_seconds
    seed_words, platform_words = [], []
    for _ in range(4):
        seed_words.append(
            (
                await inprocess_mock.client.get(f"/api/v1/soul/models/{model}", headers=SEED_AUTH)
            ).json()["status"]
        )
        platform_words.append(
            (
                await inprocess_mock.client.get(
                    f"/v1/custom-references/{ref}", headers=PLATFORM_AUTH
                )
            ).json()["status"]
        )
        fake_clock.advance(seconds / 3 + 1e-9)
    assert seed_words == ["training", "training", "training", "ready"]
    assert platform_words == ["not_ready", "queued", "in_progress", "completed"]


async def test_soul_failures_and_validation(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """soul_fail_rate fails trainings with a reason; bad bodies are 422."""
    mock = inprocess_factory(MockOptions(soul_fail_rate=1.0, seed=1), clock=fake_clock)
    ref = (
        await mock.client.post(
            "/v1/custom-references",
            json={"name": "x", "input_images": [{"type": "image_url", "image_url": "u"}]},
            headers=PLATFORM_AUTH,
        )
    ).json()["id"]
    fake_clock.advance(60)
    doc = (await mock.client.get(f"/v1/custom-references/{ref}", headers=PLATFORM_AUTH)).json()
    assert doc["status"] == "failed" and doc["fail_reason"]
    for body in ({"name": "x", "input_images": []}, {"name": "", "input_images": ["u"]}):
        got = await mock.client.post("/v1/custom-references", json=body, headers=PLATFORM_AUTH)
        assert got.status_code == 422
    got = await mock.client.post("/api/v1/soul/train", json={"name": "x"}, headers=SEED_AUTH)
    assert got.status_code == 422


async def test_presigned_upload(inprocess_mock: InProcessMock) -> None:
    """The PUT needs no key but must carry the signed Content-Type; the file is then public."""
    slot = (
        await inprocess_mock.client.post(
            "/files/generate-upload-url", json={"content_type": "image/jpeg"}, headers=PLATFORM_AUTH
        )
    ).json()
    assert slot["upload_headers"] == {"Content-Type": "image/jpeg"}
    wrong = await inprocess_mock.client.put(
        slot["upload_url"], content=b"x", headers={"Content-Type": "image/png"}
    )
    assert wrong.status_code == 403
    put = await inprocess_mock.client.put(
        slot["upload_url"], content=b"jpeg!", headers=slot["upload_headers"]
    )
    assert put.status_code == 200
    got = await inprocess_mock.client.get(slot["public_url"])
    assert (got.content, got.headers["content-type"]) == (b"jpeg!", "image/jpeg")


# --- log, stats, options ------------------------------------------------------------------------


async def test_log_and_stats_endpoints(inprocess_mock: InProcessMock) -> None:
    """/_mock/log lists requests without credentials; /_mock/stats the counters."""
    gen = (await seed_submit(inprocess_mock, key="k-1")).json()["generation_id"]
    await inprocess_mock.client.get(f"/api/v1/status/{gen}", headers=SEED_AUTH)
    await inprocess_mock.client.get("/api/v1/status/x", headers={"Authorization": "Bearer bad"})
    log = (await inprocess_mock.client.get("/_mock/log")).json()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/api/v1/generate", 200),
        ("GET", f"/api/v1/status/{gen}", 200),
        ("GET", "/api/v1/status/x", 401),
    ]
    assert log[0]["idempotency_key"] == "k-1" and log[0]["generation_id"] == gen
    assert all(isinstance(e["time"], float) for e in log)
    text = str(log).lower()
    assert "test-key" not in text and "bearer" not in text and "bad" not in text
    stats = (await inprocess_mock.client.get("/_mock/stats")).json()
    assert stats["generations_created"] == 1 and stats["auth_failures"] == 1
    assert {"idempotent_replays", "duplicate_bodies", "video_downloads"} <= stats.keys()


@pytest.mark.parametrize(
    "bad",
    [
        {"fail_rate": 1.5},
        {"fail_rate": 0.6, "nsfw_rate": 0.6},
        {"latency_min": 2, "latency_max": 1},
        {"retry_after_mode": "sometimes"},
        {"concurrency_limit": 0},
        {"url_ttl": 0},
    ],
)
def test_options_are_validated(bad: dict[str, Any]) -> None:
    """Impossible options fail loudly at construction."""
    with pytest.raises(ValueError):
        MockOptions(**bad)


# --- independence from the product -------------------------------------------------------------


def product_imports(source: str, package: str) -> list[str]:
    """The modules outside ``runner.mock`` that ``source`` (a module of ``package``) imports,
    relative imports resolved and imports inside functions included."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found.extend(f"{module}.{alias.name}" for alias in node.names)
    return [
        name
        for name in found
        if (name == "runner" or name.startswith("runner."))
        and not (name == "runner.mock" or name.startswith("runner.mock."))
    ]


def test_product_imports_are_found() -> None:
    """The checker below sees absolute, relative and lazy imports of the product."""
    source = (
        "import httpx\nfrom runner.mock import seed\nfrom . import state\n"
        "from runner.providers import make_provider\nfrom .. import errors\n"
        "def f():\n    import runner.ledger\n"
    )
    assert product_imports(source, "runner.mock") == [
        "runner.providers.make_provider",
        "runner.errors",
        "runner.ledger",
    ]


def test_mock_imports_nothing_from_the_product() -> None:
    """No module of runner/mock imports ``runner.*`` outside ``runner.mock``: the mock stands
    apart from what it tests (``tests/support.py`` wires the two together)."""
    root = Path(runner.mock.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 1, root
    offenders = {
        str(path.relative_to(root)): found
        for path in files
        if (
            found := product_imports(
                path.read_text(), ".".join(["runner", "mock", *path.parent.relative_to(root).parts])
            )
        )
    }
    assert offenders == {}
