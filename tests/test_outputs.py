"""The output store: verified downloads, URL safety, and local files (locations, checks, moves)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from runner.errors import ExpiredURLError, TransientError, UnsafeURLError
from runner.outputs.fetch import DownloadPolicy, check_url
from runner.outputs.local import download, safe_destination

BODY = bytes(range(256)) * 40  # 10,240 bytes
LOCAL = DownloadPolicy(allow_private=True)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client_for(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def serve_range(request: httpx.Request) -> httpx.Response:
    """A well-behaved video server: 200 for the whole file, 206 for a Range."""
    rng = request.headers.get("range")
    if rng:
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        part = BODY[start:]
        return httpx.Response(
            206,
            content=part,
            headers={"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"},
        )
    return httpx.Response(200, content=BODY)


async def test_download_writes_verified_file_and_no_part(tmp_path: Path) -> None:
    """A complete body lands under its final name with its size and sha256; no .part remains."""
    dest = tmp_path / "c" / "k.mp4"
    async with client_for(serve_range) as client:
        got = await download(client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL)
    assert dest.read_bytes() == BODY
    assert got.bytes == len(BODY)
    assert got.sha256 == hashlib.sha256(BODY).hexdigest()
    assert not (tmp_path / "c" / "k.mp4.part").exists()


async def test_partial_file_resumes_with_range(tmp_path: Path) -> None:
    """An existing .part is continued with a Range request, not downloaded again."""
    dest = tmp_path / "k.mp4"
    (tmp_path / "k.mp4.part").write_bytes(BODY[:1000])
    (tmp_path / "k.mp4.part.id").write_text("gen-1")
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        return serve_range(request)

    async with client_for(handler) as client:
        got = await download(
            client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL, resume_token="gen-1"
        )
    assert seen == ["bytes=1000-"]
    assert dest.read_bytes() == BODY
    assert got.sha256 == hashlib.sha256(BODY).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.mp4"]


@pytest.mark.parametrize("owner", ["gen-0", None])
async def test_partial_file_of_another_generation_is_discarded(
    tmp_path: Path, owner: str | None
) -> None:
    """A .part started for another generation (or for an unknown one) is never spliced in."""
    dest = tmp_path / "k.mp4"
    (tmp_path / "k.mp4.part").write_bytes(b"X" * 1000)
    if owner:
        (tmp_path / "k.mp4.part.id").write_text(owner)
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("range"))
        return serve_range(request)

    async with client_for(handler) as client:
        await download(client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL, resume_token="gen-1")
    assert seen == [None]
    assert dest.read_bytes() == BODY


async def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    """A 200 answer to a Range request replaces the partial file instead of appending."""
    dest = tmp_path / "k.mp4"
    (tmp_path / "k.mp4.part").write_bytes(b"garbage" * 10)
    async with client_for(lambda r: httpx.Response(200, content=BODY)) as client:
        await download(client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL)
    assert dest.read_bytes() == BODY


async def test_short_body_is_never_saved_under_final_name(tmp_path: Path) -> None:
    """A body shorter than its Content-Length is a transient error and leaves only the .part."""
    dest = tmp_path / "k.mp4"

    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=BODY[:500], headers={"Content-Length": str(len(BODY))})

    async with client_for(short) as client:
        with pytest.raises(TransientError):
            await download(client, "http://127.0.0.1/v.mp4", dest, policy=LOCAL)
    assert not dest.exists()


async def test_missing_content_length_is_accepted(tmp_path: Path) -> None:
    """A chunked body (no Content-Length) is complete when its stream ends cleanly; its size
    and sha256 are recorded all the same."""

    async def chunks():  # type: ignore[no-untyped-def]
        yield BODY[:1000]
        yield BODY[1000:]

    async with client_for(lambda r: httpx.Response(200, content=chunks())) as client:
        got = await download(client, "http://127.0.0.1/v.mp4", tmp_path / "k.mp4", policy=LOCAL)
    assert (tmp_path / "k.mp4").read_bytes() == BODY
    assert (got.bytes, got.sha256) == (len(BODY), hashlib.sha256(BODY).hexdigest())


@pytest.mark.parametrize("status", [403, 404, 410])
async def test_expired_url_statuses(tmp_path: Path, status: int) -> None:
    """403/404/410 mean the URL expired: the executor refreshes it once."""
    async with client_for(lambda r: httpx.Response(status)) as client:
        with pytest.raises(ExpiredURLError):
            await download(client, "http://127.0.0.1/v.mp4", tmp_path / "k.mp4", policy=LOCAL)


@pytest.mark.parametrize("status", [500, 503, 429, 408])
async def test_server_errors_are_transient(tmp_path: Path, status: int) -> None:
    """5xx, 429 and 408 on a download are worth retrying."""
    async with client_for(lambda r: httpx.Response(status)) as client:
        with pytest.raises(TransientError):
            await download(client, "http://127.0.0.1/v.mp4", tmp_path / "k.mp4", policy=LOCAL)


async def test_download_never_sends_authorization(tmp_path: Path) -> None:
    """The download client carries no provider key."""
    headers: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers)
        return serve_range(request)

    async with client_for(handler) as client:
        await download(client, "http://127.0.0.1/v.mp4", tmp_path / "k.mp4", policy=LOCAL)
    assert "authorization" not in headers[0]


async def test_redirect_to_link_local_is_refused(tmp_path: Path) -> None:
    """Redirects are checked by the same rules: cloud metadata is never fetched."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest"})

    async with client_for(handler) as client:
        with pytest.raises(UnsafeURLError):
            await download(client, "http://127.0.0.1/v.mp4", tmp_path / "k.mp4", policy=LOCAL)


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("file:///etc/passwd", LOCAL),
        ("ftp://127.0.0.1/v.mp4", LOCAL),
        ("http://169.254.169.254/latest/meta-data", LOCAL),
        ("http://[fe80::1]/v.mp4", LOCAL),
        ("http://127.0.0.1/v.mp4", DownloadPolicy(allow_private=False)),
        ("http://10.1.2.3/v.mp4", DownloadPolicy(allow_private=False)),
        ("http://192.168.0.5/v.mp4", DownloadPolicy(allow_private=False)),
        ("http://[::1]/v.mp4", DownloadPolicy(allow_private=False)),
    ],
)
async def test_unsafe_urls_are_refused(url: str, policy: DownloadPolicy) -> None:
    """Only http(s); never link-local; private and loopback only when the provider is there."""
    with pytest.raises(UnsafeURLError):
        await check_url(url, policy)


