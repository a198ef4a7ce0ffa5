"""Host memory: keep what a step frees for the next step instead of returning it to the kernel.

glibc's malloc serves every block above 32 MiB (at most; less by default) with its own mmap and
unmaps it when freed. A CPU training step allocates and frees the same large blocks each time (the
dense gradient of the 30,522-row word matrix, 47 MiB for MiniLM and 94 MiB for BERT-base, the
gradient of the tied decoder, autocast's weight copies), so each step page-faults them in afresh.
On this project's 2-core KVM machines a fresh page is slow and slower still when the host is busy:
zero-filling a new 94 MiB block took 25 ms in a fresh process and 120-180 ms in one that held 8 GiB,
against 7 ms for a block already touched (docs/PERFORMANCE.md, "Fresh pages"). Serving large
blocks from malloc's heap and never trimming it makes the pages of step N those of step N+1.

The cost is that the process keeps its peak heap until it exits, as PyTorch's own CUDA caching
allocator does with device memory: a training or evaluation process, whose peak is reached in its
first steps, loses nothing by it.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h: free memory at the heap's top above this is returned
M_MMAP_MAX = -4  # the most blocks served by mmap at once; 0: none, every block from the heap
_KEEP_TRIM = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap top

# The user's own malloc settings win (glibc reads these at start-up).
_USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES",
                  "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Serve large blocks from malloc's heap and keep freed memory for reuse (glibc on Linux).

    Returns whether the setting was applied: not on other systems or C libraries, not where the
    environment sets malloc's own options or preloads another allocator (jemalloc, tcmalloc), and not
    when VILBERT_KEEP_FREED_MEMORY=0. Call it once, early in the process; it affects later
    allocations only."""
    if not sys.platform.startswith("linux") or os.environ.get("VILBERT_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, or no glibc under that name
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_TRIM_THRESHOLD, _KEEP_TRIM) == 1 and mallopt(M_MMAP_MAX, 0) == 1
