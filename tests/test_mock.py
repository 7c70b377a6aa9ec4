"""The mock API itself, spoken to in raw HTTP: both dialects, idempotency, limits, faults,
videos (a real MP4 with Range), URL expiry, the request log and counters."""

from __future__ import annotations

import ast
import email.utils
import hashlib
import struct
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from random import Random
from typing import Any

import httpx
import pytest

import runner.mock
from runner.mock import ConnectionDropped, MockOptions, create_app
from runner.mock.options import DEFAULT_RESULT_TTL, GLITCH_KINDS, GlitchKind, RetryAfterMode
from runner.mock.records import Generation
from runner.mock.scheduling import AccountQueue
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


async def platform_words(mock: InProcessMock, ids: list[str]) -> list[str]:
    """The status word of each platform request, in order."""
    words = []
    for request_id in ids:
        got = await mock.client.get(f"/requests/{request_id}/status", headers=PLATFORM_AUTH)
        words.append(got.json()["status"])
    return words


def reference_body(name: str, *urls: str) -> dict[str, Any]:
    """A POST /v1/custom-references body."""
    images = [{"type": "image_url", "image_url": u} for u in urls or ("https://x/1.jpg",)]
    return {"name": name, "input_images": images}


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
    """Cancel is 202 while queued (then status canceled, counted and refunded; a repeat is 202
    and not counted again), 400 once processing or finished, 404 for an unknown id."""
    mock = inprocess_mock
    first = (await platform_submit(mock, key="a")).json()["request_id"]
    got = await mock.client.post(f"/requests/{first}/cancel", headers=PLATFORM_AUTH)
    assert (got.status_code, got.json()) == (202, {"status": "canceled", "request_id": first})
    status = await mock.client.get(f"/requests/{first}/status", headers=PLATFORM_AUTH)
    assert status.json()["status"] == "canceled"
    again = await mock.client.post(f"/requests/{first}/cancel", headers=PLATFORM_AUTH)
    assert again.status_code == 202
    second = (await platform_submit(mock, {"prompt": "q"}, key="b")).json()["request_id"]
    fake_clock.advance(mock.state.generations[second].latency * 0.9)
    got = await mock.client.post(f"/requests/{second}/cancel", headers=PLATFORM_AUTH)
    assert (got.status_code, got.json()) == (400, {"detail": "Request is already being processed"})
    fake_clock.advance(60)
    got = await mock.client.post(f"/requests/{second}/cancel", headers=PLATFORM_AUTH)
    assert got.status_code == 400
    got = await mock.client.post("/requests/nope/cancel", headers=PLATFORM_AUTH)
    assert got.status_code == 404
    stats = mock.state.stats()
    assert (stats["canceled"], stats["charged"], stats["refunded"]) == (1, 1, 1)


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


# --- the platform's account queue, cancel, estimates ---------------------------------------------


