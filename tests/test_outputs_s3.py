"""The S3 output store against a real S3 endpoint (moto's server on loopback).

Video bodies come from ``httpx.MockTransport`` handlers; the objects, and the multipart
uploads left pending, are read back with boto3 (``tests/s3server.py``).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest

pytest.importorskip("obstore")

from runner.app import RunOptions
from runner.errors import DownloadError, TransientError, UnsafeURLError, UsageError
from runner.outputs import exists, open_store, presign
from runner.outputs.fetch import DownloadPolicy
from runner.outputs.s3 import PART_SIZE, S3Settings, S3Store
from tests.s3server import S3Server

LOCAL = DownloadPolicy(allow_private=True)
URL = "http://127.0.0.1/video.mp4"
# Over two parts, so every save below goes through a real multipart upload.
BIG = random.Random(12).randbytes(2 * PART_SIZE + 12_345)
SMALL = random.Random(13).randbytes(10_000)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def serving(body: bytes, *, length: int | None = None) -> httpx.AsyncClient:
    """A client whose every GET answers ``body`` with Content-Length ``length`` (its size)."""

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Length": str(len(body) if length is None else length)}
        return httpx.Response(200, headers=headers, content=stream())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def breaking(body: bytes, after: int) -> httpx.AsyncClient:
    """A client whose body fails with a read error after ``after`` bytes (a dropped link)."""

    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        while sent < after:
            chunk = body[sent : min(after, sent + (1 << 20))]
            sent += len(chunk)
            yield chunk
        raise httpx.ReadError("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(len(body))}, content=stream())

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def store_in(s3: S3Server, bucket: str, prefix: str = "videos") -> S3Store:
    store = open_store(f"s3://{bucket}/{prefix}", environ=s3.environ)
    assert isinstance(store, S3Store)
    return store


async def test_save_uploads_verified_object_under_its_key(
    s3_server: S3Server, s3_bucket: str
) -> None:
    """A multi-part video lands at prefix/relative, byte for byte, with its size and sha256,
    and no multipart upload is left behind."""
    store = store_in(s3_server, s3_bucket, "runs/nightly/")
    async with serving(BIG) as client:
        saved = await store.save(client, URL, "walk/a.mp4", policy=LOCAL, resume_token="gen-1")
    assert saved.location == f"s3://{s3_bucket}/runs/nightly/walk/a.mp4"
    assert saved.bytes == len(BIG)
    assert saved.sha256 == hashlib.sha256(BIG).hexdigest()
    assert s3_server.keys(s3_bucket) == ["runs/nightly/walk/a.mp4"]
    assert s3_server.body(s3_bucket, "runs/nightly/walk/a.mp4") == BIG
    assert s3_server.uploads(s3_bucket) == []


@pytest.mark.parametrize(
    "make_client",
    [
        pytest.param(lambda: serving(BIG, length=len(BIG) + 1), id="short-body"),
        pytest.param(lambda: breaking(BIG, after=PART_SIZE + 1000), id="dropped-mid-stream"),
    ],
)
async def test_failed_body_leaves_no_object_and_no_upload(
    s3_server: S3Server, s3_bucket: str, make_client: Callable[[], httpx.AsyncClient]
) -> None:
    """A body shorter than its Content-Length, or one cut off after a part went up, is a
    transient error: nothing under the final key, and the multipart upload is aborted."""
    store = store_in(s3_server, s3_bucket)
    async with make_client() as client:
        with pytest.raises(TransientError):
            await store.save(client, URL, "a.mp4", policy=LOCAL)
    assert s3_server.keys(s3_bucket) == []
    assert s3_server.uploads(s3_bucket) == []


async def test_cancelled_save_aborts_the_upload(s3_server: S3Server, s3_bucket: str) -> None:
    """Cancelling a save (a second Ctrl-C) while its parts are uploading aborts the multipart
    upload: no object, nothing pending, even with the body stalled."""
    never = anyio.Event()

    async def stream() -> AsyncIterator[bytes]:
        yield BIG[: 2 * PART_SIZE]
        await never.wait()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(len(BIG))}, content=stream())

    store = store_in(s3_server, s3_bucket)
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with client, anyio.create_task_group() as tg:
        tg.start_soon(lambda: store.save(client, URL, "a.mp4", policy=LOCAL))
        deadline = time.monotonic() + 60
        while not any(s3_server.parts(s3_bucket, u) for u in s3_server.uploads(s3_bucket)):
            assert time.monotonic() < deadline, "no part was uploaded"
            await anyio.sleep(0.01)  # waiting for a condition, not for time
        tg.cancel_scope.cancel()
    assert s3_server.keys(s3_bucket) == []
    assert s3_server.uploads(s3_bucket) == []


async def test_refused_download_uploads_nothing(s3_server: S3Server, s3_bucket: str) -> None:
    """A 500, an encoded body and a refused address are told apart as for files, and none
    of them starts an upload. (A body without Content-Length is accepted now: issue 10.)"""
    store = store_in(s3_server, s3_bucket)

    async def no_length() -> AsyncIterator[bytes]:
        yield SMALL

    answers = {
        "http://127.0.0.1/500": lambda: httpx.Response(500),
        "http://127.0.0.1/unsized": lambda: httpx.Response(
            200, content=no_length(), headers={"Content-Encoding": "gzip"}
        ),
    }
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: answers[str(r.url)]()))
    async with client:
        with pytest.raises(TransientError):
            await store.save(client, "http://127.0.0.1/500", "a.mp4", policy=LOCAL)
        with pytest.raises(DownloadError):
            await store.save(client, "http://127.0.0.1/unsized", "a.mp4", policy=LOCAL)
        with pytest.raises(UnsafeURLError):
            await store.save(client, "http://169.254.169.254/x", "a.mp4", policy=LOCAL)
    assert s3_server.keys(s3_bucket) == [] and s3_server.uploads(s3_bucket) == []


def test_locations_stay_under_the_prefix(s3_server: S3Server) -> None:
    """A location is s3://bucket/prefix/name, normalized; a name escaping the prefix is
    refused; a URI without a bucket is a usage error."""
    store = open_store("s3://bucket/a/b", environ=s3_server.environ)
    assert store.root == "s3://bucket/a/b"
    assert store.location("c/./d.mp4") == "s3://bucket/a/b/c/d.mp4"
    assert open_store("s3://bucket", environ=s3_server.environ).location("x.mp4") == (
        "s3://bucket/x.mp4"
    )
    for relative in ("../x.mp4", "c/../../x.mp4", "/abs.mp4", "."):
        with pytest.raises(UnsafeURLError):
            store.location(relative)
    with pytest.raises(UsageError):
        open_store("s3:///prefix", environ=s3_server.environ)


async def test_problem_and_exists_look_at_the_object(s3_server: S3Server, s3_bucket: str) -> None:
    """`problem` and `exists` HEAD the object: there, missing, or another size."""
    store = store_in(s3_server, s3_bucket)
    async with serving(SMALL) as client:
        saved = await store.save(client, URL, "a.mp4", policy=LOCAL)
    env = s3_server.environ
    assert store.problem(saved.location, len(SMALL)) is None
    assert store.problem(saved.location, len(SMALL) + 1) == f"{len(SMALL)} bytes, expected 10001"
    assert store.problem(store.location("gone.mp4"), 5) == "missing"
    assert exists(saved.location, len(SMALL), environ=env)
    assert exists(saved.location, environ=env)
    assert not exists(saved.location, 1, environ=env)
    assert not exists(store.location("gone.mp4"), environ=env)


async def test_relocate_copies_then_deletes(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """An object moves to its new key (also from another bucket, and a local file from before
    output.dir moved to S3 is uploaded); never over an existing object; nothing to move is
    ``None``."""
    store = store_in(s3_server, s3_bucket)
    async with serving(SMALL) as client:
        old = (await store.save(client, URL, "a.mp4", policy=LOCAL)).location
    assert store.placed(old, "a.mp4") and not store.placed(old, "b/a.mp4")
    assert not store.placed(old, "../a.mp4")  # escapes: relocate says why
    new = store.relocate(old, "b/a.mp4")
    assert new == store.location("b/a.mp4") and store.placed(new, "b/a.mp4")
    assert s3_server.keys(s3_bucket) == ["videos/b/a.mp4"]
    assert store.relocate(old, "c/a.mp4") is None  # nothing there any more
    assert store.problem(old, len(SMALL)) == "missing"

    other_bucket = s3_server.new_bucket()
    other = store_in(s3_server, other_bucket, "elsewhere")
    async with serving(BIG) as client:
        taken = await other.save(client, URL, "b/a.mp4", policy=LOCAL)
    assert other.relocate(new, "b/a.mp4") is None  # never over an existing object
    assert other.relocate(taken.location, "b/a.mp4") is None  # already where it belongs
    moved = other.relocate(new, "c/a.mp4")
    assert moved == f"s3://{other_bucket}/elsewhere/c/a.mp4"
    assert s3_server.body(other_bucket, "elsewhere/c/a.mp4") == SMALL
    assert s3_server.keys(s3_bucket) == []

    local = tmp_path / "v.mp4"
    local.write_bytes(BIG)
    uploaded = store.relocate(str(local), "from-disk/v.mp4")
    assert uploaded == store.location("from-disk/v.mp4")
    assert s3_server.body(s3_bucket, "videos/from-disk/v.mp4") == BIG
    assert not local.exists()
    assert store.relocate(str(tmp_path / "none.mp4"), "x.mp4") is None
    assert s3_server.uploads(s3_bucket) == [] and s3_server.uploads(other_bucket) == []


async def test_presigned_url_serves_the_video(s3_server: S3Server, s3_bucket: str) -> None:
    """A presigned URL fetches the object without credentials and says when it expires."""
    store = store_in(s3_server, s3_bucket)
    async with serving(SMALL) as client:
        saved = await store.save(client, URL, "a.mp4", policy=LOCAL)
    url = presign(saved.location, timedelta(hours=2), environ=s3_server.environ)
    assert "X-Amz-Expires=7200" in url and "X-Amz-Signature=" in url
    async with httpx.AsyncClient() as plain:
        answer = await plain.get(url)
    assert answer.status_code == 200 and answer.content == SMALL


def test_endpoint_settings_from_the_environment() -> None:
    """Plain http only to a loopback endpoint, or when AWS_ALLOW_HTTP says so."""
    keys = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"}
    loopback = S3Settings.from_environ({**keys, "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert loopback.allow_http and loopback.region == "eu-west-1"
    assert S3Settings.from_environ({"AWS_ENDPOINT_URL": "http://localhost:9000"}).allow_http
    assert not S3Settings.from_environ({"AWS_ENDPOINT_URL": "https://minio.example"}).allow_http
    with pytest.raises(UsageError, match="plain-http"):
        S3Settings.from_environ({"AWS_ENDPOINT_URL": "http://minio.example:9000"})
    opted = {"AWS_ENDPOINT_URL": "http://minio.example:9000", "AWS_ALLOW_HTTP": "true"}
    assert S3Settings.from_environ(opted).allow_http
    with pytest.raises(UsageError):
        S3Settings.from_environ({"AWS_ENDPOINT_URL": "minio:9000"})
    assert S3Settings.from_environ({}) == S3Settings()


def test_missing_extra_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without obstore, an s3:// output says which extra to install."""
    monkeypatch.setitem(sys.modules, "obstore", None)
    monkeypatch.delitem(sys.modules, "runner.outputs.s3")
    with pytest.raises(UsageError, match=r"runner\[s3\]"):
        open_store("s3://bucket/prefix")
    with pytest.raises(UsageError, match=r"runner\[s3\]"):
        exists("s3://bucket/prefix/a.mp4")


