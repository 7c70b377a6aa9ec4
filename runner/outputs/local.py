"""Videos as local files: ``.part`` files, resume, fsync and rename, checks and moves.

A file is never left under its final name unless every byte the server promised arrived.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
import httpx

from runner.errors import UnsafeURLError
from runner.outputs import Saved, present
from runner.outputs.fetch import CHUNK_SIZE, DownloadPolicy, fetch

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

BLOCK = 4 * 1024 * 1024  # bytes of a body written (and hashed) in one hand-off to a thread
WRITEBACK_LAG = 16  # blocks (64 MiB) a write lets the disk fall behind before it waits
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # linux/fs.h: SYNC_FILE_RANGE_*


def safe_destination(output_dir: Path, relative: str) -> Path:
    """``output_dir / relative``, proven to stay inside ``output_dir``."""
    root = output_dir.resolve()
    target = (root / relative).resolve()
    if target == root or root not in target.parents:
        raise UnsafeURLError(f"output path {relative!r} escapes {root}")
    return target


class LocalStore:
    """Videos under one local folder (``output.dir``)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.dir = Path(output_dir)
        self._root: str | None = None
        self._joined: str | None = None

    def _resolved(self) -> str:
        """The folder with its links resolved, worked out once."""
        if self._root is None:
            self._root = str(self.dir.resolve())
        return self._root

    def _prefix(self) -> str:
        """The resolved folder and a separator: ``prefix + relative`` is ``os.path.join``'s
        for a relative path, put together without its checks (once per downloaded job)."""
        if self._joined is None:
            self._joined = os.path.join(self._resolved(), "")
        return self._joined

    @property
    def root(self) -> str:
        return str(self.dir)

    def location(self, relative: str) -> str:
        return str(safe_destination(self.dir, relative))

    async def save(
        self,
        client: httpx.AsyncClient,
        url: str,
        relative: str,
        *,
        policy: DownloadPolicy,
        resume_token: str | None = None,
    ) -> Saved:
        dest = safe_destination(self.dir, relative)
        return await download(client, url, dest, policy=policy, resume_token=resume_token)

    def problem(self, location: str, size: int | None) -> str | None:
        try:
            info = os.stat(location)
        except (OSError, ValueError):
            info = None
        found = info.st_size if info is not None and stat.S_ISREG(info.st_mode) else None
        if found == size:
            return None
        return "missing" if found is None else f"{found} bytes, expected {size}"

    present = staticmethod(present)  # whether a file is at a location (with a size, if given)

    def placed(self, old: str, relative: str) -> bool:
        # (``relative`` absolute: ``join`` gives it alone. POSIX, as the ledger's flock.)
        return old == self._prefix() + relative and not relative.startswith("/")

    def relocate(self, old: str, relative: str) -> str | None:
        if self.placed(old, relative):
            return None  # already there (the usual case: checked without resolving each path)
        source = Path(old)
        target = safe_destination(self.dir, relative)
        if target == source or not source.is_file() or target.exists():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)  # a rename, or a copy when output.dir is on another disk
        return str(target)


async def download(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    policy: DownloadPolicy,
    resume_token: str | None = None,
) -> Saved:
    """Download ``url`` to ``dest`` through ``dest.part``.

    A partial file is resumed with Range only when it was started for the same
    ``resume_token`` (the generation id, kept beside it in ``dest.part.id``): a ``.part`` left
    by another generation at the same path is thrown away, never spliced in.

    Raises ``ExpiredURLError`` for 403/404/410, ``TransientError`` for what is worth retrying
    (connection errors, 5xx, short bodies), ``UnsafeURLError`` for refused URLs.
    """
    part = dest.with_name(dest.name + ".part")
    tag = dest.with_name(dest.name + ".part.id")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = 0
    if part.exists():
        owner = tag.read_text() if tag.exists() else None
        if resume_token is not None and owner == resume_token:
            offset = part.stat().st_size
        else:
            part.unlink()
    if resume_token is not None:
        tag.write_text(resume_token)
    discard = functools.partial(part.unlink, missing_ok=True)
    async with fetch(client, url, policy=policy, offset=offset, discard=discard) as body:
        # A body from byte 0 is hashed as it arrives; a resumed one is hashed whole at the end.
        digest = None if body.start else hashlib.sha256()
        with open(part, "r+b" if body.start else "wb") as fh:
            fh.seek(body.start)
            fh.truncate()
            await _store(body.chunks(), fh, digest)
            size = fh.tell()
    # The syncs (and a resumed file's hash) wait on the disk: one hand-off to a thread, so
    # the event loop goes on serving every other job meanwhile.
    sha256 = await anyio.to_thread.run_sync(_finish, part, dest, tag, digest)
    return Saved(location=str(dest), bytes=size, sha256=sha256)


