"""Allocators that give a sync's freed memory back to the system.

A sync's memory comes in waves: while a commit or one of DuckDB's checkpoints holds the
writer up, fetched pages wait for it (see BatchWriter.fetching). mimalloc (Arrow's default
pool) and glibc's malloc keep what a wave freed for the next one, so the process held on to
its largest wave, and a longer sync meets larger ones: the bench's peak RSS grew 13 to 20%
from 300k to 900k jobs. Arrow on the system allocator, with glibc mapping large blocks on
their own and trimming its heap, hands each wave back once it has passed.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

import pyarrow as pa

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# glibc's default, held fixed: left alone it rises to the largest block freed (a page's
# 0.6 MB body, its `raw` column), and such blocks then stay in the heap once freed
MMAP_THRESHOLD_BYTES = 128 * 1024
# free memory at the top of glibc's heap beyond this goes back (the default is 128 kB, but
# it too rises with the mmap threshold when that is left to move)
TRIM_THRESHOLD_BYTES = 1024 * 1024


def give_back_freed_memory() -> None:
    """Set the process's allocators for a sync; idempotent, and harmless where glibc is
    missing (elsewhere only Arrow's pool changes)."""
    pa.set_memory_pool(pa.system_memory_pool())
    mallopt = _glibc_mallopt()
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
