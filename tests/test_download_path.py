"""The download path end to end over real loopback sockets (runner.outputs.local.download through
the pinned client): a body of many reads and several written blocks, hashed beside its write;
a body cut short kept only as ``.part``; https with the certificate checked; each block's
writeback started as it is written and the file fsynced before its rename; glibc's heap set
once per process for the megabyte buffers (runner.outputs.heap)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import platform
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from runner.errors import TransientError
from runner.outputs import Saved, local
from runner.outputs.fetch import DownloadPolicy
from runner.outputs.heap import keep_heap
from runner.outputs.local import BLOCK, download
from runner.outputs.pinned import PinnedTransport, pinned_client
from runner.outputs.pools import READ_SIZE
from tests.test_tls import self_signed

pytestmark = pytest.mark.anyio

LOCAL = DownloadPolicy(allow_private=True)
BIG = bytes(range(256)) * (4 * 1024 * 11 + 7)  # ~11 MiB: many reads, three blocks and a bit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


def answer_with(body: bytes, *, length: int | None = None) -> Handler:
    """A server sending ``body`` after a header claiming ``length`` bytes (default: all)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        size = len(body) if length is None else length
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(body)
        await writer.drain()
        writer.close()

    return handler


def test_reads_are_large() -> None:
    """A body arrives in reads of up to a megabyte, four of them in a written block."""
    assert READ_SIZE == 1024 * 1024 and BLOCK == 4 * READ_SIZE


async def download_big(tmp_path: Path) -> Saved:
    """``BIG`` fetched from a loopback server to ``tmp_path / "v.mp4"``: whole, hash right."""
    server, port = await serve(answer_with(BIG))
    async with server, pinned_client(LOCAL) as client:
        saved = await download(
            client, f"http://127.0.0.1:{port}/v.mp4", tmp_path / "v.mp4", policy=LOCAL
        )
    assert (tmp_path / "v.mp4").read_bytes() == BIG
    assert saved.sha256 == hashlib.sha256(BIG).hexdigest()
    return saved


async def test_large_body_through_pinned_client(tmp_path: Path) -> None:
    """A body of many reads and several blocks, over a plain socket: every byte, the sha256."""
    saved = await download_big(tmp_path)
    assert saved.bytes == len(BIG)