async def _store(chunks: AsyncIterator[bytes], fh: BinaryIO, digest: Hash | None) -> None:
    """Write (and hash) a body as it arrives: a ``BLOCK`` at a time in a thread, hashed in a
    second thread at the same time, while the event loop receives the next one (so neither
    the disk nor the hash holds up the socket, nor the other jobs, nor each other: writing
    to the page cache and hashing cost comparable time). At most two blocks are held: memory
    stays flat. Each block's writeback to the disk starts once it is written (see
    :func:`writeback`), so the fsync at the end has little left to wait for. Every byte
    received is written before this returns or raises, so a body cut short leaves them all
    for a Range resume; the body's error (or the disk's) is raised after that."""
    send, receive = anyio.create_memory_object_stream[list[bytes]](1)
    disk: list[OSError] = []  # the disk's error: nothing more is written
    cut: list[Exception] = []  # the body's error, raised once what came is written

    def write(block: list[bytes]) -> None:
        start = fh.tell()
        for chunk in block:
            fh.write(chunk)
        fh.flush()
        writeback(fh.fileno(), start, fh.tell())

    def hash_(block: list[bytes]) -> None:
        assert digest is not None
        for chunk in block:
            digest.update(chunk)  # releases the GIL: beside the write and the event loop

    async def store(block: list[bytes]) -> None:
        async with anyio.create_task_group() as tg:
            if digest is not None:  # blocks are hashed one after another, in order
                tg.start_soon(anyio.to_thread.run_sync, hash_, block)
            try:
                await anyio.to_thread.run_sync(write, block)
            except OSError as err:
                disk.append(err)

    async def writer() -> None:
        async with receive:
            async for block in receive:
                if not disk:
                    await store(block)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        async with send:
            block: list[bytes] = []
            held = 0
            try:
                async for chunk in chunks:
                    block.append(chunk)
                    held += len(chunk)
                    if held >= BLOCK:
                        await send.send(block)
                        block, held = [], 0
                        if disk:
                            break
            except Exception as err:  # a cut body: what came is written all the same
                cut.append(err)
            await send.send(block)
    if disk or cut:
        raise (disk or cut)[0]


def writeback(fd: int, start: int, end: int) -> None:
    """Start the disk writing bytes ``start``..``end`` of ``fd`` (just written) now, once
    every byte ``WRITEBACK_LAG`` blocks before ``start`` is written to it (Linux's
    ``sync_file_range``; nothing elsewhere).

    Left to itself the kernel keeps a download's pages dirty (for up to 30 s, or until a
    tenth of memory is), so the fsync that makes a finished video durable wrote the whole
    file: a second or more per GiB after the last byte came. Started block by block, the
    disk writes while the body arrives; waiting on what lies ``WRITEBACK_LAG`` blocks back
    bounds what a download leaves dirty (and a download from a server faster than the disk
    goes at the disk's pace, as its fsync would make it anyway; waiting on fewer blocks back
    stalled the receiving more often, for no gain). A hint only: the fsync at the end makes
    the file durable and reports the disk's errors.
    """
    sync_file_range = _sync_file_range()
    if sync_file_range is None:
        return
    settled = start - WRITEBACK_LAG * BLOCK
    if settled > 0:
        sync_file_range(fd, 0, settled, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
    sync_file_range(fd, start, end - start, _WRITE)


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """``sync_file_range(fd, offset, nbytes, flags)`` from the C library, on Linux."""
    if platform.system() != "Linux":
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def _finish(part: Path, dest: Path, tag: Path, digest: Hash | None) -> str:
    """Make the complete ``.part`` file durable, rename it into place and make the rename
    durable; its sha256 (``digest``, or read back from the file when it was resumed)."""
    with open(part, "rb") as fh:
        if digest is None:
            digest = hashlib.sha256()
            while chunk := fh.read(CHUNK_SIZE):
                digest.update(chunk)
        os.fsync(fh.fileno())
    os.replace(part, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    tag.unlink(missing_ok=True)
    return digest.hexdigest()