async def test_loopback_allowed_when_provider_is_local() -> None:
    """The mock server lives on loopback, so its videos may too."""
    policy = DownloadPolicy.for_base_url("http://127.0.0.1:8808/api/v1")
    assert policy.allow_private
    await check_url("http://127.0.0.1:8808/videos/x.mp4", policy)
    assert not DownloadPolicy.for_base_url("https://93.184.216.34/api").allow_private


@pytest.mark.parametrize("relative", ["../x.mp4", "a/../../x.mp4", "/etc/x.mp4", ""])
def test_destination_must_stay_inside_output_dir(tmp_path: Path, relative: str) -> None:
    """However the filename template came out, the file stays inside output.dir."""
    with pytest.raises(UnsafeURLError):
        safe_destination(tmp_path / "out", relative)


def test_destination_inside_output_dir(tmp_path: Path) -> None:
    """A normal relative path resolves inside output.dir."""
    assert safe_destination(tmp_path, "c/k.mp4") == (tmp_path / "c" / "k.mp4").resolve()


def test_local_store_locations_are_absolute_and_stay_inside(tmp_path: Path) -> None:
    """A location is the absolute path under output.dir; a name escaping it is refused."""
    from runner.outputs import open_store

    store = open_store(str(tmp_path / "videos"))
    assert store.location("a/b.mp4") == str((tmp_path / "videos" / "a" / "b.mp4").resolve())
    with pytest.raises(UnsafeURLError):
        store.location("../outside.mp4")


def test_local_store_checks_and_moves_recorded_videos(tmp_path: Path) -> None:
    """`problem` says missing or the wrong size; `relocate` moves a video to its new name
    (also into another folder), never over an existing file, and reports nothing to move."""
    from runner.outputs import exists, open_store

    store = open_store(str(tmp_path / "videos"))
    old = Path(store.location("a/v.mp4"))
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 10)
    assert store.problem(str(old), 10) is None and exists(str(old), 10)
    assert store.problem(str(old), 11) == "10 bytes, expected 11"
    assert store.placed(str(old), "a/v.mp4")  # by the names alone: relocate moves nothing
    assert store.relocate(str(old), "a/v.mp4") is None and old.exists()
    assert not store.placed(str(old), "b/v.mp4")
    assert not store.placed(str(old), str(old))  # an absolute name is never taken as placed
    new = store.relocate(str(old), "b/v.mp4")
    assert new == store.location("b/v.mp4") and Path(new).read_bytes() == b"x" * 10
    assert store.placed(new, "b/v.mp4")
    assert not old.exists() and store.problem(str(old), 10) == "missing"
    assert store.relocate(str(old), "c/v.mp4") is None  # nothing there to move
    other = open_store(str(tmp_path / "elsewhere"))
    Path(other.location("b/v.mp4")).parent.mkdir(parents=True)
    Path(other.location("b/v.mp4")).write_bytes(b"taken")
    assert other.relocate(new, "b/v.mp4") is None  # never over an existing file
    moved = other.relocate(new, "c/v.mp4")
    assert moved is not None and Path(moved).read_bytes() == b"x" * 10


async def test_a_trickling_body_is_cut_after_the_grace_period() -> None:
    """A body arriving under MIN_RATE for longer than RATE_GRACE (on the clock it is given:
    here 10 s pass per chunk) is cut with a transient error, after handing over what came."""
    from runner.outputs.fetch import RATE_GRACE, Body

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(1000):
            yield b"x"

    ticks = iter(range(0, 100_000, 10))
    response = httpx.Response(200, content=trickle())
    body = Body(start=0, total=1000, _response=response, clock=lambda: float(next(ticks)))
    got = b""
    with pytest.raises(TransientError, match="too slow"):
        async for chunk in body.chunks():
            got += chunk
    assert 0 < len(got) <= RATE_GRACE / 10 + 2
