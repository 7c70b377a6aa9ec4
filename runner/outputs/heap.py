"""A video's megabyte buffers, made cheaper: glibc's heap keeps them (:func:`keep_heap`) and
h11 copies each received piece less (:func:`fewer_copies`).

A body read a megabyte at a time passes through buffers of that size (the socket read, h11's
buffer and its slices, httpcore's copy). glibc serves those from fresh ``mmap``s, or from the
top of a heap it trims back after each free, so every one of them was page-faulted in again:
a quarter of the receiving thread's CPU on a 1 GiB video. Raising glibc's two thresholds once
lets them come from a heap that keeps its pages (at most ``TRIM_THRESHOLD`` bytes stay free).

h11 copied each piece of a body four times on its way to httpcore (appended to its buffer,
sliced out twice, then ``bytes()`` of the slice): ~0.35 s of CPU a GiB, on the event loop.
:class:`PieceBuffer` hands a piece that is a whole body read over as it came.
"""

from __future__ import annotations

import ctypes
import functools
import platform

import h11._connection
from h11._receivebuffer import ReceiveBuffer

from runner.outputs.pools import READ_SIZE

MMAP_THRESHOLD = 4 * READ_SIZE  # buffers up to this come from the heap, not their own mmap
TRIM_THRESHOLD = 32 * READ_SIZE  # free bytes the heap's top keeps before giving them back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


@functools.cache
def keep_heap() -> bool:
    """Set the thresholds, once per process (the first download connection does), and
    nothing on another C library. Whether they were set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


class PieceBuffer(ReceiveBuffer):
    """h11's receive buffer, holding a piece received into an empty buffer as it came.

    Reading a body takes that piece out whole when it fits what the body still owes (the
    usual case: a read ends within the body), with no copy; and httpcore's ``bytes()`` of a
    ``bytes`` is the object itself. Anything else (a header, a chunk line, a piece bigger
    than what is owed) goes through h11's own code: reading ``_data`` first moves the piece
    into h11's ``bytearray``.
    """

    _piece: bytes | None = None

    @property
    def _data(self) -> bytearray:
        piece = self._piece
        if piece is not None:
            self._piece = None
            self._bytes += piece
        return self._bytes

    @_data.setter
    def _data(self, value: bytearray) -> None:
        self._bytes = value

    def __iadd__(self, byteslike: bytes | bytearray) -> PieceBuffer:
        if self._piece is None and not self._bytes and type(byteslike) is bytes:
            self._piece = byteslike
        else:
            self._data += byteslike
        return self

    def maybe_extract_at_most(self, count: int) -> bytearray | None:
        piece = self._piece
        if piece is not None and len(piece) <= count:  # the buffer holds this piece only
            self._piece = None
            self._next_line_search = self._multiple_lines_search = 0
            return piece  # type: ignore[return-value]  # bytes: what httpcore makes of it
        return super().maybe_extract_at_most(count)


@functools.cache
def fewer_copies() -> bool:
    """h11 connections made from now on use :class:`PieceBuffer`, once per process (the
    first download connection does it). Whether they do: not when this h11 builds its
    connections' buffers some other way."""
    if h11._connection.ReceiveBuffer is not ReceiveBuffer:  # type: ignore[attr-defined]
        return False
    if not all(hasattr(ReceiveBuffer, name) for name in ("_extract", "maybe_extract_at_most")):
        return False
    h11._connection.ReceiveBuffer = PieceBuffer  # type: ignore[attr-defined]
    return True
