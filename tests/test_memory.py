"""The allocators a sync sets (see jobsync.memory): Arrow on the system allocator, and glibc
mapping large blocks on their own, so that freeing them gives their memory back."""

from __future__ import annotations

import ctypes

import pyarrow as pa

from jobsync.memory import MMAP_THRESHOLD_BYTES, give_back_freed_memory

PAGE_BODY_BYTES = 600_000  # about a listing page of 1001 jobs


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in blocks mapped on their own
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mapped_bytes() -> int:
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    return mallinfo2().hblkhd


def test_arrow_allocates_from_the_system_allocator() -> None:
    give_back_freed_memory()
    assert pa.default_memory_pool().backend_name == "system"
    before = pa.system_memory_pool().bytes_allocated()
    rows = pa.array([b"x" * 100] * 1000, type=pa.binary())
    assert pa.system_memory_pool().bytes_allocated() - before >= rows.nbytes


def test_a_page_sized_block_is_mapped_on_its_own_even_after_a_larger_one_was_freed() -> None:
    """Left alone, glibc raises its threshold to the largest mapped block freed, and later
    blocks of that size stay in its heap once freed (a sync's memory then grows with the
    largest pile-up of pages it met)."""
    give_back_freed_memory()
    larger = bytearray(4 * PAGE_BODY_BYTES)
    del larger
    before = mapped_bytes()
    body = bytearray(PAGE_BODY_BYTES)
    assert mapped_bytes() - before >= PAGE_BODY_BYTES > MMAP_THRESHOLD_BYTES
    del body
    assert mapped_bytes() == before