CRASHING_UPLOAD = """
import anyio, httpx, sys
from runner.outputs.fetch import DownloadPolicy
from runner.outputs.s3 import PART_SIZE, S3Store

async def body():
    yield b"v" * (2 * PART_SIZE)  # two parts go up...
    await anyio.sleep_forever()   # ...then the body stalls until the process is killed

def handler(request):
    return httpx.Response(200, headers={"Content-Length": str(8 * PART_SIZE)}, content=body())

async def main():
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    store = S3Store(sys.argv[1])
    await store.save(client, "http://127.0.0.1/v.mp4", "v.mp4",
                     policy=DownloadPolicy(allow_private=True))

anyio.run(main)
"""


def test_sigkill_mid_upload_leaves_no_object(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A process killed with SIGKILL while parts are uploading leaves nothing under the final
    key: the multipart upload was never completed (S3 keeps it out of sight)."""
    script = tmp_path / "upload.py"
    script.write_text(textwrap.dedent(CRASHING_UPLOAD))
    child = subprocess.Popen(
        [sys.executable, str(script), f"s3://{s3_bucket}/crash"],
        env={**os.environ, **s3_server.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(s3_server.parts(s3_bucket, u) for u in s3_server.uploads(s3_bucket)):
            assert child.poll() is None, child.communicate()[1].decode()
            assert time.monotonic() < deadline, "no part was uploaded"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert s3_server.keys(s3_bucket) == []
    (upload,) = s3_server.uploads(s3_bucket)  # the invisible leftover a lifecycle rule ends
    assert upload["Key"] == "crash/v.mp4"
    s3_server.client.abort_multipart_upload(
        Bucket=s3_bucket, Key=upload["Key"], UploadId=upload["UploadId"]
    )


def test_run_with_s3_output_dir(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    """`runner run` with output.dir s3://bucket/prefix: every job's object holds exactly the
    mock's bytes at the ledger's location; a second run rechecks with HEAD and downloads
    nothing; changing the prefix moves the objects instead of downloading them again."""
    from runner.mock import MockOptions
    from tests.test_executor import FAST_LIMITS, JOBS, MANIFEST, Harness

    h = Harness(tmp_path, MockOptions(latency_min=0.0, latency_max=0.0, seed=4))
    base = MANIFEST.format(limits=FAST_LIMITS)
    h.write(base + f"output:\n  dir: s3://{s3_bucket}/runs/nightly\n")
    result = h.run(RunOptions(), **s3_server.environ)
    assert result.counts == {"downloaded": JOBS}
    assert result.output_dir == f"s3://{s3_bucket}/runs/nightly"
    assert not (h.state_dir / "videos").exists()

    def check(prefix: str) -> None:
        rows = h.rows()
        assert s3_server.keys(s3_bucket) == sorted(f"{prefix}/{r.path}" for r in rows)
        for row in rows:
            assert row.location == f"s3://{s3_bucket}/{prefix}/{row.path}"
            data = s3_server.body(s3_bucket, f"{prefix}/{row.path}")
            assert hashlib.sha256(data).hexdigest() == row.sha256
            assert row.sha256 == h.mock.video_sha256(row.generation_id or "")
            assert len(data) == row.bytes
        assert s3_server.uploads(s3_bucket) == []

    check("runs/nightly")
    downloads = h.mock.stats()["video_downloads"]
    assert h.run(RunOptions(), **s3_server.environ).outcome.submitted == 0
    h.write(base + f"output:\n  dir: s3://{s3_bucket}/runs/moved\n")
    assert h.run(RunOptions(), **s3_server.environ).counts == {"downloaded": JOBS}
    check("runs/moved")
    assert h.mock.stats()["video_downloads"] == downloads


def test_report_links_s3_videos_with_presigned_urls(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's players point at presigned URLs that serve each video's bytes."""
    import re
    from html import unescape

    from runner.mock import MockOptions
    from runner.report import build_report
    from tests.test_executor import FAST_LIMITS, JOBS, MANIFEST, Harness

    h = Harness(tmp_path, MockOptions(latency_min=0.0, latency_max=0.0, seed=5))
    h.write(MANIFEST.format(limits=FAST_LIMITS) + f"output:\n  dir: s3://{s3_bucket}/r\n")
    h.run(RunOptions(), **s3_server.environ)
    for name, value in s3_server.environ.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "report.html"
    summary = build_report(h.state_dir, out_file=out, presign_expiry=timedelta(hours=1))
    assert summary.videos == JOBS
    sources = [unescape(s) for s in re.findall(r'<video [^>]*src="([^"]+)"', out.read_text())]
    assert len(sources) == JOBS
    expected = {r.sha256 for r in h.rows()}
    with httpx.Client() as plain:
        for url in sources:
            assert url.startswith(f"{s3_server.endpoint}/{s3_bucket}/r/")
            assert "X-Amz-Expires=3600" in url
            answer = plain.get(url)
            assert answer.status_code == 200
            assert hashlib.sha256(answer.content).hexdigest() in expected


def test_validate_plan_and_dry_run_accept_an_s3_output_dir(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The URI passes through the manifest untouched: validate, plan and a dry run take it,
    and none of them sends a request to S3."""
    from runner import app
    from runner.manifest import load_manifest
    from runner.mock import MockOptions
    from tests.test_executor import FAST_LIMITS, JOBS, MANIFEST, Harness

    h = Harness(tmp_path, MockOptions(seed=6))
    h.write(MANIFEST.format(limits=FAST_LIMITS) + "output:\n  dir: s3://no-such-bucket/p\n")
    assert load_manifest(h.manifest).output_dir(h.state_dir) == "s3://no-such-bucket/p"
    (checked,) = app.validate([h.manifest])
    assert checked.error is None and checked.jobs == JOBS
    assert app.plan(h.manifest, h.state_dir).document is not None
    dry = h.run(app.RunOptions(dry_run=True), **s3_server.environ)
    assert dry.output_dir == "s3://no-such-bucket/p" and len(dry.would_submit) == JOBS


def test_switching_a_local_output_dir_to_s3_uploads_the_files(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Videos downloaded to local files move into the bucket when output.dir becomes an
    s3:// URI: uploaded, recorded with their new location, never downloaded again."""
    from runner.mock import MockOptions
    from tests.test_executor import FAST_LIMITS, JOBS, MANIFEST, Harness

    h = Harness(tmp_path, MockOptions(latency_min=0.0, latency_max=0.0, seed=7))
    base = MANIFEST.format(limits=FAST_LIMITS)
    assert h.run().counts == {"downloaded": JOBS}
    downloads = h.mock.stats()["video_downloads"]
    h.write(base + f"output:\n  dir: s3://{s3_bucket}/from-disk\n")
    assert h.run(RunOptions(), **s3_server.environ).counts == {"downloaded": JOBS}
    assert h.mock.stats()["video_downloads"] == downloads
    for row in h.rows():
        assert row.location == f"s3://{s3_bucket}/from-disk/{row.path}"
        data = s3_server.body(s3_bucket, f"from-disk/{row.path}")
        assert hashlib.sha256(data).hexdigest() == row.sha256
    assert not [p for p in (h.state_dir / "videos").rglob("*") if p.is_file()]