async def test_account_queue_accepts_above_concurrency_then_refuses_when_full(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """Above concurrency_limit submits wait queued and start, first come first started, as
    slots free; past queue_limit more a submit is 429 account_queue_full with Retry-After,
    nothing created or charged, and the same key works once there is room."""
    options = MockOptions(
        latency_min=10, latency_max=10, concurrency_limit=1, queue_limit=2, retry_after=7, seed=1
    )
    mock = inprocess_factory(options, clock=fake_clock)
    ids = [
        (await platform_submit(mock, {"prompt": str(i)}, key=f"k-{i}")).json()["request_id"]
        for i in range(3)
    ]
    full = await platform_submit(mock, {"prompt": "3"}, key="k-3")
    assert full.status_code == 429
    assert full.json()["code"] == "account_queue_full" and full.json()["detail"]
    assert full.headers["retry-after"] == "7"
    assert len(mock.state.generations) == 3
    fake_clock.advance(3)  # the first has left its own queue time (2.5 s) and runs
    assert await platform_words(mock, ids) == ["in_progress", "queued", "queued"]
    stats = mock.state.stats()
    assert (stats["queued"], stats["running"], stats["in_flight"]) == (2, 1, 3)
    fake_clock.advance(7)  # the first finished at 10 s: the second takes its slot
    assert await platform_words(mock, ids) == ["completed", "in_progress", "queued"]
    resent = await platform_submit(mock, {"prompt": "3"}, key="k-3")
    assert resent.status_code == 200
    replay = await platform_submit(mock, {"prompt": "3"}, key="k-3")
    assert replay.json()["request_id"] == resent.json()["request_id"]
    fake_clock.advance(7.5)  # the second ran 7.5 s (10 s less its queue share)
    ids.append(resent.json()["request_id"])
    assert await platform_words(mock, ids) == ["completed", "completed", "in_progress", "queued"]
    fake_clock.advance(15)
    assert await platform_words(mock, ids) == ["completed"] * 4
    stats = mock.state.stats()
    assert stats["queue_full_rejections"] == 1 and stats["concurrency_rejections"] == 0
    assert (stats["generations_created"], stats["charged"], stats["max_running"]) == (4, 4, 1)
    assert stats["max_in_flight"] == 3


async def test_account_queue_is_the_platforms_only(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """The seed dialect keeps its 429 at the concurrency limit with queue_limit set."""
    options = MockOptions(latency_min=10, latency_max=10, concurrency_limit=1, queue_limit=5)
    mock = inprocess_factory(options, clock=fake_clock)
    assert (await seed_submit(mock, {"prompt": "a"}, key="a")).status_code == 200
    busy = await seed_submit(mock, {"prompt": "b"}, key="b")
    assert busy.status_code == 429 and "concurrent" in busy.json()["error"]
    assert mock.state.stats()["concurrency_rejections"] == 1


async def test_cancel_frees_a_place_in_the_account_queue(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """A cancelled queued request never runs and its place goes to the next submit; the one
    running cannot be cancelled."""
    options = MockOptions(latency_min=10, latency_max=10, concurrency_limit=1, queue_limit=1)
    mock = inprocess_factory(options, clock=fake_clock)
    first = (await platform_submit(mock, {"prompt": "a"}, key="a")).json()["request_id"]
    second = (await platform_submit(mock, {"prompt": "b"}, key="b")).json()["request_id"]
    assert (await platform_submit(mock, {"prompt": "c"}, key="c")).status_code == 429
    fake_clock.advance(5)
    assert (
        await mock.client.post(f"/requests/{first}/cancel", headers=PLATFORM_AUTH)
    ).status_code == 400
    assert (
        await mock.client.post(f"/requests/{second}/cancel", headers=PLATFORM_AUTH)
    ).status_code == 202
    third = (await platform_submit(mock, {"prompt": "c"}, key="c")).json()["request_id"]
    fake_clock.advance(5)  # the first finishes at 10 s; the third (ready at 7.5 s) starts
    assert await platform_words(mock, [first, second, third]) == [
        "completed",
        "canceled",
        "in_progress",
    ]
    stats = mock.state.stats()
    assert (stats["canceled"], stats["charged"], stats["refunded"]) == (1, 2, 1)


def test_account_queue_schedule_holds_its_promises() -> None:
    """Random arrivals and run times: never more than ``slots`` running at once, starts in
    submit order, none before it is ready, and none waiting while a slot is free."""
    rng = Random(5)
    for slots in (1, 2, 3):
        queue, made, now = AccountQueue(slots), [], 0.0
        for i in range(60):
            now += rng.choice((0.0, 0.5, 3.0))
            generation = Generation(
                id=str(i),
                account="a",
                dialect="platform",
                route="m",
                body={},
                body_hash="",
                idempotency_key=None,
                created_at=now,
                latency=rng.uniform(1, 10),
                outcome="completed",
            )
            queue.add(generation)
            made.append(generation)
            queue.advance(now)
        queue.advance(now + 10_000)
        spans = []
        for g in made:
            assert g.started_at is not None and g.finished_at is not None
            spans.append((g.ready_at, g.started_at, g.finished_at))
        starts = [start for _, start, _ in spans]
        assert starts == sorted(starts)
        for i, (ready, start, _) in enumerate(spans):
            assert start >= ready
            assert sum(1 for _, s, f in spans if s <= start < f) <= slots
            if start > ready:  # it waited: for a slot to free, or behind one starting then
                freed = any(f == start for _, _, f in spans)
                assert freed or any(s == start for _, s, _ in spans[:i])
        assert queue.max_running <= slots


async def test_estimate_prices_a_body(inprocess_mock: InProcessMock) -> None:
    """POST /estimate/{model} answers decimal strings, the same for the same duration and
    resolution whatever the prompt; nothing is created; only priced answers are counted."""
    mock = inprocess_mock

    async def estimate(
        body: dict[str, Any], auth: dict[str, str] = PLATFORM_AUTH
    ) -> httpx.Response:
        return await mock.client.post("/estimate" + MODEL, json=body, headers=auth)

    default = await estimate({})
    assert (default.status_code, default.json()) == (200, {"credits": "1.500", "usd": "0.094"})
    assert (await estimate({"duration": 5, "resolution": "720p", "prompt": "x"})).json() == (
        default.json()
    )
    big = await estimate({"duration": 10, "resolution": "1080p", "prompt": "y", "seed": 3})
    assert big.json() == {"credits": "6.000", "usd": "0.375"}
    assert (await estimate({"duration": "ten"})).status_code == 422
    assert (await estimate({}, auth={})).status_code == 401
    assert mock.state.generations == {}
    assert mock.state.stats()["estimates"] == 3


# --- result expiry --------------------------------------------------------------------------------


async def test_completed_results_carry_expires_at_then_expire(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """A completed platform result says when it expires (result_ttl after it completed); after
    that the status answers it expired, without a URL, and its video URL is 410."""
    assert MockOptions().result_ttl == DEFAULT_RESULT_TTL == 7 * 24 * 3600
    options = MockOptions(latency_min=10, latency_max=10, result_ttl=100, seed=1)
    mock = inprocess_factory(options, clock=fake_clock)
    request_id = (await platform_submit(mock)).json()["request_id"]
    path = f"/requests/{request_id}/status"
    assert "expires_at" not in (await mock.client.get(path, headers=PLATFORM_AUTH)).json()
    fake_clock.advance(10)
    done = (await mock.client.get(path, headers=PLATFORM_AUTH)).json()
    assert done["status"] == "completed" and "expired" not in done
    assert done["expires_at"] == mock.state.iso(fake_clock.now + 100)
    assert done["expires_at"].endswith("Z")
    when = datetime.fromisoformat(done["expires_at"])
    assert abs(when.timestamp() - (mock.state.wall_offset + fake_clock.now + 100)) < 1
    url = done["video"]["url"]
    assert (await mock.client.get(url)).status_code == 200
    fake_clock.advance(100)
    gone = (await mock.client.get(path, headers=PLATFORM_AUTH)).json()
    assert gone == {
        "status": "completed",
        "request_id": request_id,
        "status_url": done["status_url"],
        "cancel_url": done["cancel_url"],
        "expires_at": done["expires_at"],
        "expired": True,
        "video": None,
    }
    expired = await mock.client.get(url)
    assert expired.status_code == 410 and done["expires_at"] in expired.json()["detail"]
    assert mock.state.stats()["expired_results"] == 1


async def test_seed_results_do_not_expire(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """The seed API documents no retention: no expires_at, and the video stays."""
    mock = inprocess_factory(MockOptions(result_ttl=1, seed=1), clock=fake_clock)
    gen, url = await completed_video_url(mock, fake_clock)
    fake_clock.advance(3600)
    doc = (await mock.client.get(f"/api/v1/status/{gen}", headers=SEED_AUTH)).json()
    assert "expires_at" not in doc and doc["video_url"] == url
    assert (await mock.client.get(url)).status_code == 200


# --- status glitches ------------------------------------------------------------------------------


def is_true_completed(answer: httpx.Response) -> bool:
    """A 200 JSON answer saying completed, with a video URL (either dialect's shape)."""
    if answer.status_code != 200 or "json" not in answer.headers["content-type"]:
        return False
    doc = answer.json()
    return doc.get("status") == "completed" and bool(doc.get("video_url") or doc.get("video"))


async def glitched_status(
    mock: InProcessMock, dialect: str
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Submit one generation (finished at once) and ask its status five times: the one
    answer that was not the true one, and the answers after it."""
    if dialect == "seed":
        gen = (await seed_submit(mock)).json()["generation_id"]
        path, auth = f"/api/v1/status/{gen}", SEED_AUTH
    else:
        gen = (await platform_submit(mock)).json()["request_id"]
        path, auth = f"/requests/{gen}/status", PLATFORM_AUTH
    answers = [await mock.client.get(path, headers=auth) for _ in range(5)]
    glitched = [a for a in answers if not is_true_completed(a)]
    assert len(glitched) == 1, [a.text for a in answers]
    return glitched[0], answers[answers.index(glitched[0]) + 1 :]


@pytest.mark.parametrize("dialect", ["seed", "platform"])
@pytest.mark.parametrize("kind", GLITCH_KINDS)
async def test_each_status_glitch_once_per_generation(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock, dialect: str, kind: GlitchKind
) -> None:
    """glitch_rate 1 with one kind: that glitch answers exactly one status call, in its
    documented shape, and is counted; every other answer is the true one."""
    options = MockOptions(latency_min=0, latency_max=0, glitch_rate=1.0, glitches=(kind,), seed=1)
    mock = inprocess_factory(options, clock=fake_clock)
    glitch, after = await glitched_status(mock, dialect)
    running = "processing" if dialect == "seed" else "in_progress"
    if kind == "html":
        assert glitch.status_code == 200 and glitch.headers["content-type"].startswith("text/html")
        assert glitch.text.startswith("<!DOCTYPE html>")
    elif kind == "not_found":
        assert glitch.status_code == 404
    elif kind == "redirect":
        assert glitch.status_code == 307
        target = httpx.URL(glitch.headers["location"])
        assert (target.host, target.path) == ("127.0.0.2", glitch.request.url.path)
    else:
        doc = glitch.json()
        expected = {
            "no_status": None,
            "numeric_status": 3,
            "no_url": "completed",
            "regressed": running,
        }[kind]
        assert doc.get("status") == expected
        assert not doc.get("video_url") and not doc.get("video")
    assert len(after) >= 3 and all(is_true_completed(a) for a in after)
    stats = mock.state.stats()
    assert stats["glitches"] == 1 and stats[f"glitch_{kind}"] == 1


async def test_every_glitch_kind_hits_each_generation_once(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """With every kind on at rate 1, each generation gets each kind once, then true answers;
    no_url and regressed wait until it completed (regressed until it was answered so)."""
    options = MockOptions(latency_min=10, latency_max=10, glitch_rate=1.0, seed=3)
    mock = inprocess_factory(options, clock=fake_clock)
    ids = [(await platform_submit(mock, {"prompt": p}, key=p)).json()["request_id"] for p in "ab"]
    for request_id in ids:
        for _ in range(5):
            await mock.client.get(f"/requests/{request_id}/status", headers=PLATFORM_AUTH)
    assert mock.state.stats()["glitches"] == 2 * 5  # html, no_status, numeric, not_found, redirect
    fake_clock.advance(10)
    for request_id in ids:
        for _ in range(6):
            await mock.client.get(f"/requests/{request_id}/status", headers=PLATFORM_AUTH)
    stats = mock.state.stats()
    assert stats["glitches"] == 2 * len(GLITCH_KINDS)
    assert all(stats[f"glitch_{kind}"] == 2 for kind in GLITCH_KINDS)
    assert await platform_words(mock, ids) == ["completed", "completed"]


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


async def test_soul_creation_honours_idempotency_keys(inprocess_mock: InProcessMock) -> None:
    """Both dialects: the same key gives the same soul back (a replay), the same key with
    another body is 422; soul keys and generation keys are apart; without keys the same
    identity twice is a second training, counted as a duplicate."""
    mock = inprocess_mock
    hdrs = {**PLATFORM_AUTH, "Idempotency-Key": "soul-1"}
    first = await mock.client.post(
        "/v1/custom-references", json=reference_body("ava"), headers=hdrs
    )
    again = await mock.client.post(
        "/v1/custom-references", json=reference_body("ava"), headers=hdrs
    )
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    clash = await mock.client.post("/v1/custom-references", json=reference_body("bo"), headers=hdrs)
    assert clash.status_code == 422
    assert (await platform_submit(mock, key="soul-1")).status_code == 200
    seed_hdrs = {**SEED_AUTH, "Idempotency-Key": "soul-1"}
    body = {"name": "ava", "images": ["https://x/1.jpg"]}
    seed_first = await mock.client.post("/api/v1/soul/train", json=body, headers=seed_hdrs)
    seed_again = await mock.client.post("/api/v1/soul/train", json=body, headers=seed_hdrs)
    assert seed_again.json()["model_id"] == seed_first.json()["model_id"] != first.json()["id"]
    other = {**body, "images": ["https://x/2.jpg"]}
    assert (
        await mock.client.post("/api/v1/soul/train", json=other, headers=seed_hdrs)
    ).status_code == 422
    for _ in range(2):
        await mock.client.post("/api/v1/soul/train", json=body, headers=SEED_AUTH)
    stats = mock.state.stats()
    assert stats["souls_created"] == 4 and stats["soul_replays"] == 2
    assert stats["idempotency_conflicts"] == 2 and stats["duplicate_souls"] == 2


@pytest.mark.parametrize("dialect", ["seed", "platform"])
async def test_drop_soul_answer_after_accept(
    inprocess_factory: InProcessFactory, dialect: str
) -> None:
    """drop_soul_answer_rate: the training is started, the answer never arrives; the same key
    then gets it back (a replay is never dropped)."""
    mock = inprocess_factory(MockOptions(drop_soul_answer_rate=1.0, seed=1))
    if dialect == "seed":
        path, body = "/api/v1/soul/train", {"name": "ava", "images": ["https://x/1.jpg"]}
        hdrs, field = {**SEED_AUTH, "Idempotency-Key": "s"}, "model_id"
    else:
        path, body = "/v1/custom-references", reference_body("ava")
        hdrs, field = {**PLATFORM_AUTH, "Idempotency-Key": "s"}, "id"
    with pytest.raises(ConnectionDropped):
        await mock.client.post(path, json=body, headers=hdrs)
    (soul,) = mock.state.souls
    assert (await mock.client.post(path, json=body, headers=hdrs)).json()[field] == soul
    stats = mock.state.stats()
    assert (stats["souls_created"], stats["dropped_soul_answers"], stats["soul_replays"]) == (
        1,
        1,
        1,
    )


async def test_list_custom_references(inprocess_factory: InProcessFactory) -> None:
    """GET /v1/custom-references/list pages through the account's references, oldest first,
    each shaped like GET /v1/custom-references/{id}; other accounts' stay hidden."""
    mock = inprocess_factory(
        MockOptions(platform_api_keys=("test-id:test-secret", "other:key"), seed=1)
    )
    for name in ("ava", "bo", "cy"):
        await mock.client.post(
            "/v1/custom-references", json=reference_body(name), headers=PLATFORM_AUTH
        )
    await mock.client.post(
        "/v1/custom-references",
        json=reference_body("zed"),
        headers={"Authorization": "Key other:key"},
    )

    async def page(query: str) -> httpx.Response:
        return await mock.client.get(f"/v1/custom-references/list{query}", headers=PLATFORM_AUTH)

    first = (await page("?page=1&page_size=2")).json()
    assert [i["name"] for i in first["items"]] == ["ava", "bo"]
    assert (first["page"], first["page_size"], first["total"]) == (1, 2, 3)
    second = (await page("?page=2&page_size=2")).json()
    assert [i["name"] for i in second["items"]] == ["cy"]
    assert (await page("?page=3&page_size=2")).json()["items"] == []
    everything = (await page("")).json()
    assert [i["name"] for i in everything["items"]] == ["ava", "bo", "cy"]
    one = everything["items"][0]
    alone = await mock.client.get(f"/v1/custom-references/{one['id']}", headers=PLATFORM_AUTH)
    assert alone.json() == one
    for bad in ("?page_size=0", "?page_size=101", "?page=x", "?page=0"):
        assert (await page(bad)).status_code == 422, bad
    assert (await mock.client.get("/v1/custom-references/list")).status_code == 401
    assert mock.state.stats()["reference_listings"] == 4


async def test_presigned_upload(inprocess_mock: InProcessMock) -> None:
    """The PUT needs no key but must carry every upload header as given (403 and counted
    otherwise); the file is then public."""
    slot = (
        await inprocess_mock.client.post(
            "/files/generate-upload-url", json={"content_type": "image/jpeg"}, headers=PLATFORM_AUTH
        )
    ).json()
    assert slot["upload_headers"] == {
        "Content-Type": "image/jpeg",
        "x-amz-tagging": "retention=temporary",
    }
    for headers in (
        {**slot["upload_headers"], "Content-Type": "image/png"},
        {"Content-Type": "image/jpeg"},  # what the official Python SDK sends
        {"x-amz-tagging": "retention=temporary"},
    ):
        wrong = await inprocess_mock.client.put(slot["upload_url"], content=b"x", headers=headers)
        assert wrong.status_code == 403
    assert inprocess_mock.state.stats()["upload_refusals"] == 3
    assert inprocess_mock.state.stats()["uploads"] == 0
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
        {"queue_limit": 4},
        {"concurrency_limit": 2, "queue_limit": -1},
        {"result_ttl": 0},
        {"glitch_rate": 1.5},
        {"glitches": ("html", "teapot")},
        {"drop_soul_answer_rate": -0.1},
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
