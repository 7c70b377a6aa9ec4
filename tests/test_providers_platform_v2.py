"""The platform's current contract, as the providers speak it: cancel, estimate, finding a
soul by name, expires_at, every upload header, the account queue's 429, and idempotent soul
training — against the mock in-process (and httpx.MockTransport where the mock cannot say it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from runner.errors import PermanentError, ThrottledError, UnknownOutcomeError
from runner.mock import MockOptions
from runner.mock.testing import FakeClock
from runner.providers import (
    CancelProvider,
    EstimateProvider,
    Provider,
    ProviderSettings,
    ReferenceLister,
    canceller,
    estimator,
    make_provider,
    reference_lister,
    uploader,
)
from runner.providers.platform import parse_time
from tests.support import InProcessMock

pytestmark = pytest.mark.anyio

InProcessFactory = Callable[..., InProcessMock]
DIALECTS = ("higgsfieldapi", "higgsfield")
SLOW = MockOptions(latency_min=10, latency_max=10, seed=1)  # queued 2.5 s, then running 7.5 s
IMAGE = "https://cdn.example.com/a.jpg"


def can_cancel(provider: Provider) -> CancelProvider:
    """``provider`` as a canceller (the test's dialect must be one)."""
    found = canceller(provider)
    assert found is not None
    return found


def can_estimate(provider: Provider) -> EstimateProvider:
    """``provider`` as an estimator (the test's dialect must be one)."""
    found = estimator(provider)
    assert found is not None
    return found


def can_list(provider: Provider) -> ReferenceLister:
    """``provider`` as a reference lister (the test's dialect must be one)."""
    found = reference_lister(provider)
    assert found is not None
    return found


def on_transport(answer: Callable[[httpx.Request], httpx.Response]) -> Provider:
    """A platform provider whose every request is answered by ``answer``."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return make_provider(
        ProviderSettings(name="higgsfield"), client=client, environ={"HF_KEY": "kid:ksecret"}
    )


# --- capabilities -------------------------------------------------------------------------------


async def test_the_platform_has_the_new_capabilities_and_the_seed_none(
    inprocess_mock: InProcessMock,
) -> None:
    """canceller, estimator and reference_lister find them on the platform dialect only."""
    platform = inprocess_mock.provider("higgsfield")
    seed = inprocess_mock.provider("higgsfieldapi")
    for helper in (canceller, estimator, reference_lister, uploader):
        found: object = helper(platform)
        assert found is platform
        assert helper(seed) is None
    assert not hasattr(seed, "cancel") and not hasattr(seed, "estimate")


# --- cancel -------------------------------------------------------------------------------------


async def test_cancel_while_queued_then_too_late(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """True for a queued request (the mock counts the refund; asking again is still True),
    False once it runs; an unknown id is a PermanentError (404)."""
    mock = inprocess_factory(SLOW, clock=fake_clock)
    provider = mock.provider("higgsfield")
    queued = await provider.submit({"prompt": "a"}, idempotency_key="a")
    assert await can_cancel(provider).cancel(queued) is True
    assert await can_cancel(provider).cancel(queued) is True
    status = await provider.status(queued)
    assert (status.state, status.raw) == ("failed", "canceled")
    running = await provider.submit({"prompt": "b"}, idempotency_key="b")
    fake_clock.advance(5)
    assert await can_cancel(provider).cancel(running) is False
    fake_clock.advance(10)
    assert await can_cancel(provider).cancel(running) is False
    assert (await provider.status(running)).state == "completed"
    with pytest.raises(PermanentError, match="404"):
        await can_cancel(provider).cancel("no-such-id")
    stats = mock.state.stats()
    assert (stats["canceled"], stats["charged"], stats["refunded"]) == (1, 1, 1)


async def test_cancel_in_the_account_queue(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """Above the account's concurrency a request waits queued and can be cancelled there."""
    options = replace(SLOW, concurrency_limit=1, queue_limit=3)
    mock = inprocess_factory(options, clock=fake_clock)
    provider = mock.provider("higgsfield")
    first = await provider.submit({"prompt": "a"}, idempotency_key="a")
    second = await provider.submit({"prompt": "b"}, idempotency_key="b")
    fake_clock.advance(5)  # the first runs; the second waits for its slot
    assert [(await provider.status(g)).state for g in (first, second)] == ["running", "queued"]
    assert await can_cancel(provider).cancel(first) is False
    assert await can_cancel(provider).cancel(second) is True
    assert mock.state.stats()["canceled"] == 1


# --- the account queue's 429 ----------------------------------------------------------------------


async def test_account_queue_full_is_throttling_with_retry_after(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """429 account_queue_full → ThrottledError with the Retry-After; nothing was created, and
    the same key is accepted once the queue has room, then replays."""
    options = replace(SLOW, concurrency_limit=1, queue_limit=1, retry_after=7)
    mock = inprocess_factory(options, clock=fake_clock)
    provider = mock.provider("higgsfield")
    for key in ("a", "b"):
        await provider.submit({"prompt": key}, idempotency_key=key)
    with pytest.raises(ThrottledError) as info:
        await provider.submit({"prompt": "c"}, idempotency_key="c")
    assert (info.value.status_code, info.value.retry_after) == (429, 7.0)
    assert "queue is full" in info.value.message
    assert len(mock.state.generations) == 2
    fake_clock.advance(10)  # the first finished: room for one more
    third = await provider.submit({"prompt": "c"}, idempotency_key="c")
    assert await provider.submit({"prompt": "c"}, idempotency_key="c") == third
    stats = mock.state.stats()
    assert (stats["queue_full_rejections"], stats["generations_created"]) == (1, 3)
    assert stats["idempotent_replays"] == 1


# --- estimate -----------------------------------------------------------------------------------


async def test_estimate_sends_the_submit_body_and_reads_credits(
    inprocess_mock: InProcessMock,
) -> None:
    """POST /estimate/{model} with the body submit would send; credits come back as a float."""
    provider = inprocess_mock.provider("higgsfield")
    price = can_estimate(provider)
    assert await price.estimate({"type": "text-to-video", "prompt": "p"}) == 1.5
    request = {
        "type": "image-to-video",
        "model": "kling-video/v2.1/pro/image-to-video",
        "image_url": IMAGE,
        "duration": 10,
        "params": {"resolution": "1080p"},
    }
    assert await price.estimate(request) == 6.0
    last = inprocess_mock.state.log_entries()[-1]
    assert last["path"] == "/estimate/kling-video/v2.1/pro/image-to-video"
    assert inprocess_mock.state.generations == {}
    assert inprocess_mock.state.stats()["estimates"] == 2
    with pytest.raises(PermanentError, match="422"):
        await price.estimate({"prompt": "p", "duration": "long"})
    with pytest.raises(PermanentError, match="invalid model id"):
        await price.estimate({"prompt": "p", "model": "estimate/x"})


@pytest.mark.parametrize(
    ("credits", "expected"), [("1.500", 1.5), (2, 2.0), (0.25, 0.25), ("0", 0.0)]
)
async def test_estimate_credit_forms(credits: Any, expected: float) -> None:
    """Credits as a decimal string or a number."""
    provider = on_transport(lambda _r: httpx.Response(200, json={"credits": credits, "usd": "1"}))
    assert await can_estimate(provider).estimate({"prompt": "p"}) == expected


@pytest.mark.parametrize("credits", [None, "free", "-1", True, "nan", [1]])
async def test_estimate_malformed_credits(credits: Any) -> None:
    """Anything else is a malformed answer, never a price."""
    provider = on_transport(lambda _r: httpx.Response(200, json={"credits": credits}))
    with pytest.raises(PermanentError, match="malformed"):
        await can_estimate(provider).estimate({"prompt": "p"})


# --- finding a soul by name -----------------------------------------------------------------------


async def test_find_reference_by_name_across_pages(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """The id of the soul with that name, however many pages the list takes; None when the
    account has none by that name (another account's does not count)."""
    options = MockOptions(platform_api_keys=("test-id:test-secret", "other:key"), seed=1)
    mock = inprocess_factory(options, clock=fake_clock)
    provider = mock.provider("higgsfield")
    made = {}
    for i in range(130):
        name = f"soul-{i}"
        made[name] = await provider.train_soul(name, [IMAGE])
    await mock.provider("higgsfield", HF_KEY="other:key").train_soul("stranger", [IMAGE])
    lister = can_list(provider)
    assert await lister.find_reference("soul-3") == made["soul-3"]
    listings = mock.state.stats()["reference_listings"]
    assert await lister.find_reference("soul-129") == made["soul-129"]
    assert mock.state.stats()["reference_listings"] == listings + 2
    assert await lister.find_reference("stranger") is None
    assert await lister.find_reference("nobody") is None


async def test_find_reference_prefers_ready_then_training() -> None:
    """Several souls by one name: a ready one, else one training, else a failed one."""
    pages: dict[str, list[dict[str, Any]]] = {
        "mixed": [
            {"id": "f", "name": "ava", "status": "failed"},
            {"id": "t", "name": "ava", "status": "in_progress"},
            {"id": "r", "name": "ava", "status": "completed"},
            {"id": "x", "name": "bo", "status": "completed"},
        ],
        "no-ready": [
            {"id": "f", "name": "ava", "status": "failed"},
            {"id": "q", "name": "ava", "status": "queued"},
        ],
        "failed": [{"id": "f", "name": "ava", "status": "failed"}],
    }

    def serving(items: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
        return lambda _request: httpx.Response(200, json={"data": items, "total": len(items)})

    for case, expected in (("mixed", "r"), ("no-ready", "q"), ("failed", "f")):
        provider = on_transport(serving(pages[case]))
        assert await can_list(provider).find_reference("ava") == expected, case


async def test_find_reference_malformed_list() -> None:
    """A list answer without a list of references is malformed."""
    provider = on_transport(lambda _r: httpx.Response(200, json={"items": "none"}))
    with pytest.raises(PermanentError, match="malformed"):
        await can_list(provider).find_reference("ava")


async def test_find_reference_stops_on_a_server_that_ignores_pages() -> None:
    """A server that answers every page with the same full page is not asked forever."""
    full = [{"id": str(i), "name": f"n{i}", "status": "completed"} for i in range(100)]
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": full})

    assert await can_list(on_transport(answer)).find_reference("ava") is None
    assert 1 < len(seen) <= 100
    assert seen[0].url.params["page"] == "1" and seen[0].url.params["page_size"] == "100"


# --- expires_at -----------------------------------------------------------------------------------


async def test_expires_at_is_parsed_then_expiry_fails_the_result(
    inprocess_factory: InProcessFactory, fake_clock: FakeClock
) -> None:
    """A completed status carries expires_at (aware, as the mock wrote it); once the mock says
    the result expired the status is failed with an error starting "expired"."""
    mock = inprocess_factory(replace(SLOW, result_ttl=100), clock=fake_clock)
    provider = mock.provider("higgsfield")
    gen = await provider.submit({"prompt": "p"}, idempotency_key="k")
    assert (await provider.status(gen)).expires_at is None
    fake_clock.advance(10)
    done = await provider.status(gen)
    assert done.state == "completed" and done.video_url
    expected = datetime.fromtimestamp(mock.state.wall_offset + fake_clock.now + 100, UTC)
    assert done.expires_at is not None and done.expires_at.tzinfo is not None
    assert abs((done.expires_at - expected).total_seconds()) < 1
    fake_clock.advance(100)
    gone = await provider.status(gen)
    assert gone.state == "failed" and gone.video_url is None
    assert gone.error is not None and gone.error.startswith("expired")
    assert gone.expires_at == done.expires_at


async def test_seed_status_has_no_expiry(inprocess_mock: InProcessMock) -> None:
    """The seed API says nothing of retention: expires_at stays None."""
    provider = inprocess_mock.provider("higgsfieldapi")
    gen = await provider.submit({"prompt": "p"}, idempotency_key="k")
    assert (await provider.status(gen)).expires_at is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-01-31T12:00:00.250+00:00", datetime(2025, 1, 31, 12, 0, 0, 250_000, tzinfo=UTC)),
        (
            "2025-01-31T14:00:00+02:00",
            datetime(2025, 1, 31, 14, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2025-01-31T12:00:00", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        (1738324800, datetime(2025, 1, 31, 12, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("next week", None),
        (True, None),
        (float("inf"), None),
        (1e20, None),
        ({"at": 1}, None),
    ],
)
def test_parse_time(value: Any, expected: datetime | None) -> None:
    """ISO 8601 (Z, offsets, naive as UTC) or epoch seconds; anything else is no expiry."""
    assert parse_time(value) == expected


async def test_unreadable_expires_at_never_fails_a_completed_generation() -> None:
    """A completed status with an expires_at that cannot be read is still completed."""
    doc = {"status": "completed", "video": {"url": "https://cdn.example.com/v.mp4"}}
    provider = on_transport(lambda _r: httpx.Response(200, json={**doc, "expires_at": "soon"}))
    status = await provider.status("r-1")
    assert (status.state, status.expires_at) == ("completed", None)


# --- uploads ------------------------------------------------------------------------------------


async def test_upload_sends_every_upload_header(inprocess_mock: InProcessMock) -> None:
    """The mock refuses a PUT without x-amz-tagging; the provider sends it, and no key."""
    provider = inprocess_mock.provider("higgsfield")
    host = uploader(provider)
    assert host is not None
    url = await host.upload(b"jpeg bytes", "image/jpeg")
    assert (await inprocess_mock.client.get(url)).content == b"jpeg bytes"
    stats = inprocess_mock.state.stats()
    assert (stats["uploads"], stats["upload_refusals"]) == (1, 0)
    put = next(e for e in inprocess_mock.state.log_entries() if e["method"] == "PUT")
    assert put["auth"] is False and put["status"] == 200


async def test_upload_headers_go_out_as_given() -> None:
    """Every upload_headers header, with its value, on the PUT (MockTransport records them)."""
    seen: list[httpx.Request] = []
    headers = {"Content-Type": "image/png", "x-amz-tagging": "retention=temporary", "x-a": "b"}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(
                200,
                json={
                    "upload_url": "https://bucket.example.com/u?sig=1",
                    "public_url": "https://cdn.example.com/u.png",
                    "upload_headers": headers,
                },
            )
        return httpx.Response(200)

    host = uploader(on_transport(answer))
    assert host is not None
    assert await host.upload(b"png", "image/png") == "https://cdn.example.com/u.png"
    put = seen[-1]
    assert put.method == "PUT" and "authorization" not in put.headers
    assert {k: put.headers[k] for k in headers} == headers


# --- soul training with an idempotency key --------------------------------------------------------


@pytest.mark.parametrize("name", DIALECTS)
async def test_train_soul_sends_the_idempotency_key(
    name: str, inprocess_factory: InProcessFactory
) -> None:
    """A lost training answer is UnknownOutcomeError; re-sending with the same key gets the
    same model back and the mock trained once. Without a key no header is sent."""
    mock = inprocess_factory(MockOptions(drop_soul_answer_rate=1.0, seed=1))
    provider = mock.provider(name)
    with pytest.raises(UnknownOutcomeError):
        await provider.train_soul("ava", [IMAGE], idempotency_key="ledger-soul-ava-1")
    (trained,) = mock.state.souls
    again = await provider.train_soul("ava", [IMAGE], idempotency_key="ledger-soul-ava-1")
    assert again == trained
    with pytest.raises(PermanentError, match="422"):
        await provider.train_soul("bo", [IMAGE], idempotency_key="ledger-soul-ava-1")
    stats = mock.state.stats()
    assert (stats["souls_created"], stats["soul_replays"], stats["dropped_soul_answers"]) == (
        1,
        1,
        1,
    )
    keys = [e["idempotency_key"] for e in mock.state.log_entries()]
    assert keys == ["ledger-soul-ava-1"] * 3
    plain = inprocess_factory(MockOptions(seed=1))
    await plain.provider(name).train_soul("ava", [IMAGE])
    assert plain.state.log_entries()[-1]["idempotency_key"] is None


async def test_train_soul_then_find_it_by_name(
    inprocess_mock: InProcessMock, fake_clock: FakeClock
) -> None:
    """What a resumed run does when the training answer was lost: the list finds the soul
    the POST created, ready once trained."""
    provider = inprocess_mock.provider("higgsfield")
    model = await provider.train_soul("ava", [IMAGE], idempotency_key="s-1")
    assert await can_list(provider).find_reference("ava") == model
    fake_clock.advance(inprocess_mock.state.options.soul_training_seconds)
    assert (await provider.soul_status(model)).state == "ready"
    assert await can_list(provider).find_reference("ava") == model
