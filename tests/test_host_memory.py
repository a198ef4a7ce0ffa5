"""keep_freed_memory: large blocks come from malloc's heap (no mmap per block), so a training step
reuses the pages the previous one touched (vilbert/training/host_memory.py)."""

import ctypes
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys, torch
from vilbert.training.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
block = torch.empty(64 * 2**20, dtype=torch.uint8)  # 64 MiB: above glibc's largest mmap threshold
print(applied, libc.mallinfo2().hblkhd)  # bytes in blocks served by mmap
"""


def _probe(mode: str, **env) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0], int(out[1])


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_mallinfo2(), reason="glibc >= 2.33 only")
def test_large_blocks_come_from_the_heap():
    for name in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"):
        if name in os.environ:
            pytest.skip(f"{name} is set here")
    applied, mmapped = _probe("keep")
    assert applied == "True" and mmapped < 64 * 2**20
    _, mmapped = _probe("plain")
    assert mmapped >= 64 * 2**20  # without it glibc maps the block on its own
    applied, mmapped = _probe("keep", VILBERT_KEEP_FREED_MEMORY="0")
    assert applied == "False" and mmapped >= 64 * 2**20
    applied, _ = _probe("keep", MALLOC_ARENA_MAX="2", MALLOC_MMAP_MAX_="65536")  # the user's own setting wins
    assert applied == "False"