async def test_cut_body_through_pinned_client_is_not_saved(tmp_path: Path) -> None:
    """The server closes after half of what it promised: TransientError, no final file, and
    the half kept in ``.part`` for a Range resume."""
    half = BIG[: len(BIG) // 2]
    server, port = await serve(answer_with(half, length=len(BIG)))
    async with server, pinned_client(LOCAL) as client:
        with pytest.raises(TransientError):
            await download(
                client,
                f"http://127.0.0.1:{port}/v.mp4",
                tmp_path / "v.mp4",
                policy=LOCAL,
                resume_token="g",
            )
    assert not (tmp_path / "v.mp4").exists()
    assert (tmp_path / "v.mp4.part").read_bytes() == half


def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for ``localhost`` and a client context that trusts its certificate."""
    cert_file, key_file = self_signed(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


async def test_tls_body_through_pinned_transport(tmp_path: Path) -> None:
    """https: the certificate checked, the body whole."""
    server_tls, client_tls = tls_contexts(tmp_path)
    server, port = await serve(answer_with(BIG), tls=server_tls)
    transport = PinnedTransport(LOCAL, ssl_context=client_tls)
    async with server, httpx.AsyncClient(transport=transport) as client:
        saved = await download(
            client, f"https://localhost:{port}/v.mp4", tmp_path / "v.mp4", policy=LOCAL
        )
    assert saved.sha256 == hashlib.sha256(BIG).hexdigest()
    assert (tmp_path / "v.mp4").read_bytes() == BIG


async def test_tls_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    """A certificate the client does not trust: a transient connect failure, no file."""
    server_tls, _ = tls_contexts(tmp_path)
    server, port = await serve(answer_with(BIG), tls=server_tls)
    async with server, pinned_client(LOCAL) as client:
        with pytest.raises(TransientError):
            await download(
                client, f"https://localhost:{port}/v.mp4", tmp_path / "v.mp4", policy=LOCAL
            )
    assert not (tmp_path / "v.mp4").exists()


def test_keep_heap_once_per_process() -> None:
    """glibc's thresholds are set once; a second call changes nothing."""
    first = keep_heap()
    assert keep_heap() is first
    assert first == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


async def test_each_block_is_written_back_as_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every block's writeback is started once it is written, in order and covering every
    byte; each write first waits on what lies ``WRITEBACK_LAG`` blocks back; the file is
    whole."""
    calls: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, nbytes: int, flags: int) -> int:
        assert os.fstat(fd).st_size >= offset + nbytes  # only bytes already written
        calls.append((offset, nbytes, flags))
        return 0

    monkeypatch.setattr(local, "_sync_file_range", lambda: record)
    monkeypatch.setattr(local, "WRITEBACK_LAG", 1)
    await download_big(tmp_path)
    started = [(offset, nbytes) for offset, nbytes, flags in calls if flags == local._WRITE]
    assert started[0][0] == 0 and len(started) >= 3  # three blocks and a bit
    for (offset, nbytes), (following, _) in itertools.pairwise(started):
        assert offset + nbytes == following
    assert started[-1][0] + started[-1][1] == len(BIG)
    waited = [(offset, nbytes) for offset, nbytes, flags in calls if flags != local._WRITE]
    assert waited and all(
        offset == 0 and 0 < nbytes <= len(BIG) - BLOCK for offset, nbytes in waited
    )
    both = local._WAIT_BEFORE | local._WRITE | local._WAIT_AFTER
    assert all(flags in (local._WRITE, both) for _, _, flags in calls)


async def test_without_sync_file_range_the_download_is_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the C library has no sync_file_range, blocks are written as before."""
    monkeypatch.setattr(local, "_sync_file_range", lambda: None)
    await download_big(tmp_path)


def test_sync_file_range_is_found_on_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Linux the real call is found, and starting a written range's writeback and waiting
    on what lies behind it both succeed; the bytes stay as written."""
    real = local._sync_file_range()
    if platform.system() != "Linux":
        assert real is None
        return
    assert real is not None
    answers: list[tuple[int, int]] = []

    def record(fd: int, offset: int, nbytes: int, flags: int) -> int:
        answers.append((flags, real(fd, offset, nbytes, flags)))
        return answers[-1][1]

    monkeypatch.setattr(local, "_sync_file_range", lambda: record)
    monkeypatch.setattr(local, "WRITEBACK_LAG", 1)
    path = tmp_path / "f"
    path.write_bytes(BIG)
    fd = os.open(path, os.O_RDWR)
    try:
        local.writeback(fd, 2 * BLOCK, len(BIG))  # waits on the first block, starts the tail
    finally:
        os.close(fd)
    both = local._WAIT_BEFORE | local._WRITE | local._WAIT_AFTER
    assert answers == [(both, 0), (local._WRITE, 0)]
    assert path.read_bytes() == BIG


async def test_the_file_is_fsynced_before_its_rename_and_the_rename_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable before it is final: the whole ``.part`` fsynced, then renamed, then its folder
    fsynced."""
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?"
        steps.append(f"fsync {Path(target).name} {os.fstat(fd).st_size}")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        steps.append(f"replace {Path(src).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    server, port = await serve(answer_with(BIG))
    async with server, pinned_client(LOCAL) as client:
        await download(client, f"http://127.0.0.1:{port}/v.mp4", tmp_path / "v.mp4", policy=LOCAL)
    if os.path.exists("/proc/self/fd"):
        assert steps == [
            f"fsync v.mp4.part {len(BIG)}",
            "replace v.mp4.part",
            f"fsync {tmp_path.name} {os.stat(tmp_path).st_size}",
        ]
    assert (tmp_path / "v.mp4").read_bytes() == BIG
