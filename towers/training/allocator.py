"""Keep the memory a training step frees for the next step (glibc's malloc): no page faults on every step's tensors.

glibc serves an allocation above its mmap threshold (dynamic, at most 32 MiB by default) with a fresh ``mmap`` and
gives it back with ``munmap`` when freed, and it returns freed memory at the top of the heap to the system once more
than the trim threshold is free. A CPU training step allocates and frees the same large tensors every step (the
[B, N] scores of thousands of negatives are 21 MB at B = 1024, N = 5120), so each step touched fresh pages and paid
a page fault per 4 KiB: measured here, a copy into a fresh [1024, 5120] tensor took 13-19 ms inside the step against
0.8 ms into reused memory, and 1024 x 64 by 64 x 10240 scores plus one addition 22 ms against 11 ms.

``retain_freed_memory`` raises both thresholds (``mallopt``), so the step's tensors come from and go back to the
heap and are reused: the process keeps up to ``limit`` bytes of freed memory resident instead of returning it (the
trainer calls it when it trains on the CPU; ``training.retain_freed_memory: false`` leaves malloc as it is). It is a
no-op off glibc (macOS, musl) and returns whether it applied.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_applied: int | None = None


def retain_freed_memory(limit: int = 1 << 30) -> bool:
    """Serve allocations below ``limit`` bytes from the heap and keep up to ``limit`` of freed memory (glibc)."""
    global _applied
    if _applied is not None and _applied >= limit:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl has mallopt but ignores these parameters)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for threshold in (min(int(limit), 2**31 - 1), 32 << 20):  # a glibc may refuse an mmap threshold above 32 MiB
        if mallopt(_M_MMAP_THRESHOLD, threshold) == 1 and mallopt(_M_TRIM_THRESHOLD, min(int(limit), 2**31 - 1)) == 1:
            _applied = threshold
            return True
    return False


__all__ = ["retain_freed_memory"]
