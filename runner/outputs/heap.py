"""glibc's heap told to keep download-sized buffers (:func:`keep_heap`).

A body read a megabyte at a time passes through buffers of that size (the socket read, h11's
buffer and its slices, httpcore's copy). glibc serves those from fresh ``mmap``s, or from the
top of a heap it trims back after each free, so every one of them was page-faulted in again:
a quarter of the receiving thread's CPU on a 1 GiB video. Raising glibc's two thresholds once
lets them come from a heap that keeps its pages (at most ``TRIM_THRESHOLD`` bytes stay free).
"""

from __future__ import annotations

import ctypes
import functools
import platform

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
