"""Process-level settings that make CPU training faster.

glibc's malloc serves blocks above a threshold (128 KiB at first) with mmap and hands them back to the
system when freed; a training step frees and reallocates the same activation and gradient buffers
(a batch of 128 x 784 floats is 400 KiB), so each step page-faults fresh zeroed memory in again.
Serving blocks up to 32 MiB from the heap and keeping up to 512 MiB of freed memory makes those
buffers reused instead: about a quarter off a CPU step of the 784-512-16 VAE (docs/benchmarks.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 512 * 2**20


@functools.cache
def tune_malloc() -> bool:
    """Keep freed buffers for reuse (glibc only); True if applied, False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
