"""glibc's allocator for a process that trains on CPU: keep freed memory, ask for huge pages.

torch's CPU tensors come from ``malloc``. glibc serves large ones with fresh ``mmap``
pages and trims the heap on ``free``, so every new activation of a training step is
first-touch page faults plus the kernel zeroing it, 4 KiB at a time. These two
settings make freed blocks reused and fresh ones fault in 2 MiB at a time. Nothing
here imports torch: the job runner (in the app process) sets the environment of the
worker it starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# glibc tunable: malloc asks for transparent huge pages (madvise) on the memory it gets
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process instead of returning it.

    glibc serves allocations from 128 KiB to 32 MiB (adaptively) with fresh ``mmap``
    pages; with mmap off and no trimming, freed blocks are reused instead. Call it in a
    process that trains (the job runner's worker, the benchmark); memory held stays
    what the peak step needed. False where this is not glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return (bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
                and bool(libc.mallopt(M_TOP_PAD, 64 << 20)))
    except (OSError, AttributeError):
        return False


def hugepage_malloc_env(env: dict) -> dict:
    """``env`` for a process that trains on CPU: glibc's malloc asks for transparent
    huge pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc >= 2.35; older ones
    ignore it), so fresh activations fault in 2 MiB at a time instead of 4 KiB. Read
    once at process start, so it is set for the job runner's worker (and the benchmark
    re-runs itself with it). An existing tunable setting is kept and extended."""
    current = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in current:
        return dict(env)
    return {**env, "GLIBC_TUNABLES": f"{current}:{HUGEPAGE_TUNABLE}" if current else HUGEPAGE_TUNABLE}
