"""glibc's allocator for a training process (backend/training/cpu/memory.py)."""

from __future__ import annotations

import platform

from backend.training.cpu.memory import HUGEPAGE_TUNABLE, hugepage_malloc_env, keep_freed_memory


def test_keep_freed_memory_on_glibc():
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected


def test_hugepage_malloc_env_adds_the_tunable_once_and_keeps_others():
    assert hugepage_malloc_env({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": HUGEPAGE_TUNABLE}
    both = hugepage_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert both["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGEPAGE_TUNABLE}"
    assert hugepage_malloc_env(both) == both
    assert hugepage_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == \
        "glibc.malloc.hugetlb=0"  # a person's own choice stays
