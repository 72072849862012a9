"""The allocator a sync sets for Arrow (see jobsync.memory)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from jobsync.memory import give_back_freed_memory


def test_arrow_arrays_and_kernels_allocate_from_the_system_allocator() -> None:
    give_back_freed_memory()
    assert pa.default_memory_pool().backend_name == "system"
    before = pa.system_memory_pool().bytes_allocated()
    texts = pa.array(["2026-12-04T21:00:00.000Z"] * 1000)
    moments = pc.strptime(texts, format="%Y-%m-%dT%H:%M:%S", unit="ms", error_is_null=True)
    assert pa.system_memory_pool().bytes_allocated() - before >= texts.nbytes + moments.nbytes
