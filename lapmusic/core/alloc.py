"""The C allocator's settings for training and evaluation processes (glibc ``mallopt``).

Why: glibc serves blocks above its mmap threshold (128 KiB, raised dynamically up to 32 MiB) with fresh
``mmap`` pages and gives them back on ``free``, and trims the heap's top above 128 KiB. A training or evaluation
loop allocates and frees the same few MiB-sized tensors thousands of times, so each one page-faults in again:
the sampling recipe's one-epoch Nottingham run spent 15-20 % of its CPU time in the kernel. Keeping freed
blocks of up to 32 MiB in the heap (and not trimming it below 1 GiB of free top) brings that to about 2 % at the
same peak memory (docs/research/throughput.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set the allocator to keep freed blocks for reuse (module docstring); once per process, later calls do
    nothing.

    Returns
    -------
    bool
        True when glibc accepted the settings; False elsewhere (macOS, musl, Windows), where nothing changes.
    """
    global _done
    if _done is None:
        _done = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc: its allocator keeps its own policy
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                     and mallopt(_M_TOP_PAD, TOP_PAD))
    return _done
